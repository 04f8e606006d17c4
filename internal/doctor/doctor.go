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
	"github.com/vnetcni/vnetcni/internal/netconf"
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
	// MissingRules: a network's static nftables rules are missing or
	// damaged (a flushed ruleset, table or chain). Fix: program them again
	// with every live pod's elements, from the configuration the state
	// records (networks set up by an older version: the next ADD).
	MissingRules Kind = "missing-rules"
	// BridgeNetfilterOff: a bridge-mode network on a node where
	// br_netfilter is not loaded or not on: replies of Service connections
	// between two pods of the node bypass conntrack and hang. Fix: load the
	// module, turn its sysctl on.
	BridgeNetfilterOff Kind = "br-netfilter-off"
	// NodeHoldsPodAddress: an address allocated to a pod is also on one of
	// the node's links (cloud-init, networkd or a DHCP client put the
	// NIC's secondary IPs on eth0): the node answers for the pod. Fix:
	// take it off the node's link.
	NodeHoldsPodAddress Kind = "node-holds-pod-address"
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
func (k Kind) Fixable() bool { return k != OutsidePool }

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
	elem     *datapath.Element
	route    *Route
	file     string
	nodeAddr *NodeAddr          // NodeHoldsPodAddress
	rules    *datapath.Rules    // MissingRules: what to program
	pods     []datapath.PodElem // MissingRules: the live pods' elements
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
	// BridgeNetfilter: br_netfilter's sysctl exists (Loaded) and is 1 (On).
	BridgeNetfilter struct{ Loaded, On bool }
	// NodeAddrs are the node's IPv4 addresses by the link holding them
	// (host veths excluded).
	NodeAddrs map[netip.Addr]NodeAddr
	// ForwardingOff: net.ipv4.ip_forward is 0.
	ForwardingOff bool
}

// NodeAddr is an address on one of the node's links.
type NodeAddr struct {
	Link   string
	Prefix netip.Prefix
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
	Elems   []datapath.Element
	// Rules is the static configuration the state records for the
	// network (nil when none is), Damage what the kernel lacks of it.
	Rules  *datapath.Rules
	Damage []string
}

// Route is a route through a host veth.
type Route struct {
	Dst netip.Prefix
	Dev string
}

func (r Route) String() string { return fmt.Sprintf("%s dev %s", r.Dst, r.Dev) }

// Diagnose compares a snapshot's state, kernel and pool.
func Diagnose(s *Snapshot) []*Finding {
	d := &diagnosis{st: s.State, k: s.Kernel, byHostIf: map[string]*store.Endpoint{}, claimed: map[string]bool{}}
	d.tempFiles(s.Files)
	if s.StateErr != nil {
		d.add(&Finding{Kind: StateDamaged, Subject: store.FileName, Detail: s.StateErr.Error()})
		// Compare the kernel with nothing: only what needs no state.
		d.st = store.NewState()
	}
	if s.Kernel.ForwardingOff {
		d.add(&Finding{Kind: ForwardingOff, Subject: "net.ipv4.ip_forward",
			Detail: "IPv4 forwarding is off: NodePorts and routes to pods fail until the first ADD (vnetctl install turns it on)"})
	}
	for _, e := range d.st.Endpoints {
		d.byHostIf[e.HostIfName] = e
	}
	d.veths()
	d.records()
	d.allocations()
	d.elements()
	d.nodeTraits()
	d.routes()
	d.lockFiles(s.Files)
	return d.out
}

// diagnosis is one comparison in progress.
type diagnosis struct {
	st       *store.State
	k        *Kernel
	out      []*Finding
	keep     []live                     // attachments the kernel holds that stay
	byHostIf map[string]*store.Endpoint // records by host veth
	claimed  map[string]bool            // container interfaces with a labeled veth
}

// live is an attachment that stays, with what it owns.
type live struct {
	key    string
	mode   string
	net    string
	hostIf string
	ip     netip.Addr
	mac    net.HardwareAddr
}

func (d *diagnosis) add(f *Finding) { d.out = append(d.out, f) }

func (d *diagnosis) modeOf(network string) string {
	if n := d.st.Networks[network]; n != nil && n.Mode != "" {
		return n.Mode
	}
	return d.k.Modes[network]
}

// tempFiles finds temporary state files of writers killed before their
// rename.
func (d *diagnosis) tempFiles(names []string) {
	for _, name := range names {
		if store.IsTempFile(name) {
			d.add(&Finding{Kind: TempFile, Subject: name, Detail: "temporary state file of a writer killed before its rename", file: name})
		}
	}
}

// veths compares the attachments the kernel holds with the state.
func (d *diagnosis) veths() {
	st, k := d.st, d.k
	for _, name := range sortedKeys(k.Veths) {
		v := k.Veths[name]
		if !v.Labeled {
			f := &Finding{Kind: UnlabeledVeth, Subject: name, Detail: "host veth without an alias, left by an interrupted ADD"}
			if e := d.byHostIf[name]; e != nil {
				f.key, f.endpoint, f.Network = e.Key(), e, e.Network
				f.Detail += " of " + e.Key()
				d.claimed[e.Key()] = true
			}
			d.add(f)
			continue
		}
		a := v.Att
		key := store.EndpointKey(a.ContainerID, a.IfName)
		d.claimed[key] = true
		e, recorded := st.Endpoints[key]
		if !recorded {
			alloc := st.Allocations[a.IP.Addr().String()]
			if alloc != nil && store.EndpointKey(alloc.ContainerID, alloc.IfName) != key {
				d.add(&Finding{Kind: DuplicateAddress, Network: a.Network, Subject: key, key: key, att: &v.Att,
					Detail: fmt.Sprintf("veth %s gives %s to this unrecorded attachment; the state gives it to %s", name, a.IP.Addr(), store.EndpointKey(alloc.ContainerID, alloc.IfName))})
				continue
			}
			d.add(&Finding{Kind: UnrecordedAttachment, Network: a.Network, Subject: key, key: key, att: &v.Att, alloc: alloc,
				Detail: fmt.Sprintf("veth %s holds %s (%s) for it, the state does not record it", name, a.IP, a.PodMAC)})
			d.keep = append(d.keep, live{key, a.Mode, a.Network, name, a.IP.Addr(), a.PodMAC})
			continue
		}
		if e.IP != a.IP || !strings.EqualFold(e.PodMAC, a.PodMAC.String()) || e.HostIfName != name {
			d.add(&Finding{Kind: Mismatch, Network: a.Network, Subject: key, key: key, att: &v.Att, endpoint: e,
				Detail: fmt.Sprintf("state records %s %s on %s, veth %s holds %s %s", e.IP, e.PodMAC, e.HostIfName, name, a.IP, a.PodMAC)})
		}
		d.keep = append(d.keep, live{key, d.modeOf(e.Network), e.Network, name, a.IP.Addr(), a.PodMAC})
	}
}

// records finds recorded attachments whose veth is gone.
func (d *diagnosis) records() {
	for _, key := range sortedKeys(d.st.Endpoints) {
		e := d.st.Endpoints[key]
		if _, ok := d.k.Veths[e.HostIfName]; !ok {
			d.add(&Finding{Kind: MissingVeth, Network: e.Network, Subject: key, key: key, endpoint: e,
				Detail: fmt.Sprintf("recorded with %s, but veth %s does not exist", e.IP, e.HostIfName)})
		}
	}
}

// allocations finds addresses outside their pool and addresses of nothing.
func (d *diagnosis) allocations() {
	st := d.st
	for _, a := range st.SortedAllocations() {
		key := store.EndpointKey(a.ContainerID, a.IfName)
		if p := st.Pools[a.Pool]; p != nil && !p.Has(a.IP) {
			d.add(&Finding{Kind: OutsidePool, Network: a.Network, Subject: a.IP.String(), key: key, alloc: a,
				Detail: fmt.Sprintf("allocated to %s, but NIC %s no longer has it", key, p.ID)})
		}
		if a.Owner == netconf.IPAMType {
			continue // its attachments belong to other plugins
		}
		if _, ok := st.Endpoints[key]; ok || d.claimed[key] {
			continue
		}
		d.add(&Finding{Kind: LeakedAllocation, Network: a.Network, Subject: key + " " + a.IP.String(), key: key, alloc: a,
			Detail: "allocated, but the container interface has neither an endpoint nor a veth"})
	}
}

// owned is what the attachments that stay own in the kernel.
func (d *diagnosis) owned() (elems map[string]map[string]datapath.Element, owner map[string]string, routes []Route) {
	elems = map[string]map[string]datapath.Element{} // network -> ID -> element
	owner = map[string]string{}                      // network+ID -> container interface
	for _, l := range d.keep {
		if elems[l.net] == nil {
			elems[l.net] = map[string]datapath.Element{}
		}
		o := datapath.Owns(l.mode, datapath.PodElem{HostIf: l.hostIf, MAC: l.mac, IP: l.ip})
		for _, e := range o.Elements {
			elems[l.net][e.ID()] = e
			owner[l.net+" "+e.ID()] = l.key
		}
		if o.Route.IsValid() {
			routes = append(routes, Route{Dst: o.Route, Dev: o.HostIf})
		}
	}
	return elems, owner, routes
}

// elements compares each network's nftables elements with what the
// attachments that stay own.
func (d *diagnosis) elements() {
	want, wantOwner, _ := d.owned()
	for _, network := range sortedKeys(d.k.Tables) {
		t := d.k.Tables[network]
		w := want[network]
		if len(t.Damage) > 0 || (!t.Present && len(w) > 0) {
			f := &Finding{Kind: MissingRules, Network: network, Subject: datapath.TableName(network), rules: t.Rules,
				Detail: "no nftables tables for a network with live pods; the next ADD programs them"}
			if len(t.Damage) > 0 {
				f.Detail = "static rules damaged: " + strings.Join(t.Damage, "; ")
			}
			for _, l := range d.keep {
				if l.net == network {
					f.pods = append(f.pods, datapath.PodElem{HostIf: l.hostIf, MAC: l.mac, IP: l.ip})
				}
			}
			d.add(f)
		}
		if !t.Present {
			continue
		}
		have := map[string]datapath.Element{}
		for _, e := range t.Elems {
			have[e.ID()] = e
		}
		missing := map[string][]string{} // container interface -> elements
		for _, ek := range sortedKeys(w) {
			e := w[ek]
			h, ok := have[ek]
			if ok && (e.Set != datapath.SetPods || h.MAC.String() == e.MAC.String()) {
				continue
			}
			owner := wantOwner[network+" "+ek]
			missing[owner] = append(missing[owner], e.String())
		}
		for _, owner := range sortedKeys(missing) {
			var att *datapath.Attachment
			for _, l := range d.keep {
				if l.key == owner {
					att = &datapath.Attachment{Mode: l.mode, Network: l.net, IP: netip.PrefixFrom(l.ip, 32), PodMAC: l.mac, HostIfName: l.hostIf}
				}
			}
			d.add(&Finding{Kind: MissingElement, Network: network, Subject: owner, key: owner, att: att,
				Detail: "lacks " + strings.Join(missing[owner], ", ")})
		}
		for _, ek := range sortedKeys(have) {
			e := have[ek]
			if _, ok := w[ek]; ok {
				continue // a wrong pods value is repaired with the missing element
			}
			f := &Finding{Kind: StaleElement, Network: network, Subject: e.String(), elem: &e,
				Detail: "element of no live attachment"}
			if rec := d.byHostIf[e.HostIf]; e.HostIf != "" && rec != nil {
				f.key = rec.Key()
			}
			d.add(f)
		}
	}
}

// nodeTraits finds what of the node itself breaks pods: an address a pod
// holds that a link of the node holds too, bridge netfilter off.
func (d *diagnosis) nodeTraits() {
	for _, a := range d.st.SortedAllocations() {
		if na, ok := d.k.NodeAddrs[a.IP]; ok {
			d.add(&Finding{Kind: NodeHoldsPodAddress, Network: a.Network, Subject: a.IP.String(), alloc: a, nodeAddr: &na,
				Detail: fmt.Sprintf("allocated to %s, but the node's %s holds it too (cloud-init, networkd or a DHCP client put the NIC's secondary IPs there)",
					store.EndpointKey(a.ContainerID, a.IfName), na.Link)})
		}
	}
	for _, network := range sortedKeys(d.st.Networks) {
		if d.st.Networks[network].Mode != datapath.ModeBridge || d.k.BridgeNetfilter.On {
			continue
		}
		detail := datapath.BridgeNetfilterSysctl + " is 0"
		if !d.k.BridgeNetfilter.Loaded {
			detail = datapath.BridgeNetfilterModule + " is not loaded"
		}
		d.add(&Finding{Kind: BridgeNetfilterOff, Network: network, Subject: datapath.BridgeNetfilterModule,
			Detail: detail + ": replies of Service connections between pods of this node bypass conntrack"})
	}
}

// routes compares the routes through host veths with the pods' /32s.
func (d *diagnosis) routes() {
	_, _, wantRoutes := d.owned()
	wantRoute := map[Route]bool{}
	for _, r := range wantRoutes {
		wantRoute[r] = true
	}
	haveRoute := map[Route]bool{}
	for _, r := range d.k.Routes {
		haveRoute[r] = true
		if !wantRoute[r] {
			d.add(&Finding{Kind: StaleRoute, Subject: r.String(), route: &r, Detail: "route through a host veth that is not its pod's /32"})
		}
	}
	for _, r := range wantRoutes {
		if haveRoute[r] {
			continue
		}
		f := &Finding{Kind: MissingRoute, Subject: r.String(), route: &r, Detail: "live transparent-mode pod without its route"}
		if v := d.k.Veths[r.Dev]; v != nil && v.Labeled {
			f.key, f.Network = store.EndpointKey(v.Att.ContainerID, v.Att.IfName), v.Att.Network
		}
		d.add(f)
	}
}

// lockFiles finds lock files of attachments that no longer exist.
func (d *diagnosis) lockFiles(names []string) {
	known := map[string]bool{}
	for key := range d.claimed {
		c, i, _ := strings.Cut(key, "/")
		known[store.AttachmentLockName(c, i)] = true
	}
	for key := range d.st.Endpoints {
		c, i, _ := strings.Cut(key, "/")
		known[store.AttachmentLockName(c, i)] = true
	}
	for _, a := range d.st.Allocations {
		known[store.AttachmentLockName(a.ContainerID, a.IfName)] = true
	}
	for _, name := range names {
		if strings.HasPrefix(name, store.AttachmentLockPrefix) && !known[name] {
			d.add(&Finding{Kind: StaleLockFile, Subject: name, file: name, Detail: "lock file of an attachment that no longer exists"})
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
