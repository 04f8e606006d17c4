// Command vnetctl is vnetcni's operator tool.
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/internal/cli"
)

func main() { os.Exit(cli.Run(os.Args)) }
