package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/nft"
)

// Nftables is the policy table in one network namespace's nftables.
type Nftables struct {
	conn *nftables.Conn
	ns   *os.File
}

// socketBuffer is the netlink socket's send and receive buffer: a cold
// build of a large cluster's table is one transaction of several MB, and
// the kernel takes it only whole (SO_SNDBUFFORCE: the socket's own buffer,
// not the node's limits).
const socketBuffer = 256 << 20

// elemsPerMessage bounds one netlink message's element list, whose
// attribute length is 16 bits.
const elemsPerMessage = 400

// OpenNftables opens the policy table of the network namespace mounted at
// nsPath ("" for the caller's own).
func OpenNftables(nsPath string) (*Nftables, error) {
	n := &Nftables{}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer))
		}); err != nil {
			return err
		}
		return serr
	})}
	if nsPath != "" {
		f, err := os.Open(nsPath)
		if err != nil {
			return nil, fmt.Errorf("open policy table in %s: %w", nsPath, err)
		}
		n.ns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("open policy table in %s: %w", nsPath, err)
	}
	n.conn = c
	return n, nil
}

// Close releases the connection.
func (n *Nftables) Close() error {
	var err error
	if n.conn != nil {
		err = n.conn.CloseLasting()
	}
	if n.ns != nil {
		err = errors.Join(err, n.ns.Close())
	}
	return err
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
}

// nftSet describes a set of the table to the netlink library.
func nftSet(name string, k SetKind) *nftables.Set {
	s := &nftables.Set{Table: table(), Name: name}
	switch k {
	case SetPeers:
		s.Interval, s.KeyType = true, nftables.TypeIPAddr
	case SetPorts:
		s.Interval, s.Concatenation = true, true
		s.KeyType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	case SetNamed:
		s.Concatenation = true
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	}
	return s
}

func verdictMap(name string) *nftables.Set {
	return &nftables.Set{Table: table(), Name: name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
}

func chain(name string) *nftables.Chain { return &nftables.Chain{Table: table(), Name: name} }

// encodeElems is elements as the kernel holds them: a peer range is a
// start element and an interval end (the address after it, left out at the
// top of the address space); a port range is a key and a key end.
func encodeElems(k SetKind, elems []Elem) []nftables.SetElement {
	var out []nftables.SetElement
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for _, e := range elems {
		switch k {
		case SetPeers:
			out = append(out, nftables.SetElement{Key: be32(e.Lo)})
			if e.Hi != 0xffffffff {
				out = append(out, nftables.SetElement{Key: be32(e.Hi + 1), IntervalEnd: true})
			}
		case SetPorts:
			out = append(out, nftables.SetElement{
				Key:    nft.ConcatKey([]byte{byte(e.Proto)}, nft.PortKey(e.PortLo)),
				KeyEnd: nft.ConcatKey([]byte{byte(e.Proto)}, nft.PortKey(e.PortHi))})
		case SetNamed:
			out = append(out, nftables.SetElement{Key: nft.ConcatKey(be32(e.Lo), []byte{byte(e.Proto)}, nft.PortKey(e.PortLo))})
		}
	}
	return out
}

func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}

// queueRules adds a chain's rules to the transaction.
func (n *Nftables) queueRules(name string, rules []Rule) {
	ch := chain(name)
	for _, r := range rules {
		switch {
		case r.Jump != "":
			n.conn.AddRule(nft.Rule(ch, nft.Jump(r.Jump)))
		case r.Drop:
			n.conn.AddRule(nft.Rule(ch, nft.Counter(), nft.Drop()))
		default:
			var parts [][]expr.Any
			if r.Peers != "" {
				f := nft.IPSaddr
				if r.Dir == Egress {
					f = nft.IPDaddr
				}
				parts = append(parts, nft.In(f, nftSet(r.Peers, SetPeers), true))
			}
			switch {
			case r.Ports != "":
				parts = append(parts, nft.InConcat(nftSet(r.Ports, SetPorts), true, nft.KeyL4Proto, nft.KeyTHDport))
			case r.Named != "":
				parts = append(parts, nft.InConcat(nftSet(r.Named, SetNamed), true, nft.KeyIPDaddr, nft.KeyL4Proto, nft.KeyTHDport))
			}
			parts = append(parts, nft.Counter(), nft.Accept())
			n.conn.AddRule(nft.Rule(ch, parts...))
		}
	}
}

// queue adds operations to the transaction.
func (n *Nftables) queue(ops []Op) error {
	for _, o := range ops {
		switch o.Kind {
		case OpAddSet:
			if err := n.conn.AddSet(nftSet(o.Name, o.SetKind), nil); err != nil {
				return fmt.Errorf("%s: %w", o, err)
			}
		case OpAddChain:
			n.conn.AddChain(chain(o.Name))
		case OpFlushChain:
			n.conn.FlushChain(chain(o.Name))
		case OpAddRules:
			n.queueRules(o.Name, o.Rules)
		case OpAddElems, OpDelElems:
			s := nftSet(o.Name, o.SetKind)
			for _, els := range chunks(encodeElems(o.SetKind, o.Elems), elemsPerMessage) {
				var err error
				if o.Kind == OpAddElems {
					err = n.conn.SetAddElements(s, els)
				} else {
					err = n.conn.SetDeleteElements(s, els)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", o.Name, err)
				}
			}
		case OpAddVerdicts, OpDelVerdicts:
			var els []nftables.SetElement
			for _, v := range o.Verdicts {
				e := nftables.SetElement{Key: nft.IPv4Key(v.Addr)}
				if o.Kind == OpAddVerdicts {
					e.VerdictData = &expr.Verdict{Kind: expr.VerdictJump, Chain: v.Chain}
				}
				els = append(els, e)
			}
			for _, part := range chunks(els, elemsPerMessage) {
				var err error
				if o.Kind == OpAddVerdicts {
					err = n.conn.SetAddElements(verdictMap(o.Name), part)
				} else {
					err = n.conn.SetDeleteElements(verdictMap(o.Name), part)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", o.Name, err)
				}
			}
		case OpDelChain:
			n.conn.FlushChain(chain(o.Name))
			n.conn.DelChain(chain(o.Name))
		case OpDelSet:
			n.conn.DelSet(nftSet(o.Name, o.SetKind))
		}
	}
	return nil
}

func (n *Nftables) flush(what string) error {
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("%s %s: %w", what, TableName, err)
	}
	return nil
}

// Replace makes the table hold exactly s in one transaction: the old table
// (if any) goes and the new one comes at the same instant, so pods stay
// enforced across an agent restart. Equivalent to: nft -f of
// "table ip vnetcni-policy {}; delete table ip vnetcni-policy;" and s.Render().
func (n *Nftables) Replace(s *State) error {
	t := table()
	n.conn.AddTable(t)
	n.conn.DelTable(t)
	n.conn.AddTable(t)
	for _, m := range []string{MapEgress, MapIngress} {
		if err := n.conn.AddSet(verdictMap(m), nil); err != nil {
			return fmt.Errorf("replace %s: %w", TableName, err)
		}
	}
	if err := n.queue(Diff(nil, s)); err != nil {
		return fmt.Errorf("replace %s: %w", TableName, err)
	}
	for _, b := range []struct {
		name, m string
		prio    int32
		key     nft.Field
	}{{ChainEgress, MapEgress, EgressPriority, nft.IPSaddr}, {ChainIngress, MapIngress, IngressPriority, nft.IPDaddr}} {
		prio := nftables.ChainPriority(b.prio)
		policy := nftables.ChainPolicyAccept
		c := n.conn.AddChain(&nftables.Chain{Table: t, Name: b.name, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: &prio, Policy: &policy})
		// Replies of allowed connections (and their ICMP errors) pass.
		n.conn.AddRule(nft.Rule(c, nft.CtState(nft.CtStateEstablished|nft.CtStateRelated), nft.Accept()))
		n.conn.AddRule(nft.Rule(c, nft.VMap(b.key, verdictMap(b.m))))
	}
	return n.flush("replace")
}

// Update applies operations (from Diff) in one transaction.
func (n *Nftables) Update(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	if err := n.queue(ops); err != nil {
		return fmt.Errorf("update %s: %w", TableName, err)
	}
	return n.flush("update")
}

// Remove deletes the table; a missing table is not an error.
// Equivalent to: nft delete table ip vnetcni-policy.
func (n *Nftables) Remove() error {
	n.conn.DelTable(table())
	if err := n.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) && !strings.HasSuffix(err.Error(), unix.ENOENT.Error()) {
		return fmt.Errorf("remove %s: %w", TableName, err)
	}
	return nil
}

// Present reports whether the table exists.
func (n *Nftables) Present() bool {
	_, err := n.conn.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
	return err == nil
}

// Counts are packets and bytes a policy's rules accepted, and that were
// dropped at pods it selects.
type Counts struct {
	AllowedPackets, AllowedBytes uint64
	DeniedPackets, DeniedBytes   uint64
}

// CounterKey names a policy's counters in one direction: "ns/name ingress".
func CounterKey(policy string, d Direction) string { return policy + " " + d.String() }

// Counters reads the kernel's counters for the policies of s (the state
// the table holds), keyed by CounterKey. A drop counts for every policy
// that selected the pod in that direction: the packet matched none of
// them. Equivalent to: nft list chain ip vnetcni-policy <chain>, per chain.
func (n *Nftables) Counters(s *State) (map[string]Counts, error) {
	out := map[string]Counts{}
	counter := func(r *nftables.Rule) (p, b uint64) {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				return c.Packets, c.Bytes
			}
		}
		return 0, 0
	}
	for _, name := range sortedKeys(s.Chains) {
		ch := s.Chains[name]
		rules, err := n.conn.GetRules(table(), chain(name))
		if err != nil {
			return nil, fmt.Errorf("read counters of %s: %w", name, err)
		}
		if ch.Policy != "" {
			d := Ingress
			if strings.HasSuffix(name, "-"+dirTag(Egress)) {
				d = Egress
			}
			k := CounterKey(ch.Policy, d)
			c := out[k]
			for _, r := range rules {
				p, b := counter(r)
				c.AllowedPackets += p
				c.AllowedBytes += b
			}
			out[k] = c
			continue
		}
		if len(rules) == 0 {
			continue
		}
		p, b := counter(rules[len(rules)-1]) // the drop
		for _, r := range ch.Rules {
			if pc := s.Chains[r.Jump]; pc != nil {
				k := CounterKey(pc.Policy, r.Dir)
				c := out[k]
				c.DeniedPackets += p
				c.DeniedBytes += b
				out[k] = c
			}
		}
	}
	return out, nil
}
