package install

import (
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/vnetcni/vnetcni/internal/datapath"
)

// The node's network managers must leave the plugins' links alone: the
// bridge (azure*, which holds the NIC's addresses in bridge mode) and the
// pods' host veths (azv*). systemd-networkd would otherwise start DHCP or
// link-local addressing on them, flush addresses it did not configure, or
// (through udev's MACAddressPolicy=persistent) change a new bridge's MAC
// away from the NIC's; NetworkManager would create a connection for each
// and take them over. Each drop-in is written where its manager's
// configuration directory exists, and removed by Uninstall.
const (
	DefaultNetworkdDir       = "/etc/systemd/network"
	DefaultNetworkManagerDir = "/etc/NetworkManager/conf.d"
	// Sorted before the images' own files (netplan's 10-netplan-*,
	// cloud-init's 10-cloud-init-*): networkd applies the first file that
	// matches a link.
	NetworkdFileName       = "05-azure-vnet-unmanaged.network"
	NetworkdLinkFileName   = "05-azure-vnet.link"
	NetworkManagerFileName = "90-azure-vnet-unmanaged.conf"
)

// linkGlobs are the plugins' link names as the managers' globs.
var linkGlobs = []string{"azure*", datapath.HostIfPrefix + "*"}

var (
	networkdUnmanaged = `# azure-vnet: the CNI bridge and the pods' host veths belong to the plugin.
[Match]
Name=` + linkGlobs[0] + ` ` + linkGlobs[1] + `

[Link]
Unmanaged=yes
`
	networkdLink = `# azure-vnet: keep the MAC the plugin gives its links (in bridge mode the
# bridge takes the NIC's, which the fabric requires).
[Match]
OriginalName=` + linkGlobs[0] + ` ` + linkGlobs[1] + `

[Link]
MACAddressPolicy=none
`
	networkManagerUnmanaged = `# azure-vnet: the CNI bridge and the pods' host veths belong to the plugin.
[keyfile]
unmanaged-devices+=interface-name:` + linkGlobs[0] + `;interface-name:` + linkGlobs[1] + `
`
)

// managerFiles lists the drop-ins and their contents by directory.
func (o Options) managerFiles() map[string]string {
	m := map[string]string{}
	if o.NetworkdDir != "" {
		m[filepath.Join(o.NetworkdDir, NetworkdFileName)] = networkdUnmanaged
		m[filepath.Join(o.NetworkdDir, NetworkdLinkFileName)] = networkdLink
	}
	if o.NetworkManagerDir != "" {
		m[filepath.Join(o.NetworkManagerDir, NetworkManagerFileName)] = networkManagerUnmanaged
	}
	return m
}

// installManagerFiles writes the drop-ins into the managers' directories
// that exist (the manager is installed).
func installManagerFiles(o Options) ([]Action, error) {
	var acts []Action
	files := o.managerFiles()
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		if st, err := os.Stat(filepath.Dir(dst)); err != nil || !st.IsDir() {
			continue
		}
		out, err := place(dst, []byte(files[dst]), 0o644, true)
		if err != nil {
			return acts, err
		}
		acts = append(acts, Action{dst, out})
	}
	return acts, nil
}
