// Command vnetctl-policy is "vnetctl policy": network policy explained.
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/internal/policycli"
)

func main() { os.Exit(policycli.Run(os.Args)) }
