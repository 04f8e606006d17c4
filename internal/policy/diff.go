package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// OpKind is what an operation does.
type OpKind int

// The operations, in the order Diff emits them: objects are created before
// anything refers to them and deleted after nothing does.
const (
	OpAddSet OpKind = iota
	OpAddChain
	OpFlushChain
	OpAddRules
	OpDelElems
	OpAddElems
	OpDelVerdicts
	OpAddVerdicts
	OpDelChain
	OpDelSet
)

// Verdict is one element of a verdict map: address → jump chain.
type Verdict struct {
	Addr  netip.Addr
	Chain string
}

// Op is one change to the policy table. Name is the set, chain or map it
// changes.
type Op struct {
	Kind     OpKind
	Name     string
	SetKind  SetKind
	Elems    []Elem
	Rules    []Rule
	Verdicts []Verdict
}

// String prints the operation as nft commands (one per line).
func (o Op) String() string {
	t := "ip " + TableName + " "
	switch o.Kind {
	case OpAddSet:
		return fmt.Sprintf("add set %s%s { %s }", t, o.Name, o.SetKind.nftType())
	case OpAddChain:
		return "add chain " + t + o.Name
	case OpFlushChain:
		return "flush chain " + t + o.Name
	case OpAddRules:
		var lines []string
		for _, r := range o.Rules {
			lines = append(lines, "add rule "+t+o.Name+" "+r.String())
		}
		return strings.Join(lines, "\n")
	case OpDelElems, OpAddElems:
		var els []string
		for _, e := range o.Elems {
			els = append(els, ElemString(o.SetKind, e))
		}
		verb := "add"
		if o.Kind == OpDelElems {
			verb = "delete"
		}
		return fmt.Sprintf("%s element %s%s { %s }", verb, t, o.Name, strings.Join(els, ", "))
	case OpDelVerdicts:
		var els []string
		for _, v := range o.Verdicts {
			els = append(els, v.Addr.String())
		}
		return fmt.Sprintf("delete element %s%s { %s }", t, o.Name, strings.Join(els, ", "))
	case OpAddVerdicts:
		var els []string
		for _, v := range o.Verdicts {
			els = append(els, v.Addr.String()+" : jump "+v.Chain)
		}
		return fmt.Sprintf("add element %s%s { %s }", t, o.Name, strings.Join(els, ", "))
	case OpDelChain:
		return "delete chain " + t + o.Name
	case OpDelSet:
		return "delete set " + t + o.Name
	}
	return fmt.Sprintf("op %d", o.Kind)
}

// Script prints operations as an nft script.
func Script(ops []Op) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Diff returns the operations that turn the table holding old into one
// holding new: element additions and removals for sets and verdict maps,
// and whole sets and chains only where policies or combinations of them
// appear, change or go. A nil old is an empty table.
func Diff(old, new *State) []Op {
	if old == nil {
		old = newState()
	}
	var ops []Op
	for _, n := range sortedKeys(new.Sets) {
		if _, ok := old.Sets[n]; !ok {
			ops = append(ops, Op{Kind: OpAddSet, Name: n, SetKind: new.Sets[n].Kind})
		}
	}
	for _, n := range sortedKeys(new.Chains) {
		if _, ok := old.Chains[n]; !ok {
			ops = append(ops, Op{Kind: OpAddChain, Name: n})
		}
	}
	for _, n := range sortedKeys(new.Chains) {
		nc := new.Chains[n]
		oc, existed := old.Chains[n]
		if existed && (oc == nc || slices.Equal(oc.Rules, nc.Rules)) {
			continue
		}
		if existed {
			ops = append(ops, Op{Kind: OpFlushChain, Name: n})
		}
		if len(nc.Rules) > 0 {
			ops = append(ops, Op{Kind: OpAddRules, Name: n, Rules: slices.Clone(nc.Rules)})
		}
	}
	var dels, adds []Op
	for _, n := range sortedKeys(new.Sets) {
		ns := new.Sets[n]
		var oldElems []Elem
		if os, ok := old.Sets[n]; ok {
			if os == ns {
				continue // the same compiled set: unchanged
			}
			oldElems = os.Elems
		}
		gone, added := diffElems(oldElems, ns.Elems)
		if len(gone) > 0 {
			dels = append(dels, Op{Kind: OpDelElems, Name: n, SetKind: ns.Kind, Elems: gone})
		}
		if len(added) > 0 {
			adds = append(adds, Op{Kind: OpAddElems, Name: n, SetKind: ns.Kind, Elems: added})
		}
	}
	// Removals first: an interval that grows over its neighbour must not
	// overlap it while both exist.
	ops = append(append(ops, dels...), adds...)
	for _, m := range []struct {
		name     string
		old, new map[netip.Addr]string
	}{{MapEgress, old.Egress, new.Egress}, {MapIngress, old.Ingress, new.Ingress}} {
		var del, add []Verdict
		for _, a := range sortedAddrs(m.old) {
			if c, ok := m.new[a]; !ok || c != m.old[a] {
				del = append(del, Verdict{a, m.old[a]})
			}
		}
		for _, a := range sortedAddrs(m.new) {
			if c, ok := m.old[a]; !ok || c != m.new[a] {
				add = append(add, Verdict{a, m.new[a]})
			}
		}
		if len(del) > 0 {
			ops = append(ops, Op{Kind: OpDelVerdicts, Name: m.name, Verdicts: del})
		}
		if len(add) > 0 {
			ops = append(ops, Op{Kind: OpAddVerdicts, Name: m.name, Verdicts: add})
		}
	}
	// Combination chains ("pods-…") jump to policy chains ("pol-…"): sorted
	// names delete them first.
	for _, n := range sortedKeys(old.Chains) {
		if _, ok := new.Chains[n]; !ok {
			ops = append(ops, Op{Kind: OpDelChain, Name: n})
		}
	}
	for _, n := range sortedKeys(old.Sets) {
		if _, ok := new.Sets[n]; !ok {
			ops = append(ops, Op{Kind: OpDelSet, Name: n, SetKind: old.Sets[n].Kind})
		}
	}
	return ops
}

// diffElems compares two sorted element lists.
func diffElems(old, new []Elem) (gone, added []Elem) {
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case j == len(new) || (i < len(old) && old[i].less(new[j])):
			gone = append(gone, old[i])
			i++
		case i == len(old) || new[j].less(old[i]):
			added = append(added, new[j])
			j++
		default:
			i++
			j++
		}
	}
	return gone, added
}

// Apply changes s as the operations change the kernel's table; the fake
// kernel and the tests that check Diff use it.
func (s *State) Apply(ops []Op) error {
	for _, o := range ops {
		switch o.Kind {
		case OpAddSet:
			if _, ok := s.Sets[o.Name]; ok {
				return fmt.Errorf("%s: set exists", o)
			}
			s.Sets[o.Name] = &Set{Kind: o.SetKind}
		case OpAddChain:
			if _, ok := s.Chains[o.Name]; ok {
				return fmt.Errorf("%s: chain exists", o)
			}
			s.Chains[o.Name] = &Chain{}
		case OpFlushChain, OpAddRules, OpDelChain:
			c, ok := s.Chains[o.Name]
			if !ok {
				return fmt.Errorf("%s: no such chain", o)
			}
			switch o.Kind {
			case OpFlushChain:
				c.Rules = nil
			case OpAddRules:
				for _, r := range o.Rules {
					if r.Jump != "" && s.Chains[r.Jump] == nil {
						return fmt.Errorf("%s: no chain %s", o, r.Jump)
					}
					for _, set := range []string{r.Peers, r.Ports, r.Named} {
						if set != "" && s.Sets[set] == nil {
							return fmt.Errorf("%s: no set %s", o, set)
						}
					}
				}
				c.Rules = append(c.Rules, o.Rules...)
			case OpDelChain:
				if ref := s.chainUser(o.Name); ref != "" {
					return fmt.Errorf("%s: chain in use by %s", o, ref)
				}
				delete(s.Chains, o.Name)
			}
		case OpAddElems, OpDelElems:
			set, ok := s.Sets[o.Name]
			if !ok {
				return fmt.Errorf("%s: no such set", o)
			}
			if o.Kind == OpDelElems {
				gone, _ := diffElems(o.Elems, set.Elems)
				if len(gone) > 0 {
					return fmt.Errorf("%s: no element %s", o, ElemString(set.Kind, gone[0]))
				}
				set.Elems = slices.DeleteFunc(set.Elems, func(e Elem) bool { return slices.Contains(o.Elems, e) })
				continue
			}
			merged := append(slices.Clone(set.Elems), o.Elems...)
			norm := normalize(set.Kind, slices.Clone(merged))
			if len(norm) != len(merged) {
				return fmt.Errorf("%s: element exists or overlaps", o)
			}
			set.Elems = norm
		case OpAddVerdicts, OpDelVerdicts:
			m := s.Ingress
			if o.Name == MapEgress {
				m = s.Egress
			}
			for _, v := range o.Verdicts {
				_, exists := m[v.Addr]
				if o.Kind == OpDelVerdicts {
					if !exists {
						return fmt.Errorf("%s: no element %s", o, v.Addr)
					}
					delete(m, v.Addr)
					continue
				}
				if exists {
					return fmt.Errorf("%s: element %s exists", o, v.Addr)
				}
				if s.Chains[v.Chain] == nil {
					return fmt.Errorf("%s: no chain %s", o, v.Chain)
				}
				m[v.Addr] = v.Chain
			}
		case OpDelSet:
			for n, c := range s.Chains {
				for _, r := range c.Rules {
					if r.Peers == o.Name || r.Ports == o.Name || r.Named == o.Name {
						return fmt.Errorf("%s: set in use by chain %s", o, n)
					}
				}
			}
			delete(s.Sets, o.Name)
		}
	}
	return nil
}

// chainUser names a rule or verdict that still jumps to chain.
func (s *State) chainUser(chain string) string {
	for n, c := range s.Chains {
		for _, r := range c.Rules {
			if r.Jump == chain {
				return "chain " + n
			}
		}
	}
	for _, m := range []map[netip.Addr]string{s.Ingress, s.Egress} {
		for a, c := range m {
			if c == chain {
				return "verdict " + a.String()
			}
		}
	}
	return ""
}
