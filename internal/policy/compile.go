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

// Compile returns the state that enforces the model's policies on its
// local pods. Only policies that select a local pod are in it.
func Compile(m *Model) *State {
	c := &compiler{m: m, selectors: map[*metav1.LabelSelector]labels.Selector{}, peerMemo: map[string][]*Pod{}}
	s := newState()
	// Per local pod address, the policy chains that apply, per direction.
	podChains := [2]map[netip.Addr][]string{{}, {}}
	for _, key := range m.sortedPolicyKeys() {
		p := m.policies[key]
		sel := c.selected(p)
		var local []*Pod
		for _, pod := range sel {
			if pod.Local {
				local = append(local, pod)
			}
		}
		if len(local) == 0 {
			continue
		}
		in, eg := IsolationTypes(p)
		for _, d := range []Direction{Ingress, Egress} {
			if (d == Ingress && !in) || (d == Egress && !eg) {
				continue
			}
			chain := PolicyChain(p.Namespace, p.Name, d)
			s.Chains[chain] = c.policyChain(s, p, d, chain, local)
			for _, pod := range local {
				for _, a := range m.addrs(pod) {
					podChains[d][a] = append(podChains[d][a], chain)
				}
			}
		}
	}
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

// policyChain compiles one direction of a policy into its chain's rules,
// adding the sets they use to s. local are the policy's selected pods on
// this node (the destinations of its ingress named ports).
func (c *compiler) policyChain(s *State, p *netv1.NetworkPolicy, d Direction, chain string, local []*Pod) *Chain {
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
			s.Sets[out.Peers] = &Set{Kind: SetPeers, Elems: normalize(SetPeers, elems)}
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
			s.Sets[nr.Named] = &Set{Kind: SetNamed, Elems: normalize(SetNamed, named)}
			ch.Rules = append(ch.Rules, nr)
		}
		if len(numeric) > 0 {
			out.Ports = base + "-ports"
			s.Sets[out.Ports] = &Set{Kind: SetPorts, Elems: normalize(SetPorts, numeric)}
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
