// Package nft builds nftables rules and set elements over netlink
// (github.com/google/nftables), so programming the datapath never spawns a
// process. It holds only the vocabulary the project's rulesets use: matches
// on interface names, Ethernet, ARP and IPv4 fields, lookups in sets and maps,
// header rewrites, counters, masquerade and SNAT.
//
// Every builder returns a []expr.Any fragment; Rule concatenates fragments.
// Simple matches use register 1; concatenated keys use the 32-bit registers
// from NFT_REG32_00 (8) on, as the nft tool does.
package nft

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Register numbers.
const (
	reg1   = 1 // NFT_REG_1, 16 bytes
	reg32a = 8 // NFT_REG32_00, first of the 4-byte registers used for concatenations
)

// Ethernet types.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
)

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// Header fields: base, offset, length.
type field struct {
	base   expr.PayloadBase
	offset uint32
	len    uint32
}

var (
	etherDaddr = field{expr.PayloadBaseLLHeader, 0, 6}
	etherSaddr = field{expr.PayloadBaseLLHeader, 6, 6}
	etherType  = field{expr.PayloadBaseLLHeader, 12, 2}
	ipProto    = field{expr.PayloadBaseNetworkHeader, 9, 1}
	ipSaddr    = field{expr.PayloadBaseNetworkHeader, 12, 4}
	ipDaddr    = field{expr.PayloadBaseNetworkHeader, 16, 4}
	arpOp      = field{expr.PayloadBaseNetworkHeader, 6, 2}
	arpSHA     = field{expr.PayloadBaseNetworkHeader, 8, 6}
	arpSPA     = field{expr.PayloadBaseNetworkHeader, 14, 4}
	arpTHA     = field{expr.PayloadBaseNetworkHeader, 18, 6}
	arpTPA     = field{expr.PayloadBaseNetworkHeader, 24, 4}
	thDport    = field{expr.PayloadBaseTransportHeader, 2, 2}
)

// Field names the header fields rules match on.
type Field int

// The fields.
const (
	EtherSaddr Field = iota
	EtherDaddr
	IPSaddr
	IPDaddr
	ARPSenderMAC
	ARPSenderIP
	ARPTargetMAC
	ARPTargetIP
)

func (f Field) field() field {
	switch f {
	case EtherSaddr:
		return etherSaddr
	case EtherDaddr:
		return etherDaddr
	case IPSaddr:
		return ipSaddr
	case IPDaddr:
		return ipDaddr
	case ARPSenderMAC:
		return arpSHA
	case ARPSenderIP:
		return arpSPA
	case ARPTargetMAC:
		return arpTHA
	case ARPTargetIP:
		return arpTPA
	}
	panic(fmt.Sprintf("nft: unknown field %d", f))
}

func load(f field, reg uint32) expr.Any {
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: f.base, Offset: f.offset, Len: f.len}
}

func cmp(op expr.CmpOp, reg uint32, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: reg, Data: data}
}

func eqOp(eq bool) expr.CmpOp {
	if eq {
		return expr.CmpOpEq
	}
	return expr.CmpOpNeq
}

// IfName pads an interface name to IFNAMSIZ as the kernel stores it.
func IfName(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// ifnameData is what an ifname comparison compares: the whole padded name,
// or only the prefix for a wildcard ("azv*").
func ifnameData(name string) []byte {
	if n := len(name); n > 0 && name[n-1] == '*' {
		return []byte(name[:n-1])
	}
	return append([]byte(name), 0)
}

// IIFName matches (eq) or excludes (!eq) an input interface name; a trailing
// "*" matches a prefix. Equivalent to: iifname "eth0" / iifname != "azv*".
func IIFName(name string, eq bool) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, cmp(eqOp(eq), reg1, ifnameData(name))}
}

// OIFName matches an output interface name. Equivalent to: oifname "eth0".
func OIFName(name string, eq bool) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1}, cmp(eqOp(eq), reg1, ifnameData(name))}
}

// EtherType matches the Ethernet type. Equivalent to: ether type ip.
func EtherType(t uint16) []expr.Any {
	return []expr.Any{load(etherType, reg1), cmp(expr.CmpOpEq, reg1, be16(t))}
}

// ARPHRDEther is the interface type of Ethernet devices.
const ARPHRDEther = unix.ARPHRD_ETHER

// IIFType matches the input interface's hardware type. In the netdev and
// bridge families, nft puts "meta iiftype ether" before Ethernet header
// matches; rules that carry it list as "ether saddr ..." instead of raw
// payload expressions. Equivalent to: meta iiftype ether.
func IIFType(t uint16) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: reg1}, cmp(expr.CmpOpEq, reg1, binary.NativeEndian.AppendUint16(nil, t))}
}

// MetaProtocol matches the packet's protocol in families without a link-layer
// header in reach (ip, inet). Equivalent to: meta protocol ip.
func MetaProtocol(t uint16) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1}, cmp(expr.CmpOpEq, reg1, be16(t))}
}

// ARPOp matches an ARP operation. Equivalent to: arp operation reply.
func ARPOp(op uint16) []expr.Any {
	return []expr.Any{load(arpOp, reg1), cmp(expr.CmpOpEq, reg1, be16(op))}
}

// MAC compares a MAC field. Equivalent to: ether saddr != 00:0d:3a:..
func MAC(f Field, mac net.HardwareAddr, eq bool) []expr.Any {
	return []expr.Any{load(f.field(), reg1), cmp(eqOp(eq), reg1, []byte(mac))}
}

// IP compares an IPv4 field. Equivalent to: ip daddr 168.63.129.16.
func IP(f Field, a netip.Addr, eq bool) []expr.Any {
	b := a.As4()
	return []expr.Any{load(f.field(), reg1), cmp(eqOp(eq), reg1, b[:])}
}

// L4Proto matches the IPv4 protocol. Equivalent to: ip protocol tcp.
func L4Proto(proto byte) []expr.Any {
	return []expr.Any{load(ipProto, reg1), cmp(expr.CmpOpEq, reg1, []byte{proto})}
}

// DportIn matches the transport destination port against a set of
// inet_service. Equivalent to: th dport @set.
func DportIn(s *nftables.Set, in bool) []expr.Any {
	return []expr.Any{load(thDport, reg1), &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: !in}}
}

// In looks a field up in a set (or the keys of a map).
// Equivalent to: ip daddr @nomasq / ip daddr != @nomasq.
func In(f Field, s *nftables.Set, in bool) []expr.Any {
	return []expr.Any{load(f.field(), reg1), &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: !in}}
}

// Key is one component of a concatenated lookup key.
type Key int

// Concatenation components.
const (
	KeyIIFName Key = iota
	KeyEtherSaddr
	KeyIPSaddr
	KeyIPDaddr
	KeyARPSenderMAC
	KeyARPSenderIP
	KeyL4Proto
	KeyTHDport
)

// InConcat looks a concatenation of keys up in a set.
// Equivalent to: iifname . ether saddr . ip saddr != @pods.
func InConcat(s *nftables.Set, in bool, keys ...Key) []expr.Any {
	var out []expr.Any
	reg := uint32(reg32a)
	for _, k := range keys {
		var e expr.Any
		var size uint32
		switch k {
		case KeyIIFName:
			e, size = &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg}, 16
		case KeyEtherSaddr:
			e, size = load(etherSaddr, reg), 6
		case KeyIPSaddr:
			e, size = load(ipSaddr, reg), 4
		case KeyIPDaddr:
			e, size = load(ipDaddr, reg), 4
		case KeyARPSenderMAC:
			e, size = load(arpSHA, reg), 6
		case KeyARPSenderIP:
			e, size = load(arpSPA, reg), 4
		case KeyL4Proto:
			e, size = &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}, 1
		case KeyTHDport:
			e, size = load(thDport, reg), 2
		default:
			panic(fmt.Sprintf("nft: unknown key %d", k))
		}
		out = append(out, e)
		reg += (size + 3) / 4
	}
	return append(out, &expr.Lookup{SourceRegister: reg32a, SetName: s.Name, SetID: s.ID, Invert: !in})
}

// SetMAC writes a constant into a MAC field.
// Equivalent to: ether saddr set 00:0d:3a:..
func SetMAC(f Field, mac net.HardwareAddr) []expr.Any {
	fl := f.field()
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte(mac)},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: fl.base, Offset: fl.offset, Len: fl.len},
	}
}

// SetMACFromMap writes into MAC field dst the value map m holds for the IPv4
// field key; the rule stops matching when the key is not in the map.
// Equivalent to: ether daddr set ip daddr map @pods.
func SetMACFromMap(dst Field, key Field, m *nftables.Set) []expr.Any {
	d := dst.field()
	return []expr.Any{
		load(key.field(), reg1),
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: d.base, Offset: d.offset, Len: d.len},
	}
}

// PktType matches the packet type (unix.PACKET_HOST, PACKET_OTHERHOST...).
// Equivalent to: meta pkttype otherhost.
func PktType(t byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPKTTYPE, Register: reg1}, cmp(expr.CmpOpEq, reg1, []byte{t})}
}

// SetPktTypeHost marks the packet as addressed to this host, so a bridge
// hands it to the local IP stack. Equivalent to: meta pkttype set host.
func SetPktTypeHost() []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte{unix.PACKET_HOST}},
		&expr.Meta{Key: expr.MetaKeyPKTTYPE, SourceRegister: true, Register: reg1},
	}
}

// FibAddrType matches the route type of an address.
// Equivalent to: fib daddr type local / fib saddr type != local.
func FibAddrType(daddr bool, rtnType uint32, eq bool) []expr.Any {
	f := &expr.Fib{Register: reg1, ResultADDRTYPE: true}
	if daddr {
		f.FlagDADDR = true
	} else {
		f.FlagSADDR = true
	}
	return []expr.Any{f, cmp(eqOp(eq), reg1, binary.NativeEndian.AppendUint32(nil, rtnType))}
}

// Conntrack states, as bits for CtState.
const (
	CtStateEstablished = expr.CtStateBitESTABLISHED
	CtStateRelated     = expr.CtStateBitRELATED
	CtStateNew         = expr.CtStateBitNEW
	CtStateInvalid     = expr.CtStateBitINVALID
)

// CtState matches packets whose conntrack state is any of the given bits.
// Equivalent to: ct state established,related.
func CtState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, reg1, make([]byte, 4)),
	}
}

// RTNLocal is the route type of a local address (RTN_LOCAL).
const RTNLocal = unix.RTN_LOCAL

// Counter counts packets and bytes. Equivalent to: counter.
func Counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

// NamedCounter counts into a named counter object. Equivalent to: counter name "x".
func NamedCounter(name string) []expr.Any {
	return []expr.Any{&expr.Objref{Type: 1 /* NFT_OBJECT_COUNTER */, Name: name}}
}

// Verdicts.
func Drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
func Accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func Return() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}} }

// Masquerade rewrites the source to the output interface's address.
// Equivalent to: masquerade.
func Masquerade() []expr.Any { return []expr.Any{&expr.Masq{}} }

// SNATFromMap rewrites the IPv4 source to the address map m holds for the
// source. Equivalent to: snat ip to ip saddr map @public.
func SNATFromMap(m *nftables.Set) []expr.Any {
	return []expr.Any{
		load(ipSaddr, reg1),
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1},
	}
}

// Rule assembles fragments into a rule of chain c.
func Rule(c *nftables.Chain, parts ...[]expr.Any) *nftables.Rule {
	var exprs []expr.Any
	for _, p := range parts {
		exprs = append(exprs, p...)
	}
	return &nftables.Rule{Table: c.Table, Chain: c, Exprs: exprs}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// Element keys and values.

// IPv4Key encodes an IPv4 address as a set key.
func IPv4Key(a netip.Addr) []byte { b := a.As4(); return b[:] }

// ConcatKey joins key components, padding each to a 4-byte boundary as
// concatenated set keys are laid out.
func ConcatKey(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	return out
}

// PortKey encodes a transport port as an inet_service key.
func PortKey(p uint16) []byte { return be16(p) }

// IPIn matches an IPv4 field against a prefix.
// Equivalent to: ip daddr 10.0.16.0/28.
func IPIn(f Field, p netip.Prefix) []expr.Any { return IPInPrefix(f, p, true) }

// IPInPrefix matches an IPv4 field inside (in) or outside a prefix.
// Equivalent to: ip saddr [!=] 10.244.1.0/24.
func IPInPrefix(f Field, p netip.Prefix, in bool) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	b := p.Masked().Addr().As4()
	return []expr.Any{
		load(f.field(), reg1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		cmp(eqOp(in), reg1, b[:]),
	}
}

// SetMark sets the packet's mark.
// Equivalent to: meta mark set 0x3e8.
func SetMark(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: binary.NativeEndian.AppendUint32(nil, mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// TCPDport matches TCP to one destination port.
// Equivalent to: tcp dport 443.
func TCPDport(port uint16) []expr.Any {
	return append(L4Proto(unix.IPPROTO_TCP), load(thDport, reg1), cmp(expr.CmpOpEq, reg1, be16(port)))
}

// DNAT rewrites the IPv4 destination. Equivalent to: dnat ip to 10.0.16.4.
func DNAT(to netip.Addr) []expr.Any {
	b := to.As4()
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: b[:]},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1},
	}
}

// DNATRoundRobin rewrites the IPv4 destination to the address map m holds
// for an incrementing counter modulo n: the backends take turns.
// Equivalent to: dnat ip to numgen inc mod N map @m.
func DNATRoundRobin(m *nftables.Set, n uint32) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: reg1, Modulus: n, Type: unix.NFT_NG_INCREMENTAL},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1},
	}
}

// VMap looks an IPv4 field up in a verdict map and takes the verdict it
// holds; nothing happens when the key is absent.
// Equivalent to: ip saddr vmap @egress.
func VMap(f Field, m *nftables.Set) []expr.Any {
	return []expr.Any{load(f.field(), reg1),
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0 /* NFT_REG_VERDICT */, IsDestRegSet: true, SetName: m.Name, SetID: m.ID}}
}

// Jump continues in another chain and comes back. Equivalent to: jump CHAIN.
func Jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
