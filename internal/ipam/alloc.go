// Package ipam hands out the secondary IP addresses of a VM's NIC to
// container interfaces. The pool is read from a source (the Azure
// wireserver, IMDS, a MAS-format file or a static list), cached in the node's
// state store with the time it was read, and re-read only when stale or when
// it has no free address left.
//
// Allocation is keyed by (container ID, interface name): a repeated ADD gets
// the same address, and DEL by container ID releases whatever it held.
package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vnetcni/vnetcni/internal/store"
)

// ExhaustedError reports that a pool has no free address.
type ExhaustedError struct {
	Pool   string
	Subnet netip.Prefix
	Total  int // secondary addresses on the NIC
	InUse  int // of those, allocated
	Held   int // of the others, still given to pods the state does not record
	// NodeHeld: of the others, held by the node itself on a link other than
	// the NIC (or its bridge), and so never given to a pod.
	NodeHeld int
}

func (e *ExhaustedError) Error() string {
	s := fmt.Sprintf("no free address on NIC %s (subnet %s): the NIC has %d secondary addresses, %d in use", e.Pool, e.Subnet, e.Total, e.InUse)
	if e.Held > 0 {
		s += fmt.Sprintf(" and %d held by pods the state does not record", e.Held)
	}
	if e.NodeHeld > 0 {
		s += fmt.Sprintf("; %d more are addresses of the node itself (ip addr show), never given to pods", e.NodeHeld)
	}
	return s
}

// Owner identifies who asks for an address.
type Owner struct {
	ContainerID string
	IfName      string
	Network     string
	Plugin      string
}

// Gateway is the subnet's gateway: its first host address, as on Azure.
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// Free returns the pool's addresses not allocated to anyone, in address order.
func Free(st *store.State, p *store.Pool) []netip.Addr {
	var out []netip.Addr
	for _, a := range p.Addresses {
		if _, used := st.Allocations[a.String()]; used {
			continue
		}
		if a == p.PrimaryIP || a == p.Gateway {
			continue
		}
		out = append(out, a)
	}
	// Sources list addresses in their own order.
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// InUse counts the pool's addresses that are allocated.
func InUse(st *store.State, p *store.Pool) int {
	n := 0
	for _, a := range p.Addresses {
		if _, used := st.Allocations[a.String()]; used {
			n++
		}
	}
	return n
}

// Allocate gives owner an address from pool p, or the one it already holds.
// Among free addresses the one released longest ago (or never used) is
// chosen, so a just-freed address is not reused while peers may still have it
// in their ARP and conntrack tables.
func Allocate(st *store.State, p *store.Pool, o Owner, now time.Time) (netip.Addr, error) {
	return allocate(st, p, o, now, nil, nil)
}

// allocate is Allocate that never chooses an address in avoid or nodeHeld.
func allocate(st *store.State, p *store.Pool, o Owner, now time.Time, avoid, nodeHeld map[netip.Addr]bool) (netip.Addr, error) {
	if a, ok := st.AllocationFor(o.ContainerID, o.IfName); ok {
		return a.IP, nil
	}
	free := Free(st, p)
	held, byNode := 0, 0
	if len(avoid) > 0 || len(nodeHeld) > 0 {
		free = slices.DeleteFunc(free, func(a netip.Addr) bool {
			switch {
			case avoid[a]:
				held++
			case nodeHeld[a]:
				byNode++
			default:
				return false
			}
			return true
		})
	}
	if len(free) == 0 {
		return netip.Addr{}, &ExhaustedError{Pool: p.ID, Subnet: p.Subnet, Total: len(p.Addresses), InUse: InUse(st, p), Held: held, NodeHeld: byNode}
	}
	best := free[0]
	for _, a := range free[1:] {
		if p.Released[a].Before(p.Released[best]) {
			best = a
		}
	}
	st.Allocations[best.String()] = &store.Allocation{
		IP: best, Pool: p.ID, ContainerID: o.ContainerID, IfName: o.IfName,
		Network: o.Network, Owner: o.Plugin, Time: now.UTC(),
	}
	delete(p.Released, best)
	return best, nil
}

// Release frees what a container holds: the address of one interface, or of
// all its interfaces when ifName is empty. It returns the freed addresses.
func Release(st *store.State, containerID, ifName string, now time.Time) []netip.Addr {
	var out []netip.Addr
	for k, a := range st.Allocations {
		if a.ContainerID != containerID || (ifName != "" && a.IfName != ifName) {
			continue
		}
		delete(st.Allocations, k)
		if p, ok := st.Pools[a.Pool]; ok {
			if p.Released == nil {
				p.Released = map[netip.Addr]time.Time{}
			}
			p.Released[a.IP] = now.UTC()
		}
		out = append(out, a.IP)
	}
	return out
}

// Merge installs a freshly read pool. Addresses that disappeared from the NIC
// are dropped from the pool — allocations still holding one keep it until
// released, but it is never handed out again; release history is kept for
// addresses still present.
func Merge(st *store.State, fresh *store.Pool) *store.Pool {
	old := st.Pools[fresh.ID]
	p := *fresh
	p.Released = map[netip.Addr]time.Time{}
	if old != nil {
		for a, t := range old.Released {
			if p.Has(a) {
				p.Released[a] = t
			}
		}
	}
	st.Pools[p.ID] = &p
	return &p
}

// Stale reports whether a cached pool should be re-read before use.
func Stale(p *store.Pool, maxAge time.Duration, now time.Time) bool {
	return p == nil || now.Sub(p.ReadAt) > maxAge || now.Before(p.ReadAt)
}
