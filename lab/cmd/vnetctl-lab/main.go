// Command vnetctl-lab is the lab: an emulated Azure VNet with the real
// plugins on this machine. Operators run it as "vnetctl lab …".
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/lab/labcli"
)

func main() { os.Exit(labcli.Run(os.Args)) }
