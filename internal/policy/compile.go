package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PolicyChain names the chain of a policy's rules in one direction.
func PolicyChain(namespace, name string, d Direction) string {
	return "pol-" + shortHash(namespace+"/"+name) + "-" + dirTag(d)
}

func dirTag(d Direction) string {
	if d == Egress {
		return "eg"
	}
	return "in"
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// comboChain names the chain shared by the local pods selected by exactly
// these policy chains (sorted) in one direction.
func comboChain(d Direction, chains []string) string {
	return "pods-" + dirTag(d) + "-" + shortHash(strings.Join(chains, ","))
}

// IsolationTypes returns whether a policy isolates its pods for ingress
// and for egress: policyTypes when given; otherwise ingress always, and
// egress when the policy has egress rules.
func IsolationTypes(p *netv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case netv1.PolicyTypeIngress:
			ingress = true
		case netv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// compiler holds the caches of one compilation.
type compiler struct {
	m         *Model
	selectors map[*metav1.LabelSelector]labels.Selector
	peerMemo  map[string][]*Pod
}

func (c *compiler) selector(s *metav1.LabelSelector) labels.Selector {
	if s == nil {
		return labels.Nothing()
	}
	if sel, ok := c.selectors[s]; ok {
		return sel
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		// The API server validates selectors; an invalid one matches
		// nothing, which only ever denies.
		sel = labels.Nothing()
	}
	c.selectors[s] = sel
	return sel
}

// Selected returns the pods a policy selects: pods of its namespace, not on
// the host network, whose labels match its podSelector.
func (c *compiler) selected(p *netv1.NetworkPolicy) []*Pod {
	sel := c.selector(&p.Spec.PodSelector)
	var out []*Pod
	for _, pod := range c.m.byNS[p.Namespace] {
		if !pod.HostNetwork && sel.Matches(labels.Set(pod.Labels)) {
			out = append(out, pod)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peerPods returns the pods a peer's selectors match, for a policy in
// namespace ns: podSelector alone is the policy's namespace,
// namespaceSelector alone every pod of the matching namespaces, both
// together the matching pods of the matching namespaces.
func (c *compiler) peerPods(ns string, peer netv1.NetworkPolicyPeer) []*Pod {
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return nil
	}
	var key strings.Builder
	if peer.NamespaceSelector == nil {
		key.WriteString("ns=" + ns)
	} else {
		key.WriteString("nssel=" + c.selector(peer.NamespaceSelector).String())
	}
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		podSel = c.selector(peer.PodSelector)
	}
	key.WriteString("|pod=" + podSel.String())
	if pods, ok := c.peerMemo[key.String()]; ok {
		return pods
	}
	var namespaces []string
	if peer.NamespaceSelector == nil {
		namespaces = []string{ns}
	} else {
		nsSel := c.selector(peer.NamespaceSelector)
		for name := range c.m.byNS {
			var l map[string]string
			if n := c.m.namespaces[name]; n != nil {
				l = n.Labels
			}
			if nsSel.Matches(labels.Set(l)) {
				namespaces = append(namespaces, name)
			}
		}
	}
	var out []*Pod
	for _, name := range namespaces {
		for _, pod := range c.m.byNS[name] {
			if !pod.HostNetwork && podSel.Matches(labels.Set(pod.Labels)) {
				out = append(out, pod)
			}
		}
	}
	c.peerMemo[key.String()] = out
	return out
}

// compiled is one policy's part of the state, kept in the model between
// compilations and rebuilt only when something it depends on changes.
type compiled struct {
	local  []*Pod // the selected pods on this node
	chains map[string]*Chain
	sets   map[string]*Set
	// nsSels are its peers' namespace selectors: a change to the pods of a
	// namespace they match makes it stale.
	nsSels []labels.Selector
	// anyPod: an egress named port without peers resolves on every pod.
	anyPod bool
}

// stale reports whether a change to the pods of namespace ns can change
// the policy's part.
func (cp *compiled) stale(policyNS string, dirty map[string]bool, nsLabels func(string) labels.Set) bool {
	if len(dirty) == 0 {
		return false
	}
	if cp.anyPod || dirty[policyNS] {
		return true
	}
	for ns := range dirty {
		for _, sel := range cp.nsSels {
			if sel.Matches(nsLabels(ns)) {
				return true
			}
		}
	}
	return false
}

// Compile returns the state that enforces the model's policies on its
// local pods. Only policies that select a local pod are in it. Policies
// whose inputs did not change since the last Compile keep their sets and
// chains (the same objects: States are read-only), so a change costs what
// it touches, and Diff skips what did not change.
func Compile(m *Model) *State {
	c := &compiler{m: m, selectors: map[*metav1.LabelSelector]labels.Selector{}, peerMemo: map[string][]*Pod{}}
	nsLabels := func(ns string) labels.Set {
		if n := m.namespaces[ns]; n != nil {
			return n.Labels
		}
		return nil
	}
	if m.cache == nil || m.allDirty {
		m.cache = map[string]*compiled{}
	}
	for key := range m.cache {
		if _, ok := m.policies[key]; !ok {
			delete(m.cache, key)
		}
	}
	s := newState()
	// Per local pod address, the policy chains that apply, per direction.
	podChains := [2]map[netip.Addr][]string{{}, {}}
	for _, key := range m.sortedPolicyKeys() {
		p := m.policies[key]
		cp := m.cache[key]
		if cp == nil || m.dirtyPolicies[key] || cp.stale(p.Namespace, m.dirtyNS, nsLabels) {
			cp = c.compilePolicy(p)
			m.cache[key] = cp
		}
		for n, ch := range cp.chains {
			s.Chains[n] = ch
			d := Ingress
			if strings.HasSuffix(n, "-"+dirTag(Egress)) {
				d = Egress
			}
			for _, pod := range cp.local {
				for _, a := range m.addrs(pod) {
					podChains[d][a] = append(podChains[d][a], n)
				}
			}
		}
		for n, st := range cp.sets {
			s.Sets[n] = st
		}
	}
	m.allDirty, m.dirtyNS, m.dirtyPolicies = false, map[string]bool{}, map[string]bool{}
	for d, verdicts := range []map[netip.Addr]string{s.Ingress, s.Egress} {
		for a, chains := range podChains[d] {
			sort.Strings(chains)
			chains = slices.Compact(chains)
			name := comboChain(Direction(d), chains)
			if _, ok := s.Chains[name]; !ok {
				ch := &Chain{}
				for _, pc := range chains {
					ch.Rules = append(ch.Rules, Rule{Dir: Direction(d), Jump: pc})
				}
				ch.Rules = append(ch.Rules, Rule{Dir: Direction(d), Drop: true})
				s.Chains[name] = ch
			}
			verdicts[a] = name
		}
	}
	return s
}

// compilePolicy compiles one policy's chains and sets.
func (c *compiler) compilePolicy(p *netv1.NetworkPolicy) *compiled {
	cp := &compiled{chains: map[string]*Chain{}, sets: map[string]*Set{}}
	in, eg := IsolationTypes(p)
	for _, d := range []Direction{Ingress, Egress} {
		var peers [][]netv1.NetworkPolicyPeer
		var ports [][]netv1.NetworkPolicyPort
		if d == Ingress {
			for _, r := range p.Spec.Ingress {
				peers, ports = append(peers, r.From), append(ports, r.Ports)
			}
		} else {
			for _, r := range p.Spec.Egress {
				peers, ports = append(peers, r.To), append(ports, r.Ports)
			}
		}
		for i := range peers {
			for _, peer := range peers[i] {
				if peer.NamespaceSelector != nil {
					cp.nsSels = append(cp.nsSels, c.selector(peer.NamespaceSelector))
				}
			}
			if d == Egress && len(peers[i]) == 0 {
				for _, pp := range ports[i] {
					if pp.Port != nil && pp.Port.Type == intstr.String {
						cp.anyPod = true
					}
				}
			}
		}
	}
	for _, pod := range c.selected(p) {
		if pod.Local {
			cp.local = append(cp.local, pod)
		}
	}
	if len(cp.local) == 0 {
		return cp
	}
	for _, d := range []Direction{Ingress, Egress} {
		if (d == Ingress && !in) || (d == Egress && !eg) {
			continue
		}
		chain := PolicyChain(p.Namespace, p.Name, d)
		cp.chains[chain] = c.policyChain(cp.sets, p, d, chain, cp.local)
	}
	return cp
}

// policyChain compiles one direction of a policy into its chain's rules,
// adding the sets they use to sets. local are the policy's selected pods on
// this node (the destinations of its ingress named ports).
func (c *compiler) policyChain(sets map[string]*Set, p *netv1.NetworkPolicy, d Direction, chain string, local []*Pod) *Chain {
	type rule struct {
		peers []netv1.NetworkPolicyPeer
		ports []netv1.NetworkPolicyPort
	}
	var rules []rule
	if d == Ingress {
		for _, r := range p.Spec.Ingress {
			rules = append(rules, rule{r.From, r.Ports})
		}
	} else {
		for _, r := range p.Spec.Egress {
			rules = append(rules, rule{r.To, r.Ports})
		}
	}
	key := p.Namespace + "/" + p.Name
	ch := &Chain{Policy: key}
	for i, r := range rules {
		base := chain + strconv.Itoa(i)
		out := Rule{Dir: d, Policy: key, Index: i}
		var peerPods []*Pod
		if len(r.peers) > 0 {
			var elems []Elem
			for _, peer := range r.peers {
				pods := c.peerPods(p.Namespace, peer)
				peerPods = append(peerPods, pods...)
				for _, pod := range pods {
					for _, a := range c.m.addrs(pod) {
						v := u32(a)
						elems = append(elems, Elem{Lo: v, Hi: v})
					}
				}
				if peer.IPBlock != nil {
					elems = append(elems, ipBlockElems(peer.IPBlock)...)
				}
			}
			out.Peers = base + "-peers"
			sets[out.Peers] = &Set{Kind: SetPeers, Elems: normalize(SetPeers, elems)}
		}
		if len(r.ports) == 0 {
			ch.Rules = append(ch.Rules, out)
			continue
		}
		var numeric, named []Elem
		var names []netv1.NetworkPolicyPort
		for _, pp := range r.ports {
			proto := protoOf(pp.Protocol)
			switch {
			case pp.Port == nil:
				numeric = append(numeric, Elem{Proto: proto, PortLo: 0, PortHi: 65535})
			case pp.Port.Type == intstr.String: // a named port
				names = append(names, pp)
			default:
				lo := uint16(min(max(pp.Port.IntVal, 0), 65535))
				hi := lo
				if pp.EndPort != nil && *pp.EndPort >= pp.Port.IntVal {
					hi = uint16(min(*pp.EndPort, 65535))
				}
				numeric = append(numeric, Elem{Proto: proto, PortLo: lo, PortHi: hi})
			}
		}
		if len(names) > 0 {
			// A named port is resolved on the destination: the selected
			// local pods for ingress, the peer pods (all pods when the rule
			// names no peers) for egress.
			dests := local
			if d == Egress {
				dests = peerPods
				if len(r.peers) == 0 {
					for _, pod := range c.m.pods {
						if !pod.HostNetwork {
							dests = append(dests, pod)
						}
					}
				}
			}
			for _, pod := range dests {
				for _, np := range names {
					proto := protoOf(np.Protocol)
					for _, cp := range pod.Ports {
						if cp.Name == np.Port.StrVal && protoOfName(cp.Protocol) == proto && cp.Port > 0 && cp.Port <= 65535 {
							for _, a := range c.m.addrs(pod) {
								named = append(named, Elem{Lo: u32(a), Hi: u32(a), Proto: proto, PortLo: uint16(cp.Port), PortHi: uint16(cp.Port)})
							}
						}
					}
				}
			}
			nr := out
			nr.Named = base + "-named"
			sets[nr.Named] = &Set{Kind: SetNamed, Elems: normalize(SetNamed, named)}
			ch.Rules = append(ch.Rules, nr)
		}
		if len(numeric) > 0 {
			out.Ports = base + "-ports"
			sets[out.Ports] = &Set{Kind: SetPorts, Elems: normalize(SetPorts, numeric)}
			ch.Rules = append(ch.Rules, out)
		}
	}
	return ch
}

func protoOf(p *corev1.Protocol) Proto {
	if p == nil {
		return ProtoTCP
	}
	return protoOfName(*p)
}

func protoOfName(p corev1.Protocol) Proto {
	switch p {
	case corev1.ProtocolUDP:
		return ProtoUDP
	case corev1.ProtocolSCTP:
		return ProtoSCTP
	}
	return ProtoTCP
}

// ipBlockElems is an IPv4 ipBlock's CIDR without its excepts, as ranges.
func ipBlockElems(b *netv1.IPBlock) []Elem {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() {
		return nil
	}
	p = p.Masked()
	lo := u32(p.Addr())
	hi := lo + uint32((uint64(1)<<(32-p.Bits()))-1)
	out := []Elem{{Lo: lo, Hi: hi}}
	for _, ex := range b.Except {
		ep, err := netip.ParsePrefix(ex)
		if err != nil || !ep.Addr().Is4() {
			continue
		}
		ep = ep.Masked()
		elo := u32(ep.Addr())
		ehi := elo + uint32((uint64(1)<<(32-ep.Bits()))-1)
		var next []Elem
		for _, r := range out {
			if ehi < r.Lo || elo > r.Hi {
				next = append(next, r)
				continue
			}
			if elo > r.Lo {
				next = append(next, Elem{Lo: r.Lo, Hi: elo - 1})
			}
			if ehi < r.Hi {
				next = append(next, Elem{Lo: ehi + 1, Hi: r.Hi})
			}
		}
		out = next
	}
	return out
}

// normalize sorts elements and merges the overlapping ones (interval sets
// refuse overlaps); adjacent ranges stay apart, so adding one address
// next to another is one new element, not a rewrite of its neighbour.
func normalize(k SetKind, elems []Elem) []Elem {
	slices.SortFunc(elems, func(a, b Elem) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	elems = slices.Compact(elems)
	if k == SetNamed {
		return elems
	}
	var out []Elem
	for _, e := range elems {
		if n := len(out); n > 0 {
			last := &out[n-1]
			switch k {
			case SetPeers:
				if e.Lo <= last.Hi {
					last.Hi = max(last.Hi, e.Hi)
					continue
				}
			case SetPorts:
				if e.Proto == last.Proto && e.PortLo <= last.PortHi {
					last.PortHi = max(last.PortHi, e.PortHi)
					continue
				}
			}
		}
		out = append(out, e)
	}
	return out
}
