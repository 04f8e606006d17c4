package fabric

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Azure's DHCP, as a VM sees it: the server is 168.63.129.16; it answers
// a NIC (known by its MAC) with the NIC's primary address, the subnet's
// mask, the subnet's gateway as router, 168.63.129.16 as DNS server, a
// domain name (a per-VNet label under internal.cloudapp.net there; the
// lab's DNS suffix here), and a lease, renewal and
// rebinding time of "infinity" (0xffffffff): a client renews only when
// made to (a reboot, `networkctl renew`, a restarted client). RFC 2131
// and 2132 give the message format; only what Azure's answers use is here.

// DHCP message types (option 53).
const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpDecline  = 4
	dhcpAck      = 5
	dhcpNak      = 6
	dhcpRelease  = 7
	dhcpInform   = 8
)

// DHCP options.
const (
	optSubnetMask  = 1
	optRouter      = 3
	optDNS         = 6
	optDomainName  = 15
	optRequestedIP = 50
	optLeaseTime   = 51
	optMsgType     = 53
	optServerID    = 54
	optRenewalT1   = 58
	optRebindT2    = 59
	optEnd         = 255
	optPad         = 0
)

// DHCPInfinite is the lease, renewal and rebinding time Azure's DHCP
// gives: "infinity".
const DHCPInfinite = 0xffffffff

// DHCP's UDP ports.
const (
	DHCPServerPort = 67
	DHCPClientPort = 68
)

var dhcpMagic = []byte{99, 130, 83, 99}

// dhcpMsg is a BOOTP/DHCP message.
type dhcpMsg struct {
	op      byte // 1 request, 2 reply
	xid     uint32
	secs    uint16
	flags   uint16 // 0x8000: broadcast the reply
	ciaddr  netip.Addr
	yiaddr  netip.Addr
	siaddr  netip.Addr
	giaddr  netip.Addr
	chaddr  net.HardwareAddr
	options map[byte][]byte
}

func (m *dhcpMsg) msgType() byte {
	if v := m.options[optMsgType]; len(v) == 1 {
		return v[0]
	}
	return 0
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }

// parseDHCP decodes a DHCP message (the UDP payload).
func parseDHCP(b []byte) (*dhcpMsg, error) {
	if len(b) < 240 {
		return nil, fmt.Errorf("dhcp message of %d bytes: want at least 240", len(b))
	}
	if b[1] != 1 || b[2] != 6 {
		return nil, fmt.Errorf("dhcp hardware type %d length %d: want Ethernet (1, 6)", b[1], b[2])
	}
	if !slices.Equal(b[236:240], dhcpMagic) {
		return nil, errors.New("dhcp magic cookie missing")
	}
	m := &dhcpMsg{
		op:      b[0],
		xid:     binary.BigEndian.Uint32(b[4:8]),
		secs:    binary.BigEndian.Uint16(b[8:10]),
		flags:   binary.BigEndian.Uint16(b[10:12]),
		ciaddr:  addr4(b[12:16]),
		yiaddr:  addr4(b[16:20]),
		siaddr:  addr4(b[20:24]),
		giaddr:  addr4(b[24:28]),
		chaddr:  net.HardwareAddr(slices.Clone(b[28:34])),
		options: map[byte][]byte{},
	}
	for o := b[240:]; len(o) > 0; {
		code := o[0]
		if code == optEnd {
			break
		}
		if code == optPad {
			o = o[1:]
			continue
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			return nil, fmt.Errorf("dhcp option %d truncated", code)
		}
		m.options[code] = append(m.options[code], o[2:2+int(o[1])]...)
		o = o[2+int(o[1]):]
	}
	return m, nil
}

// marshal encodes the message, options in ascending order.
func (m *dhcpMsg) marshal() []byte {
	b := make([]byte, 240, 300)
	b[0], b[1], b[2] = m.op, 1, 6
	binary.BigEndian.PutUint32(b[4:8], m.xid)
	binary.BigEndian.PutUint16(b[8:10], m.secs)
	binary.BigEndian.PutUint16(b[10:12], m.flags)
	for i, a := range []netip.Addr{m.ciaddr, m.yiaddr, m.siaddr, m.giaddr} {
		if a.Is4() {
			v := a.As4()
			copy(b[12+4*i:], v[:])
		}
	}
	copy(b[28:44], m.chaddr)
	copy(b[236:240], dhcpMagic)
	codes := make([]byte, 0, len(m.options))
	for c := range m.options {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		v := m.options[c]
		for len(v) > 255 {
			b = append(append(b, c, 255), v[:255]...)
			v = v[255:]
		}
		b = append(append(b, c, byte(len(v))), v...)
	}
	b = append(b, optEnd)
	for len(b) < 300 { // BOOTP's minimum, which some clients expect
		b = append(b, optPad)
	}
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func ip4(a netip.Addr) []byte { v := a.As4(); return v[:] }

// dhcpAnswer is what Azure's DHCP answers a VM's request with, and false
// for a message it ignores (not a request, another NIC's MAC, a release).
// A request for an address that is not the NIC's primary one is refused
// (NAK), as a client moved to another NIC or subnet must start over.
func dhcpAnswer(v VMSpec, req *dhcpMsg) (*dhcpMsg, bool) {
	if req.op != 1 || !slices.Equal(req.chaddr, net.HardwareAddr(v.MAC)) {
		return nil, false
	}
	reply := &dhcpMsg{op: 2, xid: req.xid, flags: req.flags, giaddr: req.giaddr, chaddr: req.chaddr,
		ciaddr: netip.IPv4Unspecified(), yiaddr: netip.IPv4Unspecified(), siaddr: netip.IPv4Unspecified(),
		options: map[byte][]byte{optServerID: ip4(WireserverIP)}}
	switch req.msgType() {
	case dhcpDiscover:
		reply.options[optMsgType] = []byte{dhcpOffer}
	case dhcpRequest:
		asked := req.ciaddr // renewing or rebinding
		if r := req.options[optRequestedIP]; len(r) == 4 {
			asked = addr4(r) // selecting or rebooting
		}
		if asked != v.PrimaryIP {
			reply.options = map[byte][]byte{optServerID: ip4(WireserverIP), optMsgType: {dhcpNak}}
			reply.flags |= 0x8000 // the client may have no address to receive it at
			return reply, true
		}
		reply.options[optMsgType] = []byte{dhcpAck}
		reply.ciaddr = req.ciaddr
	case dhcpInform:
		reply.options[optMsgType] = []byte{dhcpAck}
		reply.ciaddr = req.ciaddr
		reply.options[optSubnetMask] = net.CIDRMask(v.Subnet.Bits(), 32)
		reply.options[optRouter] = ip4(Gateway(v.Subnet))
		reply.options[optDNS] = ip4(WireserverIP)
		reply.options[optDomainName] = []byte(DNSSuffix)
		return reply, true
	default: // decline, release, or not DHCP: nothing to say
		return nil, false
	}
	reply.yiaddr = v.PrimaryIP
	reply.options[optSubnetMask] = net.CIDRMask(v.Subnet.Bits(), 32)
	reply.options[optRouter] = ip4(Gateway(v.Subnet))
	reply.options[optDNS] = ip4(WireserverIP)
	reply.options[optDomainName] = []byte(DNSSuffix)
	reply.options[optLeaseTime] = u32(DHCPInfinite)
	reply.options[optRenewalT1] = u32(DHCPInfinite)
	reply.options[optRebindT2] = u32(DHCPInfinite)
	return reply, true
}

// netipOr parses an IPv4 address, "" being 0.0.0.0.
func netipOr(s string) netip.Addr {
	if s == "" {
		return netip.IPv4Unspecified()
	}
	return netip.MustParseAddr(s)
}
