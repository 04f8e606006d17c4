// Package doctor compares what a node's CNI state records with what the
// node's kernel holds and what its address pool offers, and repairs the
// differences.
//
// The plugin records an attachment before it builds it and removes it from
// the kernel before it forgets it, so every difference has one reading:
// a recorded attachment missing from the kernel, or kernel objects nobody
// records, were left by interrupted work (garbage, which `vnetctl gc`
// collects); a kernel attachment the state lost is recorded again; a live
// attachment missing some of its kernel objects gets them back.
package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Kind names a difference.
type Kind string

// The differences the doctor finds.
const (
	// StateDamaged: the state file cannot be trusted. Fix: keep it aside
	// and rebuild the state from the kernel, as the plugin does.
	StateDamaged Kind = "state-damaged"
	// TempFile: a temporary state file of a writer killed before its
	// rename. Fix: remove it.
	TempFile Kind = "temp-file"
	// StaleLockFile: the lock file of an attachment that no longer exists.
	// Fix: remove it.
	StaleLockFile Kind = "stale-lock-file"
	// UnrecordedAttachment: a host veth whose alias describes an
	// attachment the state does not record (the state was lost or
	// restored from an old copy). Fix: record it.
	UnrecordedAttachment Kind = "unrecorded-attachment"
	// DuplicateAddress: an unrecorded attachment uses an address the state
	// gives another container. Fix: remove the unrecorded one.
	DuplicateAddress Kind = "duplicate-address"
	// UnlabeledVeth: a host veth without an alias, left by an ADD killed
	// right after creating it. Fix: remove it (and its record).
	UnlabeledVeth Kind = "unlabeled-veth"
	// MissingVeth: a recorded attachment whose host veth is gone (an ADD
	// killed before building it, or a veth deleted by hand). Fix: remove
	// what is left of it and release its address.
	MissingVeth Kind = "missing-veth"
	// Mismatch: the recorded attachment and the veth's alias disagree on
	// address or MAC. Fix: record what the kernel holds, if that address
	// is not someone else's.
	Mismatch Kind = "attachment-mismatch"
	// LeakedAllocation: an address allocated by azure-vnet to a container
	// interface that has neither an endpoint nor a veth. Fix: release it.
	LeakedAllocation Kind = "leaked-allocation"
	// MissingElement: a live attachment lacks nftables elements. Fix:
	// add them.
	MissingElement Kind = "missing-element"
	// StaleElement: an nftables element of no live attachment. Fix:
	// delete it.
	StaleElement Kind = "stale-element"
	// MissingRoute: a live transparent-mode attachment lacks its /32 route.
	// Fix: add it.
	MissingRoute Kind = "missing-route"
	// StaleRoute: a route through a host veth that is not its pod's /32.
	// Fix: delete it.
	StaleRoute Kind = "stale-route"
	// OutsidePool: an allocated address the NIC no longer has. Not
	// fixable here: the pod must be moved.
	OutsidePool Kind = "outside-pool"
	// MissingRules: a network with live pods has no nftables tables. Not
	// fixable here: the next ADD programs them, with every recorded pod.
	MissingRules Kind = "missing-rules"
	// ForwardingOff: the node does not forward IPv4. Its pods' routes and
	// kube-proxy's NodePorts need it before the first pod arrives
	// (vnetctl install turns it on); repaired by turning it on.
	ForwardingOff Kind = "forwarding-off"
)

// Garbage reports whether a kind is left over by interrupted or failed work
// (what `vnetctl gc` collects) rather than damage to live attachments.
func (k Kind) Garbage() bool {
	switch k {
	case TempFile, StaleLockFile, UnlabeledVeth, MissingVeth, LeakedAllocation, StaleElement, StaleRoute:
		return true
	}
	return false
}

// Fixable reports whether the doctor can repair a kind.
func (k Kind) Fixable() bool { return k != OutsidePool && k != MissingRules }

// Finding is one difference, with what its repair needs.
type Finding struct {
	Kind    Kind   `json:"kind"`
	Network string `json:"network,omitempty"`
	// Subject names what is wrong: a container interface, an interface,
	// an address or a file.
	Subject string `json:"subject"`
	Detail  string `json:"detail"`
	// Fixed says the repair was made; FixError why it was not.
	Fixed    bool   `json:"fixed,omitempty"`
	FixError string `json:"fixError,omitempty"`

	// What the repair works on.
	key      string               // container/ifname, "" when none
	att      *datapath.Attachment // the kernel's attachment (alias)
	endpoint *store.Endpoint
	alloc    *store.Allocation
	elem     *Element
	route    *Route
	file     string
}

// Key is the container interface a finding is about ("" when none).
func (f *Finding) Key() string { return f.key }

func (f *Finding) String() string {
	s := fmt.Sprintf("%s %s: %s", f.Kind, f.Subject, f.Detail)
	if f.Network != "" {
		s = fmt.Sprintf("%s [%s] %s: %s", f.Kind, f.Network, f.Subject, f.Detail)
	}
	return s
}

// Snapshot is what the doctor compares.
type Snapshot struct {
	State    *store.State // nil when StateErr is set
	StateErr error        // the state file is damaged
	Files    []string     // names in the state directory
	Kernel   *Kernel
}

// Kernel is what a node's kernel holds for azure-vnet.
type Kernel struct {
	Veths  map[string]*Veth   // host veths by name
	Tables map[string]*Tables // by network, for every network known
	Routes []Route            // main-table routes through host veths
	Modes  map[string]string  // network -> mode, from the veths' aliases
	// ForwardingOff: net.ipv4.ip_forward is 0.
	ForwardingOff bool
}

// Veth is a host-side veth.
type Veth struct {
	Name    string
	Index   int
	Labeled bool // its alias parses
	Att     datapath.Attachment
}

// Tables are a network's pod elements.
type Tables struct {
	Mode    string
	Present bool
	Elems   []Element
}

// Element is one pod element of a network's sets and maps.
type Element struct {
	Set    string           // pods, pod-macs, pod-ips
	Family string           // bridge, ip or arp
	HostIf string           // pod-macs, pod-ips
	IP     netip.Addr       // pods, pod-ips
	MAC    net.HardwareAddr // pods (the value), pod-macs
}

func (e Element) String() string {
	switch e.Set {
	case "pods":
		return fmt.Sprintf("%s pods %s : %s", e.Family, e.IP, e.MAC)
	case "pod-macs":
		return fmt.Sprintf("%s pod-macs %s . %s", e.Family, e.HostIf, e.MAC)
	}
	return fmt.Sprintf("%s pod-ips %s . %s", e.Family, e.HostIf, e.IP)
}

// Route is a route through a host veth.
type Route struct {
	Dst netip.Prefix
	Dev string
}

func (r Route) String() string { return fmt.Sprintf("%s dev %s", r.Dst, r.Dev) }

// wantElems are the elements a live attachment needs.
func wantElems(mode, hostIf string, ip netip.Addr, mac net.HardwareAddr) []Element {
	if mode == datapath.ModeBridge {
		return []Element{
			{Set: "pods", Family: "bridge", IP: ip, MAC: mac},
			{Set: "pod-macs", Family: "bridge", HostIf: hostIf, MAC: mac},
			{Set: "pod-ips", Family: "bridge", HostIf: hostIf, IP: ip},
		}
	}
	return []Element{
		{Set: "pod-ips", Family: "ip", HostIf: hostIf, IP: ip},
		{Set: "pod-ips", Family: "arp", HostIf: hostIf, IP: ip},
	}
}

// elemKey identifies an element; the pods map by address alone.
func elemKey(e Element) string {
	switch e.Set {
	case "pods":
		return e.Family + " pods " + e.IP.String()
	case "pod-macs":
		return e.Family + " pod-macs " + e.HostIf + " " + e.MAC.String()
	}
	return e.Family + " pod-ips " + e.HostIf + " " + e.IP.String()
}

// Diagnose compares a snapshot's state, kernel and pool.
func Diagnose(s *Snapshot) []*Finding {
	var out []*Finding
	add := func(f *Finding) { out = append(out, f) }
	for _, name := range s.Files {
		if strings.HasPrefix(name, store.FileName+".tmp-") {
			add(&Finding{Kind: TempFile, Subject: name, Detail: "temporary state file of a writer killed before its rename", file: name})
		}
	}
	st := s.State
	if s.StateErr != nil {
		add(&Finding{Kind: StateDamaged, Subject: store.FileName, Detail: s.StateErr.Error()})
		// Compare the kernel with nothing: only what needs no state.
		st = store.NewState()
	}
	k := s.Kernel
	if k.ForwardingOff {
		add(&Finding{Kind: ForwardingOff, Subject: "net.ipv4.ip_forward",
			Detail: "IPv4 forwarding is off: NodePorts and routes to pods fail until the first ADD (vnetctl install turns it on)"})
	}

	networkOf := func(e *store.Endpoint) string { return e.Network }
	modeOf := func(network string) string {
		if n := st.Networks[network]; n != nil && n.Mode != "" {
			return n.Mode
		}
		return k.Modes[network]
	}

	// Attachments the kernel holds, and whether the state agrees.
	type live struct {
		key    string
		mode   string
		net    string
		hostIf string
		ip     netip.Addr
		mac    net.HardwareAddr
	}
	var keep []live
	byHostIf := map[string]*store.Endpoint{}
	for _, e := range st.Endpoints {
		byHostIf[e.HostIfName] = e
	}
	claimed := map[string]bool{} // container interfaces with a labeled veth
	for _, name := range sortedKeys(k.Veths) {
		v := k.Veths[name]
		if !v.Labeled {
			f := &Finding{Kind: UnlabeledVeth, Subject: name, Detail: "host veth without an alias, left by an interrupted ADD"}
			if e := byHostIf[name]; e != nil {
				f.key, f.endpoint, f.Network = e.Key(), e, e.Network
				f.Detail += " of " + e.Key()
				claimed[e.Key()] = true
			}
			add(f)
			continue
		}
		a := v.Att
		key := store.EndpointKey(a.ContainerID, a.IfName)
		claimed[key] = true
		e, recorded := st.Endpoints[key]
		if !recorded {
			alloc := st.Allocations[a.IP.Addr().String()]
			if alloc != nil && store.EndpointKey(alloc.ContainerID, alloc.IfName) != key {
				add(&Finding{Kind: DuplicateAddress, Network: a.Network, Subject: key, key: key, att: &v.Att,
					Detail: fmt.Sprintf("veth %s gives %s to this unrecorded attachment; the state gives it to %s", name, a.IP.Addr(), store.EndpointKey(alloc.ContainerID, alloc.IfName))})
				continue
			}
			add(&Finding{Kind: UnrecordedAttachment, Network: a.Network, Subject: key, key: key, att: &v.Att, alloc: alloc,
				Detail: fmt.Sprintf("veth %s holds %s (%s) for it, the state does not record it", name, a.IP, a.PodMAC)})
			keep = append(keep, live{key, a.Mode, a.Network, name, a.IP.Addr(), a.PodMAC})
			continue
		}
		if e.IP != a.IP || !strings.EqualFold(e.PodMAC, a.PodMAC.String()) || e.HostIfName != name {
			add(&Finding{Kind: Mismatch, Network: a.Network, Subject: key, key: key, att: &v.Att, endpoint: e,
				Detail: fmt.Sprintf("state records %s %s on %s, veth %s holds %s %s", e.IP, e.PodMAC, e.HostIfName, name, a.IP, a.PodMAC)})
		}
		keep = append(keep, live{key, modeOf(networkOf(e)), e.Network, name, a.IP.Addr(), a.PodMAC})
	}
	for _, key := range sortedKeys(st.Endpoints) {
		e := st.Endpoints[key]
		if _, ok := k.Veths[e.HostIfName]; !ok {
			add(&Finding{Kind: MissingVeth, Network: e.Network, Subject: key, key: key, endpoint: e,
				Detail: fmt.Sprintf("recorded with %s, but veth %s does not exist", e.IP, e.HostIfName)})
		}
	}
	for _, a := range st.SortedAllocations() {
		key := store.EndpointKey(a.ContainerID, a.IfName)
		if p := st.Pools[a.Pool]; p != nil && !p.Has(a.IP) {
			add(&Finding{Kind: OutsidePool, Network: a.Network, Subject: a.IP.String(), key: key, alloc: a,
				Detail: fmt.Sprintf("allocated to %s, but NIC %s no longer has it", key, p.ID)})
		}
		if a.Owner == "azure-vnet-ipam" {
			continue // its attachments belong to other plugins
		}
		if _, ok := st.Endpoints[key]; ok || claimed[key] {
			continue
		}
		add(&Finding{Kind: LeakedAllocation, Network: a.Network, Subject: key + " " + a.IP.String(), key: key, alloc: a,
			Detail: "allocated, but the container interface has neither an endpoint nor a veth"})
	}

	// nftables elements and routes of the attachments kept.
	want := map[string]map[string]Element{} // network -> key -> element
	wantOwner := map[string]string{}        // network+key -> container interface
	var wantRoutes []Route
	liveHostIf := map[string]bool{}
	for _, l := range keep {
		liveHostIf[l.hostIf] = true
		if want[l.net] == nil {
			want[l.net] = map[string]Element{}
		}
		for _, e := range wantElems(l.mode, l.hostIf, l.ip, l.mac) {
			want[l.net][elemKey(e)] = e
			wantOwner[l.net+" "+elemKey(e)] = l.key
		}
		if l.mode == datapath.ModeTransparent {
			wantRoutes = append(wantRoutes, Route{Dst: netip.PrefixFrom(l.ip, 32), Dev: l.hostIf})
		}
	}
	for _, network := range sortedKeys(k.Tables) {
		t := k.Tables[network]
		w := want[network]
		if !t.Present {
			if len(w) > 0 {
				add(&Finding{Kind: MissingRules, Network: network, Subject: datapath.TableName(network),
					Detail: "no nftables tables for a network with live pods; the next ADD programs them"})
			}
			continue
		}
		have := map[string]Element{}
		for _, e := range t.Elems {
			have[elemKey(e)] = e
		}
		missing := map[string][]string{} // container interface -> elements
		for _, ek := range sortedKeys(w) {
			e := w[ek]
			h, ok := have[ek]
			if ok && (e.Set != "pods" || h.MAC.String() == e.MAC.String()) {
				continue
			}
			owner := wantOwner[network+" "+ek]
			missing[owner] = append(missing[owner], e.String())
		}
		for _, owner := range sortedKeys(missing) {
			var att *datapath.Attachment
			for _, l := range keep {
				if l.key == owner {
					att = &datapath.Attachment{Mode: l.mode, Network: l.net, IP: netip.PrefixFrom(l.ip, 32), PodMAC: l.mac, HostIfName: l.hostIf}
				}
			}
			add(&Finding{Kind: MissingElement, Network: network, Subject: owner, key: owner, att: att,
				Detail: "lacks " + strings.Join(missing[owner], ", ")})
		}
		for _, ek := range sortedKeys(have) {
			e := have[ek]
			if _, ok := w[ek]; ok {
				continue // a wrong pods value is repaired with the missing element
			}
			f := &Finding{Kind: StaleElement, Network: network, Subject: e.String(), elem: &e,
				Detail: "element of no live attachment"}
			if rec := byHostIf[e.HostIf]; e.HostIf != "" && rec != nil {
				f.key = rec.Key()
			}
			add(f)
		}
	}
	wantRoute := map[Route]bool{}
	for _, r := range wantRoutes {
		wantRoute[r] = true
	}
	haveRoute := map[Route]bool{}
	for _, r := range k.Routes {
		haveRoute[r] = true
		if !wantRoute[r] {
			add(&Finding{Kind: StaleRoute, Subject: r.String(), route: &r, Detail: "route through a host veth that is not its pod's /32"})
		}
	}
	for _, r := range wantRoutes {
		if haveRoute[r] {
			continue
		}
		f := &Finding{Kind: MissingRoute, Subject: r.String(), route: &r, Detail: "live transparent-mode pod without its route"}
		if v := k.Veths[r.Dev]; v != nil && v.Labeled {
			f.key, f.Network = store.EndpointKey(v.Att.ContainerID, v.Att.IfName), v.Att.Network
		}
		add(f)
	}

	// Lock files of attachments that no longer exist.
	known := map[string]bool{}
	for key := range claimed {
		c, i, _ := strings.Cut(key, "/")
		known[store.AttachmentLockName(c, i)] = true
	}
	for key := range st.Endpoints {
		c, i, _ := strings.Cut(key, "/")
		known[store.AttachmentLockName(c, i)] = true
	}
	for _, a := range st.Allocations {
		known[store.AttachmentLockName(a.ContainerID, a.IfName)] = true
	}
	for _, name := range s.Files {
		if strings.HasPrefix(name, store.AttachmentLockPrefix) && !known[name] {
			add(&Finding{Kind: StaleLockFile, Subject: name, file: name, Detail: "lock file of an attachment that no longer exists"})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
