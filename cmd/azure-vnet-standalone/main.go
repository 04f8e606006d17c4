// Command azure-vnet-standalone is the full azure-vnet CNI plugin: it
// attaches containers to an Azure virtual network with addresses from the
// VM NIC's secondary IP configurations, through vnetd when it runs or on
// its own. The thin azure-vnet execs it for every call vnetd does not
// serve; it may also be called directly.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// name stays azure-vnet: the plugin's logs, state records and the agent
// know it by its CNI type.
const name = netconf.PluginType

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println(cniplugin.About(name))
		return
	}
	skel.PluginMainFuncs(cniplugin.New(name).Funcs(), cniplugin.Versions, cniplugin.About(name))
}
