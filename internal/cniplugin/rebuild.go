package cniplugin

import (
	"errors"
	"fmt"
	"os"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"

	"github.com/vnetcni/vnetcni/internal/store"
)

// rebuild reconstructs the state from the kernel when the state file is
// missing or damaged: every host veth carries its attachment (container,
// interface, network, address, pod MAC) in its alias. Pools are re-read from
// their source on next use; network records are re-created by the next ADD,
// which re-programs the rules with the rebuilt endpoints.
func (n *node) rebuild(cause error) (*store.State, error) {
	atts, err := n.host.Attachments()
	if err != nil {
		return nil, fmt.Errorf("list attachments in the kernel: %w", err)
	}
	st := store.NewState()
	now := n.p.Now().UTC()
	for _, a := range atts {
		ip := a.IP.Addr()
		if prev, dup := st.Allocations[ip.String()]; dup {
			// Two veths claim one address: keep the first, leave the other
			// to GC; never record the address twice.
			n.p.Log.Warn("rebuild: address claimed twice", "ip", ip, "kept", prev.ContainerID, "dropped", a.ContainerID)
			continue
		}
		st.Allocations[ip.String()] = &store.Allocation{IP: ip, ContainerID: a.ContainerID, IfName: a.IfName,
			Network: a.Network, Owner: "azure-vnet", Time: now}
		gw := ipam.Gateway(a.IP.Masked())
		if a.Mode == datapath.ModeTransparent {
			gw = datapath.TransparentGateway
		}
		st.Endpoints[store.EndpointKey(a.ContainerID, a.IfName)] = &store.Endpoint{
			ContainerID: a.ContainerID, IfName: a.IfName, Network: a.Network, Mode: a.Mode,
			HostIfName: a.HostIfName, PodMAC: a.PodMAC.String(), IP: a.IP, Gateway: gw, Created: now,
		}
	}
	if len(st.Endpoints) > 0 || !errors.Is(cause, os.ErrNotExist) {
		n.p.Log.Warn("rebuilt state from the kernel", "cause", cause, "endpoints", len(st.Endpoints))
	}
	return st, nil
}
