package policy

import (
	"net/netip"
	"sort"
)

// Packet is the first packet of a connection, after any Service DNAT.
type Packet struct {
	Src, Dst netip.Addr
	Proto    Proto
	Port     uint16 // destination port
}

// Step is one side's decision: the source's egress or the destination's
// ingress.
type Step struct {
	// Isolated: some policy selects the pod in this direction; when not,
	// everything is allowed.
	Isolated bool
	// Policies are the selecting policies ("ns/name").
	Policies []string
	// Allowed by the rules in By (every rule that matches, in chain order).
	Allowed bool
	By      []Rule
}

// Decision is what the table does with a packet that starts a connection
// (replies of allowed connections are accepted as established).
type Decision struct {
	Egress, Ingress Step
}

// Allowed reports whether the packet is delivered.
func (d Decision) Allowed() bool { return d.Egress.Allowed && d.Ingress.Allowed }

// Evaluate runs a packet through the state as the kernel runs it through
// the table's forward chains: the source's egress chain, then the
// destination's ingress chain. Traffic from or to the node itself never
// passes the forward hook and is not the table's to decide.
func (s *State) Evaluate(p Packet) Decision {
	return Decision{
		Egress:  s.step(s.Egress[p.Src], p),
		Ingress: s.step(s.Ingress[p.Dst], p),
	}
}

func (s *State) step(combo string, p Packet) Step {
	c := s.Chains[combo]
	if c == nil {
		return Step{Allowed: true}
	}
	st := Step{Isolated: true}
	for _, j := range c.Rules {
		pc := s.Chains[j.Jump]
		if pc == nil {
			continue
		}
		st.Policies = append(st.Policies, pc.Policy)
		for _, r := range pc.Rules {
			if s.matches(r, p) {
				st.Allowed = true
				st.By = append(st.By, r)
			}
		}
	}
	sort.Strings(st.Policies)
	return st
}

func (s *State) matches(r Rule, p Packet) bool {
	peer := p.Src
	if r.Dir == Egress {
		peer = p.Dst
	}
	if r.Peers != "" && !s.contains(r.Peers, Elem{Lo: u32(peer), Hi: u32(peer)}) {
		return false
	}
	if r.Ports != "" && !s.contains(r.Ports, Elem{Proto: p.Proto, PortLo: p.Port, PortHi: p.Port}) {
		return false
	}
	if r.Named != "" && !s.contains(r.Named, Elem{Lo: u32(p.Dst), Hi: u32(p.Dst), Proto: p.Proto, PortLo: p.Port, PortHi: p.Port}) {
		return false
	}
	return true
}

// contains looks an element up as the kernel does: an address in a range,
// a port in a protocol's range, an exact (address, protocol, port).
func (s *State) contains(set string, k Elem) bool {
	st := s.Sets[set]
	if st == nil {
		return false
	}
	for _, e := range st.Elems {
		switch st.Kind {
		case SetPeers:
			if e.Lo <= k.Lo && k.Lo <= e.Hi {
				return true
			}
		case SetPorts:
			if e.Proto == k.Proto && e.PortLo <= k.PortLo && k.PortLo <= e.PortHi {
				return true
			}
		case SetNamed:
			if e.Lo == k.Lo && e.Proto == k.Proto && e.PortLo == k.PortLo {
				return true
			}
		}
	}
	return false
}
