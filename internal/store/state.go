package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Version is the state file format this binary writes.
const Version = 1

// State is everything the node knows about its CNI attachments.
type State struct {
	Version     int                    `json:"version"`
	Networks    map[string]*Network    `json:"networks"`
	Pools       map[string]*Pool       `json:"pools"`
	Allocations map[string]*Allocation `json:"allocations"` // by IP
	Endpoints   map[string]*Endpoint   `json:"endpoints"`   // by EndpointKey
}

// NewState returns an empty state.
func NewState() *State {
	st := &State{Version: Version}
	st.init()
	return st
}

func (st *State) init() {
	if st.Networks == nil {
		st.Networks = map[string]*Network{}
	}
	if st.Pools == nil {
		st.Pools = map[string]*Pool{}
	}
	if st.Allocations == nil {
		st.Allocations = map[string]*Allocation{}
	}
	if st.Endpoints == nil {
		st.Endpoints = map[string]*Endpoint{}
	}
}

// Network is a CNI network (one conflist name) set up on the node.
type Network struct {
	Name   string `json:"name"`
	Mode   string `json:"mode"`
	Master string `json:"master"`           // the NIC's interface, e.g. eth0
	Bridge string `json:"bridge,omitempty"` // bridge mode only
	Pool   string `json:"pool"`             // Pool ID
	Rules  string `json:"rules,omitempty"`  // fingerprint of the programmed static rules
	// RulesSpec is the static rules' configuration as the datapath encodes
	// it, so the doctor can check and rebuild them without the conflist.
	RulesSpec json.RawMessage `json:"rulesSpec,omitempty"`
	// MasterConfig is the master's configuration before bridge mode moved it
	// to the bridge, kept so an interrupted move can be finished or undone.
	MasterConfig *LinkConfig `json:"masterConfig,omitempty"`
	// TakenOff are pool addresses the image had put on the NIC (cloud-init
	// puts the NIC's secondary IPs on eth0) and ADD took off for pods;
	// vnetctl uninstall gives them back.
	TakenOff []netip.Prefix `json:"takenOff,omitempty"`
}

// LinkConfig is a snapshot of an interface's IPv4 addresses and routes.
type LinkConfig struct {
	Addrs  []netip.Prefix `json:"addrs"`
	Routes []Route        `json:"routes"`
}

// Route is one IPv4 route through an interface.
type Route struct {
	Dst      netip.Prefix `json:"dst"`
	Gw       netip.Addr   `json:"gw,omitzero"`
	Src      netip.Addr   `json:"src,omitzero"`
	Metric   int          `json:"metric,omitempty"`
	Table    int          `json:"table,omitempty"`
	Scope    uint8        `json:"scope,omitempty"`
	Protocol int          `json:"protocol,omitempty"`
	Onlink   bool         `json:"onlink,omitempty"`
}

// Pool is the address pool of one NIC: its secondary IP configurations, as
// last read from the pool source.
type Pool struct {
	ID        string       `json:"id"`     // the NIC's MAC, Azure-formatted
	Source    string       `json:"source"` // where it was read from
	ReadAt    time.Time    `json:"readAt"`
	Subnet    netip.Prefix `json:"subnet"`
	Gateway   netip.Addr   `json:"gateway"`
	PrimaryIP netip.Addr   `json:"primaryIP,omitzero"`
	Addresses []netip.Addr `json:"addresses"`
	// Released records when each address was last given back, so the
	// least recently used free address is handed out first.
	Released map[netip.Addr]time.Time `json:"released,omitempty"`
}

// Has reports whether the NIC currently carries ip.
func (p *Pool) Has(ip netip.Addr) bool {
	for _, a := range p.Addresses {
		if a == ip {
			return true
		}
	}
	return false
}

// Allocation is an address handed out to one container interface.
type Allocation struct {
	IP          netip.Addr `json:"ip"`
	Pool        string     `json:"pool"`
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Network     string     `json:"network,omitempty"`
	Owner       string     `json:"owner"` // the plugin that asked: azure-vnet or azure-vnet-ipam
	Time        time.Time  `json:"time"`
}

// Endpoint is one container interface attached by azure-vnet.
type Endpoint struct {
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	Network      string       `json:"network"`
	Mode         string       `json:"mode"`
	Netns        string       `json:"netns,omitempty"`
	HostIfName   string       `json:"hostIfName"`
	HostMAC      string       `json:"hostMAC,omitempty"`
	PodMAC       string       `json:"podMAC"`
	IP           netip.Prefix `json:"ip"`
	Gateway      netip.Addr   `json:"gateway"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	Created      time.Time    `json:"created"`
}

// EndpointKey is the key of an endpoint: one container interface.
func EndpointKey(containerID, ifName string) string { return containerID + "/" + ifName }

// Key returns the endpoint's key.
func (e *Endpoint) Key() string { return EndpointKey(e.ContainerID, e.IfName) }

// Validate finds contradictions a trustworthy state cannot contain.
func (st *State) Validate() error {
	var errs []error
	owners := map[string]string{} // containerID/ifName -> IP
	for k, a := range st.Allocations {
		if a == nil {
			errs = append(errs, fmt.Errorf("allocation %s is null", k))
			continue
		}
		if !a.IP.IsValid() || a.IP.String() != k {
			errs = append(errs, fmt.Errorf("allocation %s holds address %s", k, a.IP))
		}
		if a.ContainerID == "" {
			errs = append(errs, fmt.Errorf("allocation %s has no container", k))
		}
		if a.Pool != "" {
			if _, ok := st.Pools[a.Pool]; !ok {
				errs = append(errs, fmt.Errorf("allocation %s refers to unknown pool %s", k, a.Pool))
			}
		}
		ok := EndpointKey(a.ContainerID, a.IfName)
		if prev, dup := owners[ok]; dup {
			errs = append(errs, fmt.Errorf("container interface %s holds both %s and %s", ok, prev, k))
		}
		owners[ok] = k
	}
	for k, e := range st.Endpoints {
		if e == nil {
			errs = append(errs, fmt.Errorf("endpoint %s is null", k))
			continue
		}
		if e.Key() != k {
			errs = append(errs, fmt.Errorf("endpoint %s is stored under key %s", e.Key(), k))
		}
		a, ok := st.Allocations[e.IP.Addr().String()]
		if !ok {
			errs = append(errs, fmt.Errorf("endpoint %s uses %s, which is not allocated", k, e.IP.Addr()))
		} else if a != nil && (a.ContainerID != e.ContainerID || a.IfName != e.IfName) { // a null allocation is reported above
			errs = append(errs, fmt.Errorf("endpoint %s uses %s, which is allocated to %s", k, e.IP.Addr(), EndpointKey(a.ContainerID, a.IfName)))
		}
	}
	for k, p := range st.Pools {
		if p == nil || p.ID != k {
			errs = append(errs, fmt.Errorf("pool %s is malformed", k))
		}
	}
	for k, n := range st.Networks {
		if n == nil || n.Name != k {
			errs = append(errs, fmt.Errorf("network %s is malformed", k))
		}
	}
	return errors.Join(errs...)
}

// AllocationFor returns the allocation held by a container interface.
func (st *State) AllocationFor(containerID, ifName string) (*Allocation, bool) {
	for _, a := range st.Allocations {
		if a.ContainerID == containerID && a.IfName == ifName {
			return a, true
		}
	}
	return nil, false
}

// SortedAllocations returns the allocations ordered by address.
func (st *State) SortedAllocations() []*Allocation {
	out := make([]*Allocation, 0, len(st.Allocations))
	for _, a := range st.Allocations {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// SortedEndpoints returns the endpoints ordered by key.
func (st *State) SortedEndpoints() []*Endpoint {
	out := make([]*Endpoint, 0, len(st.Endpoints))
	for _, e := range st.Endpoints {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Clone returns a deep copy of the state: a committer applies each update
// to its own copy, so that a failing one leaves nothing behind.
func (st *State) Clone() *State {
	c := &State{Version: st.Version,
		Networks:    make(map[string]*Network, len(st.Networks)),
		Pools:       make(map[string]*Pool, len(st.Pools)),
		Allocations: make(map[string]*Allocation, len(st.Allocations)),
		Endpoints:   make(map[string]*Endpoint, len(st.Endpoints)),
	}
	for k, n := range st.Networks {
		if n == nil {
			c.Networks[k] = nil
			continue
		}
		x := *n
		x.RulesSpec = slices.Clone(n.RulesSpec)
		x.TakenOff = slices.Clone(n.TakenOff)
		if n.MasterConfig != nil {
			mc := LinkConfig{Addrs: slices.Clone(n.MasterConfig.Addrs), Routes: slices.Clone(n.MasterConfig.Routes)}
			x.MasterConfig = &mc
		}
		c.Networks[k] = &x
	}
	for k, p := range st.Pools {
		if p == nil {
			c.Pools[k] = nil
			continue
		}
		x := *p
		x.Addresses = slices.Clone(p.Addresses)
		x.Released = maps.Clone(p.Released)
		c.Pools[k] = &x
	}
	for k, a := range st.Allocations {
		if a == nil {
			c.Allocations[k] = nil
			continue
		}
		x := *a
		c.Allocations[k] = &x
	}
	for k, e := range st.Endpoints {
		if e == nil {
			c.Endpoints[k] = nil
			continue
		}
		x := *e
		c.Endpoints[k] = &x
	}
	return c
}
