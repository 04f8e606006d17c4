package policy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// TableName is the policy table, family ip: one per node, beside the
// datapath's azure-vnet-<network> tables.
const TableName = "vnetcni-policy"

// The static objects of the table.
const (
	// MapIngress maps a local pod address (ip daddr) to the chain that
	// decides what may reach it; MapEgress (ip saddr) what it may send.
	MapIngress = "ingress"
	MapEgress  = "egress"
	// ChainIngress and ChainEgress are the base chains (hook forward): the
	// egress chain runs first, so an accept there only ends the egress
	// decision and the packet still meets the destination's ingress chain.
	ChainEgress  = "egress"
	ChainIngress = "ingress"
	// EgressPriority and IngressPriority are the base chains' priorities
	// (filter and filter + 1), after kube-proxy's DNAT in prerouting, so
	// policy sees the Service's backend pod.
	EgressPriority  = 0
	IngressPriority = 1
)

// Proto is an IP protocol number.
type Proto uint8

// The protocols NetworkPolicy names.
const (
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
	ProtoSCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprint(uint8(p))
}

// SetKind is the type of a set.
type SetKind int

const (
	// SetPeers: type ipv4_addr; flags interval. Lo..Hi.
	SetPeers SetKind = iota
	// SetPorts: type inet_proto . inet_service; flags interval.
	// Proto . PortLo-PortHi.
	SetPorts
	// SetNamed: type ipv4_addr . inet_proto . inet_service.
	// Lo . Proto . PortLo: named ports resolved per destination pod.
	SetNamed
)

// Elem is one set element; the set's kind says which fields count.
type Elem struct {
	Lo, Hi         uint32
	Proto          Proto
	PortLo, PortHi uint16
}

func (e Elem) less(o Elem) bool {
	if e.Lo != o.Lo {
		return e.Lo < o.Lo
	}
	if e.Proto != o.Proto {
		return e.Proto < o.Proto
	}
	if e.PortLo != o.PortLo {
		return e.PortLo < o.PortLo
	}
	if e.Hi != o.Hi {
		return e.Hi < o.Hi
	}
	return e.PortHi < o.PortHi
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }
func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Set is a named set of the table.
type Set struct {
	Kind  SetKind
	Elems []Elem // sorted, non-overlapping
}

// Direction of a policy rule.
type Direction int

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Rule is one rule of a non-base chain. A policy chain's rules accept
// (and count) what they match: peers (saddr for ingress, daddr for
// egress) in Peers, and the destination port in Ports or, for named ports,
// daddr . proto . port in Named. An empty Peers matches any address and
// empty Ports and Named match any port. A combination chain's rules jump
// to policy chains and end with a drop.
type Rule struct {
	Dir   Direction
	Peers string
	Ports string
	Named string
	Jump  string
	Drop  bool
	// Policy and Index say where the rule comes from ("ns/name", rule
	// number), for counters and explain.
	Policy string
	Index  int
}

// Chain is a non-base chain.
type Chain struct {
	// Policy is "ns/name" for a policy's chain; empty for a combination
	// chain. Not a kernel object: explain reads it.
	Policy string
	Rules  []Rule
}

// State is the desired content of the policy table.
type State struct {
	Sets   map[string]*Set
	Chains map[string]*Chain
	// Verdict maps: local pod address → chain.
	Ingress, Egress map[netip.Addr]string
}

func newState() *State {
	return &State{Sets: map[string]*Set{}, Chains: map[string]*Chain{},
		Ingress: map[netip.Addr]string{}, Egress: map[netip.Addr]string{}}
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := newState()
	for n, st := range s.Sets {
		c.Sets[n] = &Set{Kind: st.Kind, Elems: slices.Clone(st.Elems)}
	}
	for n, ch := range s.Chains {
		c.Chains[n] = &Chain{Policy: ch.Policy, Rules: slices.Clone(ch.Rules)}
	}
	for a, v := range s.Ingress {
		c.Ingress[a] = v
	}
	for a, v := range s.Egress {
		c.Egress[a] = v
	}
	return c
}

// ElemString prints an element in nft syntax for a set kind.
func ElemString(k SetKind, e Elem) string {
	switch k {
	case SetPeers:
		if e.Lo == e.Hi {
			return addr(e.Lo).String()
		}
		if p, ok := rangePrefix(e.Lo, e.Hi); ok {
			return p.String()
		}
		return addr(e.Lo).String() + "-" + addr(e.Hi).String()
	case SetPorts:
		if e.PortLo == e.PortHi {
			return fmt.Sprintf("%s . %d", e.Proto, e.PortLo)
		}
		return fmt.Sprintf("%s . %d-%d", e.Proto, e.PortLo, e.PortHi)
	}
	return fmt.Sprintf("%s . %s . %d", addr(e.Lo), e.Proto, e.PortLo)
}

// rangePrefix reports whether lo..hi is exactly one prefix.
func rangePrefix(lo, hi uint32) (netip.Prefix, bool) {
	size := uint64(hi) - uint64(lo) + 1
	if size&(size-1) != 0 || uint64(lo)%size != 0 {
		return netip.Prefix{}, false
	}
	bits := 32
	for s := size; s > 1; s >>= 1 {
		bits--
	}
	return netip.PrefixFrom(addr(lo), bits), true
}

func (k SetKind) nftType() string {
	switch k {
	case SetPeers:
		return "type ipv4_addr; flags interval;"
	case SetPorts:
		return "type inet_proto . inet_service; flags interval;"
	}
	return "type ipv4_addr . inet_proto . inet_service;"
}

// String prints a rule in nft syntax.
func (r Rule) String() string {
	if r.Jump != "" {
		return "jump " + r.Jump
	}
	if r.Drop {
		return "counter drop"
	}
	var parts []string
	if r.Peers != "" {
		f := "saddr"
		if r.Dir == Egress {
			f = "daddr"
		}
		parts = append(parts, "ip "+f+" @"+r.Peers)
	}
	switch {
	case r.Ports != "":
		parts = append(parts, "meta l4proto . th dport @"+r.Ports)
	case r.Named != "":
		parts = append(parts, "ip daddr . meta l4proto . th dport @"+r.Named)
	}
	parts = append(parts, "counter accept")
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedAddrs(m map[netip.Addr]string) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b netip.Addr) int { return a.Compare(b) })
	return keys
}

// Render prints the whole table as an nft script (nft -f input), the form
// the golden files hold.
func (s *State) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", TableName)
	for _, m := range []struct {
		name string
		els  map[netip.Addr]string
	}{{MapEgress, s.Egress}, {MapIngress, s.Ingress}} {
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype ipv4_addr : verdict;\n", m.name)
		if len(m.els) > 0 {
			var els []string
			for _, a := range sortedAddrs(m.els) {
				els = append(els, fmt.Sprintf("%s : jump %s", a, m.els[a]))
			}
			fmt.Fprintf(&b, "\t\telements = { %s };\n", strings.Join(els, ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, n := range sortedKeys(s.Sets) {
		st := s.Sets[n]
		fmt.Fprintf(&b, "\tset %s {\n\t\t%s\n", n, st.Kind.nftType())
		if len(st.Elems) > 0 {
			var els []string
			for _, e := range st.Elems {
				els = append(els, ElemString(st.Kind, e))
			}
			fmt.Fprintf(&b, "\t\telements = { %s };\n", strings.Join(els, ", "))
		}
		b.WriteString("\t}\n")
	}
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook forward priority filter; policy accept;\n", ChainEgress)
	fmt.Fprintf(&b, "\t\tct state established,related accept\n\t\tip saddr vmap @%s\n\t}\n", MapEgress)
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook forward priority filter + 1; policy accept;\n", ChainIngress)
	fmt.Fprintf(&b, "\t\tct state established,related accept\n\t\tip daddr vmap @%s\n\t}\n", MapIngress)
	for _, n := range sortedKeys(s.Chains) {
		fmt.Fprintf(&b, "\tchain %s {\n", n)
		for _, r := range s.Chains[n].Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
