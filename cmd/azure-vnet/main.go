// Command azure-vnet is the CNI plugin that attaches containers to an Azure
// virtual network with addresses from the VM NIC's secondary IP
// configurations. This binary is the thin client: it hands ADD and DEL to
// vnetd and execs azure-vnet-standalone (installed beside it) for
// everything else, and for every call when no agent runs.
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/internal/thinplugin"
)

func main() { os.Exit(thinplugin.Main("azure-vnet")) }
