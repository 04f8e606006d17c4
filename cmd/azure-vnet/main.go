// Command azure-vnet is the CNI plugin that attaches containers to an Azure
// virtual network with addresses from the VM NIC's secondary IP configurations.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

const name = netconf.PluginType

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println(cniplugin.About(name))
		return
	}
	skel.PluginMainFuncs(cniplugin.New(name).Funcs(), cniplugin.Versions, cniplugin.About(name))
}
