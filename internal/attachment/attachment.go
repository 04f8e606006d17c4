// Package attachment says what one pod interface's attachment is and what
// it owns, in the state and in the kernel, so that the plugin (ADD, DEL,
// GC, the state rebuild) and the doctor read it the same way and can never
// disagree.
//
// An attachment owns: its state record (store.Endpoint under
// store.EndpointKey) and address (store.Allocation), its lock file
// (store.AttachmentLockName), and in the kernel what datapath.Owns lists:
// the host veth (named by datapath.HostIfName, described by its alias), the
// nftables elements, and in transparent mode the host's /32 route.
package attachment

import (
	"time"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Owner is the plugin that records attachments.
const Owner = netconf.PluginType

// Record is the state record of an attachment read back from the kernel
// (its host veth's alias): the endpoint and its address.
func Record(a datapath.Attachment, now time.Time) (*store.Endpoint, *store.Allocation) {
	gw := ipam.Gateway(a.IP.Masked())
	if a.Mode == datapath.ModeTransparent {
		gw = datapath.TransparentGateway
	}
	e := &store.Endpoint{ContainerID: a.ContainerID, IfName: a.IfName, Network: a.Network, Mode: a.Mode,
		HostIfName: a.HostIfName, PodMAC: a.PodMAC.String(), IP: a.IP, Gateway: gw, Created: now}
	al := &store.Allocation{IP: a.IP.Addr(), ContainerID: a.ContainerID, IfName: a.IfName, Network: a.Network,
		Owner: Owner, Time: now}
	return e, al
}

// Rebuild is the state the kernel's attachments describe, for a state file
// that is missing or damaged. Pools are re-read from their source on next
// use; network records are re-created by the next ADD. When two veths
// claim one address the first is kept and the others are returned in
// dropped (GC removes them): an address is never recorded twice.
func Rebuild(atts []datapath.Attachment, now time.Time) (st *store.State, dropped []datapath.Attachment) {
	st = store.NewState()
	now = now.UTC()
	for _, a := range atts {
		ip := a.IP.Addr()
		if _, dup := st.Allocations[ip.String()]; dup {
			dropped = append(dropped, a)
			continue
		}
		e, al := Record(a, now)
		st.Allocations[ip.String()] = al
		st.Endpoints[e.Key()] = e
	}
	return st, dropped
}

// Salvage adds to a state rebuilt from the kernel what a damaged file that
// still decodes says and the kernel cannot: the networks' records (the
// NIC's configuration saved before the bridge took it, the rules), the
// cached pools, and the addresses the IPAM plugin gave to other plugins'
// pods, which have no host veth to rebuild them from. What conflicts with
// the rebuilt state is left out. It returns how many allocations it kept.
func Salvage(st, old *store.State) (kept int) {
	if old == nil {
		return 0
	}
	for name, n := range old.Networks {
		if n != nil && n.Name == name && st.Networks[name] == nil {
			st.Networks[name] = n
		}
	}
	for id, p := range old.Pools {
		if p != nil && p.ID == id && st.Pools[id] == nil {
			st.Pools[id] = p
		}
	}
	holders := map[string]bool{}
	for _, a := range st.Allocations {
		holders[store.EndpointKey(a.ContainerID, a.IfName)] = true
	}
	for k, a := range old.Allocations {
		if a == nil || a.Owner != netconf.IPAMType || !a.IP.IsValid() || a.IP.String() != k || a.ContainerID == "" {
			continue
		}
		if _, taken := st.Allocations[k]; taken {
			continue
		}
		if a.Pool != "" && st.Pools[a.Pool] == nil {
			continue
		}
		key := store.EndpointKey(a.ContainerID, a.IfName)
		if holders[key] {
			continue
		}
		holders[key] = true
		st.Allocations[k] = a
		kept++
	}
	return kept
}
