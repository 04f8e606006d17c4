// Command azure-vnet-ipam is the CNI IPAM plugin that hands out the VM NIC's
// secondary IP addresses, as read from the Azure wireserver or IMDS.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

const name = netconf.IPAMType

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println(cniplugin.About(name))
		return
	}
	skel.PluginMainFuncs(cniplugin.New(name).IPAMFuncs(), cniplugin.Versions, cniplugin.About(name))
}
