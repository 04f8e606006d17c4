package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/nft"
)

// Rules is the static nftables configuration of one network. Pods only add
// elements to its sets and maps.
type Rules struct {
	Network string
	Mode    string
	Master  string       // the NIC, e.g. eth0
	Bridge  string       // bridge mode only
	Subnet  netip.Prefix // the pool's subnet
	// Routed is bridge mode's pod-CIDR form: the bridge is the pods'
	// router and does not enslave the NIC (Bridge.PodGateway).
	Routed        bool
	NICMAC        net.HardwareAddr
	PrimaryIP     netip.Addr
	SNAT          bool
	NonMasquerade []netip.Prefix // including the pool subnet and 168.63.129.16
	// AllowWireserver lets pods reach every port of 168.63.129.16; by
	// default they reach only its DNS (53/udp, 53/tcp).
	AllowWireserver bool
	// BlockIMDS keeps pods from 169.254.169.254.
	BlockIMDS bool
}

// WireserverIP is Azure's host address; IMDSIP the instance metadata service.
var (
	WireserverIP = netip.MustParseAddr("168.63.129.16")
	IMDSIP       = netip.MustParseAddr("169.254.169.254")
)

// TableName is the name of the network's nftables tables (one per family).
func TableName(network string) string { return "azure-vnet-" + network }

// Fingerprint identifies the static rules, so a node notices when the
// configuration that produced them changes.
func (r Rules) Fingerprint() string {
	nm := append([]netip.Prefix(nil), r.NonMasquerade...)
	sort.Slice(nm, func(i, j int) bool { return nm[i].String() < nm[j].String() })
	var s []string
	for _, p := range nm {
		s = append(s, p.String())
	}
	fp := fmt.Sprintf("v4 %s %s %s %s %s snat=%t wireserver=%t imds-blocked=%t %s", r.Mode, r.Master, r.Bridge, r.NICMAC, r.PrimaryIP,
		r.SNAT, r.AllowWireserver, r.BlockIMDS, strings.Join(s, ","))
	if r.Routed {
		fp += " routed"
	}
	return fp
}

// egress is the interface pod traffic leaves the node's IP stack through.
func (r Rules) egress() string {
	if r.Mode == ModeBridge && !r.Routed {
		return r.Bridge
	}
	return r.Master
}

// PodElem is what one pod contributes to the sets and maps.
type PodElem struct {
	HostIf string
	MAC    net.HardwareAddr
	IP     netip.Addr
}

type tables struct {
	br, ip, arp *nftables.Table
	// bridge family
	pods     *nftables.Set // ipv4_addr : ether_addr
	podMACs  *nftables.Set // ifname . ether_addr
	brPodIPs *nftables.Set // ifname . ipv4_addr
	// ip family
	podsL3   *nftables.Set // ifname . ipv4_addr (transparent mode)
	arpIPs   *nftables.Set // ifname . ipv4_addr, in the arp table (transparent mode)
	ipNomasq *nftables.Set
	// inet_proto . inet_service pods may reach on the wireserver, per family
	brWireserver, ipWireserver *nftables.Set
}

func (r Rules) tables() *tables {
	t := &tables{
		br:  &nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName(r.Network)},
		ip:  &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName(r.Network)},
		arp: &nftables.Table{Family: nftables.TableFamilyARP, Name: TableName(r.Network)},
	}
	t.pods = &nftables.Set{Table: t.br, Name: "pods", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeEtherAddr}
	t.podMACs = &nftables.Set{Table: t.br, Name: "pod-macs", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)}
	t.brPodIPs = &nftables.Set{Table: t.br, Name: "pod-ips", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
	t.podsL3 = &nftables.Set{Table: t.ip, Name: "pod-ips", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
	t.ipNomasq = &nftables.Set{Table: t.ip, Name: "nomasq", Interval: true, KeyType: nftables.TypeIPAddr}
	t.arpIPs = &nftables.Set{Table: t.arp, Name: "pod-ips", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
	wsType := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	t.brWireserver = &nftables.Set{Table: t.br, Name: "wireserver-ports", Concatenation: true, KeyType: wsType}
	t.ipWireserver = &nftables.Set{Table: t.ip, Name: "wireserver-ports", Concatenation: true, KeyType: wsType}
	return t
}

func priority(p int32) *nftables.ChainPriority { v := nftables.ChainPriority(p); return &v }

// Program installs the network's static rules atomically and, when resync is
// set, replaces the pod elements with pods (used when the tables were lost or
// are being rebuilt). Existing pod elements are kept otherwise.
func (r Rules) Program(c *nftables.Conn, resync bool, pods []PodElem) error {
	if err := r.build(&builder{Conn: c}, resync, pods); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program nftables tables %s: %w", TableName(r.Network), err)
	}
	return nil
}

// builder queues the network's static configuration on a connection and
// notes what it queued, so the same code that programs the kernel also says
// what an intact kernel holds (see Damage).
type builder struct {
	*nftables.Conn
	tables []*nftables.Table
	chains []*nftables.Chain
	sets   []*nftables.Set
	rules  map[string]int // "family table chain" → rules
	elems  map[string]int // "family table set" → static elements
}

// AddTable queues a table and notes it.
func (b *builder) AddTable(t *nftables.Table) *nftables.Table {
	b.tables = append(b.tables, t)
	return b.Conn.AddTable(t)
}

// AddChain queues a chain and notes it.
func (b *builder) AddChain(ch *nftables.Chain) *nftables.Chain {
	b.chains = append(b.chains, ch)
	return b.Conn.AddChain(ch)
}

// AddSet queues a set and notes it.
func (b *builder) AddSet(s *nftables.Set, elems []nftables.SetElement) error {
	b.sets = append(b.sets, s)
	return b.Conn.AddSet(s, elems)
}

func objKey(t *nftables.Table, name string) string {
	return familyName(t.Family) + " " + t.Name + " " + name
}

// AddRule queues a rule and counts it for its chain.
func (b *builder) AddRule(r *nftables.Rule) *nftables.Rule {
	if b.rules == nil {
		b.rules = map[string]int{}
	}
	b.rules[objKey(r.Table, r.Chain.Name)]++
	return b.Conn.AddRule(r)
}

// staticElements queues the fixed contents of a set and counts them.
func (b *builder) staticElements(s *nftables.Set, elems []nftables.SetElement) error {
	if b.elems == nil {
		b.elems = map[string]int{}
	}
	b.elems[objKey(s.Table, s.Name)] += len(elems)
	return b.SetAddElements(s, elems)
}

func (r Rules) build(c *builder, resync bool, pods []PodElem) error {
	t := r.tables()
	nomasq := nft.PrefixElements(r.NonMasquerade)

	c.AddTable(t.ip)
	ipPre := c.AddChain(&nftables.Chain{Table: t.ip, Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: priority(-300)})
	ipPost := c.AddChain(&nftables.Chain{Table: t.ip, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.FlushTable(t.ip)
	for _, s := range []*nftables.Set{t.podsL3, t.ipNomasq} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("program %s: %w", TableName(r.Network), err)
		}
	}
	c.FlushSet(t.ipNomasq)
	if err := c.staticElements(t.ipNomasq, nomasq); err != nil {
		return fmt.Errorf("program %s: %w", TableName(r.Network), err)
	}
	if r.Mode == ModeTransparent {
		// A pod may only send from its own address.
		fromPod := nft.IIFName(HostIfPrefix+"*", true)
		c.AddRule(nft.Rule(ipPre, fromPod, nft.InConcat(t.podsL3, false, nft.KeyIIFName, nft.KeyIPSaddr), nft.Counter(), nft.Drop()))
		if err := r.podGuards(c, ipPre, t.ipWireserver, fromPod, false); err != nil {
			return fmt.Errorf("program %s: %w", TableName(r.Network), err)
		}
		// Nor claim another address in ARP: the node would take a pod's
		// lie about the gateway or a neighbour into its table.
		c.AddTable(t.arp)
		// The arp family numbers its hooks NF_ARP_IN (0), NF_ARP_OUT (1).
		arpIn := c.AddChain(&nftables.Chain{Table: t.arp, Name: "input", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookRef(0), Priority: nftables.ChainPriorityFilter})
		c.FlushTable(t.arp)
		if err := c.AddSet(t.arpIPs, nil); err != nil {
			return fmt.Errorf("program %s: %w", TableName(r.Network), err)
		}
		c.AddRule(nft.Rule(arpIn, fromPod, nft.InConcat(t.arpIPs, false, nft.KeyIIFName, nft.KeyARPSenderIP), nft.Counter(), nft.Drop()))
	}
	if r.SNAT {
		// Pod traffic leaving the VNet takes the node's primary IP; the
		// node's own traffic and traffic to local addresses is left alone.
		c.AddRule(nft.Rule(ipPost, nft.OIFName(r.egress(), true),
			nft.In(nft.IPDaddr, t.ipNomasq, false),
			nft.FibAddrType(false, nft.RTNLocal, false),
			nft.FibAddrType(true, nft.RTNLocal, false),
			nft.Counter(), nft.Masquerade()))
	}

	if r.Mode == ModeBridge {
		if err := r.programBridge(c, t); err != nil {
			return err
		}
	}
	if resync {
		if r.Mode == ModeBridge {
			c.FlushSet(t.pods)
			c.FlushSet(t.podMACs)
			c.FlushSet(t.brPodIPs)
		} else {
			c.FlushSet(t.podsL3)
			c.FlushSet(t.arpIPs)
		}
		for _, p := range pods {
			if err := r.addElems(c.Conn, t, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r Rules) programBridge(c *builder, t *tables) error {
	c.AddTable(t.br)
	pre := c.AddChain(&nftables.Chain{Table: t.br, Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: priority(-300)})
	fwd := c.AddChain(&nftables.Chain{Table: t.br, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	post := c.AddChain(&nftables.Chain{Table: t.br, Name: "postrouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: priority(300)})
	c.FlushTable(t.br)
	for _, s := range []*nftables.Set{t.pods, t.podMACs, t.brPodIPs} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("program %s: %w", TableName(r.Network), err)
		}
	}
	fromNIC := nft.IIFName(r.Master, true)
	fromPod := nft.IIFName(HostIfPrefix+"*", true)
	toNIC := nft.OIFName(r.Master, true)

	if r.Routed {
		// The NIC is not on the bridge: only the pods' own guards apply.
		return r.podBridgeGuards(c, t, pre, fromPod)
	}
	// The fabric delivers every NIC address with the NIC's MAC: hand frames
	// for a pod to that pod.
	c.AddRule(nft.Rule(pre, fromNIC, nft.MAC(nft.EtherDaddr, r.NICMAC, true), nft.EtherType(nft.EtherTypeIPv4),
		nft.SetMACFromMap(nft.EtherDaddr, nft.IPDaddr, t.pods)))
	// ARP replies to a pod's request come back addressed to the NIC too.
	c.AddRule(nft.Rule(pre, fromNIC, nft.MAC(nft.EtherDaddr, r.NICMAC, true), nft.EtherType(nft.EtherTypeARP),
		nft.ARPOp(nft.ARPReply), nft.SetMACFromMap(nft.ARPTargetMAC, nft.ARPTargetIP, t.pods)))
	c.AddRule(nft.Rule(pre, fromNIC, nft.MAC(nft.EtherDaddr, r.NICMAC, true), nft.EtherType(nft.EtherTypeARP),
		nft.ARPOp(nft.ARPReply), nft.SetMACFromMap(nft.EtherDaddr, nft.ARPTargetIP, t.pods)))
	if err := r.podBridgeGuards(c, t, pre, fromPod); err != nil {
		return err
	}
	// Everything a pod sends off the node goes through the node's IP
	// stack, as if the bridge were a router: masquerading, kube-proxy and
	// portmap NAT see it and its replies, and it leaves with the NIC's
	// MAC. Only pod-to-pod traffic on the node stays on the bridge.
	c.AddRule(nft.Rule(pre, fromPod, nft.PktType(unix.PACKET_OTHERHOST), nft.EtherType(nft.EtherTypeIPv4),
		nft.In(nft.IPDaddr, t.pods, false), nft.SetMAC(nft.EtherDaddr, r.NICMAC), nft.SetPktTypeHost()))

	// The NIC's port has hairpin on (see Bridge.hairpin): a connection
	// from the fabric that the node rewrote to another VM's address (a
	// NodePort or load-balanced Service with its backend elsewhere) goes
	// back out the NIC, as routing would send it. Such a frame came in
	// addressed to the node (packet type host) and bridge netfilter gave
	// it the new next hop's MAC. Nothing else goes back: a broadcast,
	// multicast or unknown unicast from the fabric is never reflected.
	c.AddRule(nft.Rule(fwd, fromNIC, toNIC, nft.PktType(unix.PACKET_HOST), nft.Accept()))
	c.AddRule(nft.Rule(fwd, fromNIC, toNIC, nft.Counter(), nft.Drop()))

	// ARP for the node's and the pods' own addresses is answered on the
	// bridge; never ask the fabric.
	c.AddRule(nft.Rule(post, toNIC, nft.EtherType(nft.EtherTypeARP), nft.ARPOp(nft.ARPRequest),
		nft.In(nft.ARPTargetIP, t.pods, true), nft.Drop()))
	c.AddRule(nft.Rule(post, toNIC, nft.EtherType(nft.EtherTypeARP), nft.ARPOp(nft.ARPRequest),
		nft.IP(nft.ARPTargetIP, r.PrimaryIP, true), nft.Drop()))
	// The fabric carries IPv4 and ARP only.
	c.AddRule(nft.Rule(post, toNIC, etherTypeNotIPv4OrARP(), nft.Drop()))
	// The fabric accepts only the NIC's MAC as source.
	c.AddRule(nft.Rule(post, toNIC, nft.MAC(nft.EtherSaddr, r.NICMAC, false), nft.SetMAC(nft.EtherSaddr, r.NICMAC)))
	c.AddRule(nft.Rule(post, toNIC, nft.EtherType(nft.EtherTypeARP), nft.MAC(nft.ARPSenderMAC, r.NICMAC, false),
		nft.SetMAC(nft.ARPSenderMAC, r.NICMAC)))
	return nil
}

// podBridgeGuards: a pod may only send from its own MAC and address, in
// Ethernet and ARP headers alike, and reach only the wireserver's DNS.
func (r Rules) podBridgeGuards(c *builder, t *tables, pre *nftables.Chain, fromPod []expr.Any) error {
	c.AddRule(nft.Rule(pre, fromPod, nft.InConcat(t.podMACs, false, nft.KeyIIFName, nft.KeyEtherSaddr), nft.Counter(), nft.Drop()))
	c.AddRule(nft.Rule(pre, fromPod, nft.EtherType(nft.EtherTypeIPv4),
		nft.InConcat(t.brPodIPs, false, nft.KeyIIFName, nft.KeyIPSaddr), nft.Counter(), nft.Drop()))
	c.AddRule(nft.Rule(pre, fromPod, nft.EtherType(nft.EtherTypeARP),
		nft.InConcat(t.podMACs, false, nft.KeyIIFName, nft.KeyARPSenderMAC), nft.Counter(), nft.Drop()))
	c.AddRule(nft.Rule(pre, fromPod, nft.EtherType(nft.EtherTypeARP),
		nft.InConcat(t.brPodIPs, false, nft.KeyIIFName, nft.KeyARPSenderIP), nft.Counter(), nft.Drop()))
	if err := r.podGuards(c, pre, t.brWireserver, fromPod, true); err != nil {
		return fmt.Errorf("program %s: %w", TableName(r.Network), err)
	}
	return nil
}

// wireserverPorts are what pods may reach on 168.63.129.16: DNS.
func wireserverPorts() []nftables.SetElement {
	return []nftables.SetElement{
		{Key: nft.ConcatKey([]byte{unix.IPPROTO_UDP}, nft.PortKey(53))},
		{Key: nft.ConcatKey([]byte{unix.IPPROTO_TCP}, nft.PortKey(53))},
	}
}

// podGuards are the rules that keep pods from Azure's host endpoints: only
// DNS on the wireserver (its HTTP ports hand out the VM's configuration and
// certificates), and IMDS when the operator blocks it.
func (r Rules) podGuards(c *builder, chain *nftables.Chain, ports *nftables.Set, fromPod []expr.Any, bridge bool) error {
	if err := c.AddSet(ports, nil); err != nil {
		return err
	}
	c.FlushSet(ports)
	if err := c.staticElements(ports, wireserverPorts()); err != nil {
		return err
	}
	var ipv4 []expr.Any
	if bridge {
		ipv4 = nft.EtherType(nft.EtherTypeIPv4)
	}
	if !r.AllowWireserver {
		c.AddRule(nft.Rule(chain, fromPod, ipv4, nft.IP(nft.IPDaddr, WireserverIP, true),
			nft.InConcat(ports, false, nft.KeyL4Proto, nft.KeyTHDport), nft.Counter(), nft.Drop()))
	}
	if r.BlockIMDS {
		c.AddRule(nft.Rule(chain, fromPod, ipv4, nft.IP(nft.IPDaddr, IMDSIP, true), nft.Counter(), nft.Drop()))
	}
	return nil
}

// etherTypeNotIPv4OrARP matches frames that are neither IPv4 nor ARP.
// Equivalent to: ether type != { ip, arp }.
func etherTypeNotIPv4OrARP() []expr.Any {
	ld := nft.EtherType(0)[0] // the load of the ether type into register 1
	return []expr.Any{ld,
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x00}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x06}},
	}
}

// set is the set or map of the network's tables an element belongs to.
func (t *tables) set(e Element) (*nftables.Set, error) {
	switch e.Family + " " + e.Set {
	case FamilyBridge + " " + SetPods:
		return t.pods, nil
	case FamilyBridge + " " + SetPodMACs:
		return t.podMACs, nil
	case FamilyBridge + " " + SetPodIPs:
		return t.brPodIPs, nil
	case FamilyIP + " " + SetPodIPs:
		return t.podsL3, nil
	case FamilyARP + " " + SetPodIPs:
		return t.arpIPs, nil
	}
	return nil, fmt.Errorf("no set %s %s in a network's tables", e.Family, e.Set)
}

// encode is an element as the kernel holds it: pods maps an address to a
// MAC (the zero MAC when unknown, for deleting by key); pod-macs and
// pod-ips concatenate a 16-byte interface name with a MAC or an address.
func encode(e Element) nftables.SetElement {
	switch e.Set {
	case SetPods:
		return nftables.SetElement{Key: nft.IPv4Key(e.IP), Val: orZeroMAC(e.MAC)}
	case SetPodMACs:
		return nftables.SetElement{Key: nft.ConcatKey(nft.IfName(e.HostIf), e.MAC)}
	}
	return nftables.SetElement{Key: nft.ConcatKey(nft.IfName(e.HostIf), nft.IPv4Key(e.IP))}
}

// decode reads back what encode wrote.
func decode(family, set string, se nftables.SetElement) Element {
	e := Element{Family: family, Set: set}
	switch set {
	case SetPods:
		e.IP, _ = netip.AddrFromSlice(se.Key)
		e.MAC = net.HardwareAddr(append([]byte(nil), se.Val[:min(6, len(se.Val))]...))
	case SetPodMACs:
		if len(se.Key) >= 22 {
			e.HostIf = strings.TrimRight(string(se.Key[:16]), "\x00")
			e.MAC = net.HardwareAddr(append([]byte(nil), se.Key[16:22]...))
		}
	default:
		if len(se.Key) >= 20 {
			e.HostIf = strings.TrimRight(string(se.Key[:16]), "\x00")
			e.IP, _ = netip.AddrFromSlice(se.Key[16:20])
		}
	}
	return e
}

func (r Rules) addElems(c *nftables.Conn, t *tables, p PodElem) error {
	for _, e := range PodElements(r.Mode, p) {
		set, err := t.set(e)
		if err != nil {
			return err
		}
		if err := c.SetAddElements(set, []nftables.SetElement{encode(e)}); err != nil {
			return err
		}
	}
	return nil
}

// AddPod adds a pod's elements. A stale element for the same address (left
// by a crash) is replaced.
func (r Rules) AddPod(c *nftables.Conn, p PodElem) error {
	t := r.tables()
	if err := r.addElems(c, t, p); err != nil {
		return fmt.Errorf("add pod %s to %s: %w", p.IP, TableName(r.Network), err)
	}
	err := c.Flush()
	if err == nil {
		return nil
	}
	if r.Mode != ModeBridge {
		return fmt.Errorf("add pod %s to %s: %w", p.IP, TableName(r.Network), err)
	}
	// The address is mapped to another MAC: replace the mapping.
	if derr := c.SetDeleteElements(t.pods, []nftables.SetElement{{Key: encode(Element{Set: SetPods, IP: p.IP}).Key}}); derr != nil {
		return derr
	}
	if aerr := r.addElems(c, t, p); aerr != nil {
		return aerr
	}
	if err2 := c.Flush(); err2 != nil {
		return fmt.Errorf("add pod %s to %s: %w", p.IP, TableName(r.Network), errors.Join(err, err2))
	}
	return nil
}

// DelPod removes a pod's elements; elements already gone are not an error.
func (r Rules) DelPod(c *nftables.Conn, p PodElem) error {
	t := r.tables()
	type elem struct {
		set *nftables.Set
		nftables.SetElement
	}
	var elems []elem
	for _, e := range PodElements(r.Mode, p) {
		set, err := t.set(e)
		if err != nil {
			return err
		}
		elems = append(elems, elem{set, encode(e)})
	}
	// Adding then deleting in one transaction succeeds whether or not the
	// element existed. All elements go in one transaction first, the
	// common case; if that fails, element by element.
	queue := func(e elem) error {
		if err := c.SetAddElements(e.set, []nftables.SetElement{e.SetElement}); err != nil {
			return err
		}
		return c.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.Key}})
	}
	var errs []error
	for _, e := range elems {
		errs = append(errs, queue(e))
	}
	if err := errors.Join(errs...); err == nil && c.Flush() == nil {
		return nil
	}
	errs = nil
	for _, e := range elems {
		if err := queue(e); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.Flush(); err != nil && !isNotFound(err) {
			// A map element with another value: delete by key alone.
			if derr := c.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.Key}}); derr == nil {
				if ferr := c.Flush(); ferr != nil && !isNotFound(ferr) {
					errs = append(errs, fmt.Errorf("%s: %w", e.set.Name, ferr))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pod %s from %s: %w", p.IP, TableName(r.Network), err)
	}
	return nil
}

func orZeroMAC(m net.HardwareAddr) net.HardwareAddr {
	if m == nil {
		return make(net.HardwareAddr, 6)
	}
	return m
}

// isNotFound reports ENOENT from nftables; google/nftables formats some
// netlink errors with %v, so the errno survives only as text.
func isNotFound(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}

// Present reports whether the network's tables exist.
func (r Rules) Present(c *nftables.Conn) bool {
	t := r.tables()
	if _, err := c.ListTableOfFamily(t.ip.Name, t.ip.Family); err != nil {
		return false
	}
	extra := t.br
	if r.Mode != ModeBridge {
		extra = t.arp
	}
	if _, err := c.ListTableOfFamily(extra.Name, extra.Family); err != nil {
		return false
	}
	return true
}

// Damage lists what of the network's static configuration the kernel lacks
// or holds differently from what Program builds: a table, a chain, a set,
// the number of rules in a chain, the fixed contents of a set (the
// non-masquerade ranges, the wireserver ports). Pod elements are not judged.
// Nothing listed means intact. It catches `nft flush ruleset` (what
// restarting nftables.service does), `nft flush table` and a deleted rule.
func (r Rules) Damage(c *nftables.Conn) ([]string, error) {
	dry, err := nftables.New() // never flushed: it only queues messages
	if err != nil {
		return nil, err
	}
	want := &builder{Conn: dry}
	if err := r.build(want, false, nil); err != nil {
		return nil, err
	}
	var damage []string
	for _, t := range want.tables {
		if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
			if !isNotFound(err) {
				return nil, fmt.Errorf("list table %s: %w", t.Name, err)
			}
			damage = append(damage, fmt.Sprintf("table %s %s missing", familyName(t.Family), t.Name))
			continue
		}
		chains, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return nil, fmt.Errorf("list chains of %s %s: %w", familyName(t.Family), t.Name, err)
		}
		have := map[string]*nftables.Chain{}
		for _, ch := range chains {
			if ch.Table.Name == t.Name {
				have[ch.Name] = ch
			}
		}
		for _, ch := range want.chains {
			if ch.Table != t {
				continue
			}
			key := objKey(t, ch.Name)
			got, ok := have[ch.Name]
			if !ok {
				damage = append(damage, "chain "+key+" missing")
				continue
			}
			if got.Hooknum == nil || ch.Hooknum == nil || *got.Hooknum != *ch.Hooknum || got.Type != ch.Type {
				damage = append(damage, "chain "+key+" is not hooked as built")
			}
			rules, err := c.GetRules(t, got)
			if err != nil {
				return nil, fmt.Errorf("list rules of %s: %w", key, err)
			}
			if n := want.rules[key]; len(rules) != n {
				damage = append(damage, fmt.Sprintf("chain %s has %d rules, want %d", key, len(rules), n))
			}
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("list sets of %s %s: %w", familyName(t.Family), t.Name, err)
		}
		haveSet := map[string]*nftables.Set{}
		for _, s := range sets {
			haveSet[s.Name] = s
		}
		for _, s := range want.sets {
			if s.Table != t {
				continue
			}
			key := objKey(t, s.Name)
			got, ok := haveSet[s.Name]
			if !ok {
				damage = append(damage, "set "+key+" missing")
				continue
			}
			n, static := want.elems[key]
			if !static {
				continue
			}
			elems, err := c.GetSetElements(got)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", key, err)
			}
			if len(elems) != n {
				damage = append(damage, fmt.Sprintf("set %s has %d elements, want %d", key, len(elems), n))
			}
		}
	}
	return damage, nil
}

// familyName is a table family as nft prints it.
func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyBridge:
		return FamilyBridge
	case nftables.TableFamilyARP:
		return FamilyARP
	case nftables.TableFamilyIPv4:
		return FamilyIP
	}
	return fmt.Sprintf("family-%d", f)
}

// HasPod reports whether a pod's elements are present.
func (r Rules) HasPod(c *nftables.Conn, p PodElem) (bool, error) {
	t := r.tables()
	if r.Mode == ModeBridge {
		elems, err := c.GetSetElements(t.pods)
		if err != nil {
			return false, fmt.Errorf("list %s pods: %w", TableName(r.Network), err)
		}
		want := encode(Element{Set: SetPods, IP: p.IP})
		for _, e := range elems {
			if string(e.Key) == string(want.Key) {
				return string(e.Val) == string(p.MAC), nil
			}
		}
		return false, nil
	}
	elems, err := c.GetSetElements(t.podsL3)
	if err != nil {
		return false, fmt.Errorf("list %s pod sources: %w", TableName(r.Network), err)
	}
	want := encode(Element{Set: SetPodIPs, HostIf: p.HostIf, IP: p.IP})
	for _, e := range elems {
		if string(e.Key) == string(want.Key) {
			return true, nil
		}
	}
	return false, nil
}

// Pods lists the pod addresses present in the network's tables, with the
// MAC each maps to (bridge mode) or the host interface (transparent mode).
func (r Rules) Pods(c *nftables.Conn) ([]PodElem, error) {
	t := r.tables()
	var out []PodElem
	if r.Mode == ModeBridge {
		elems, err := c.GetSetElements(t.pods)
		if isNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list %s pods: %w", TableName(r.Network), err)
		}
		for _, se := range elems {
			e := decode(FamilyBridge, SetPods, se)
			out = append(out, PodElem{IP: e.IP, MAC: e.MAC})
		}
		return out, nil
	}
	elems, err := c.GetSetElements(t.podsL3)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s pod sources: %w", TableName(r.Network), err)
	}
	for _, se := range elems {
		if e := decode(FamilyIP, SetPodIPs, se); e.IP.IsValid() {
			out = append(out, PodElem{HostIf: e.HostIf, IP: e.IP})
		}
	}
	return out, nil
}

// Elements lists every pod element in the network's tables, bridge-family
// ones included in transparent mode (left by an earlier mode). present
// reports whether the tables the mode needs exist.
func (r Rules) Elements(c *nftables.Conn) (elems []Element, present bool, err error) {
	t := r.tables()
	type family struct {
		name   string
		table  *nftables.Table
		sets   []*nftables.Set
		needed bool
	}
	fams := []family{
		{FamilyBridge, t.br, []*nftables.Set{t.pods, t.podMACs, t.brPodIPs}, r.Mode == ModeBridge},
		{FamilyIP, t.ip, []*nftables.Set{t.podsL3}, true},
	}
	if r.Mode != ModeBridge {
		fams = append(fams, family{FamilyARP, t.arp, []*nftables.Set{t.arpIPs}, true})
	}
	present = true
	for _, f := range fams {
		if _, err := c.ListTableOfFamily(f.table.Name, f.table.Family); err != nil {
			present = present && !f.needed
			continue
		}
		for _, set := range f.sets {
			ses, err := c.GetSetElements(set)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return nil, false, fmt.Errorf("list %s %s %s: %w", f.name, f.table.Name, set.Name, err)
			}
			for _, se := range ses {
				elems = append(elems, decode(f.name, set.Name, se))
			}
		}
	}
	return elems, present, nil
}

// DeleteElement deletes one element by its key. Equivalent to: nft delete
// element FAMILY TABLE SET { KEY }.
func (r Rules) DeleteElement(c *nftables.Conn, e Element) error {
	set, err := r.tables().set(e)
	if err != nil {
		return err
	}
	if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: encode(e).Key}}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete %s from %s: %w", e, TableName(r.Network), err)
	}
	return nil
}

// Remove deletes the network's tables.
func (r Rules) Remove(c *nftables.Conn) error {
	t := r.tables()
	for _, tb := range []*nftables.Table{t.ip, t.br, t.arp} {
		c.DelTable(tb)
		if err := c.Flush(); err != nil && !isNotFound(err) {
			return fmt.Errorf("remove table %s: %w", tb.Name, err)
		}
	}
	return nil
}
