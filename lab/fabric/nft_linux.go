package fabric

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vnetcni/vnetcni/internal/nft"
)

// The fabric's nftables ruleset, in the fabric namespace:
//
//	table netdev fabric {
//		set <vm>_ips { type ipv4_addr; elements = { <NIC addresses> } }
//		counter <vm>_bad_mac {}; counter <vm>_bad_ip {}; counter <vm>_other {}
//		chain p-<vm> {
//			type filter hook ingress device "p-<vm>" priority filter; policy accept;
//			ether saddr != <MAC> counter name "<vm>_bad_mac" drop
//			ether type ip ip saddr != @<vm>_ips counter name "<vm>_bad_ip" drop
//			ether type arp arp saddr ether != <MAC> counter name "<vm>_bad_mac" drop
//			ether type arp arp saddr ip != @<vm>_ips counter name "<vm>_bad_ip" drop
//			ether type ip accept
//			ether type arp accept
//			counter name "<vm>_other" drop
//		}
//	}
//	table ip fabric {
//		map public { type ipv4_addr : ipv4_addr; elements = { <primary> : <public> } }
//		counter no_public_ip {}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname "internet" ct state established,related accept
//			iifname "internet" drop
//			oifname "internet" ip saddr @public accept
//			oifname "internet" counter name "no_public_ip" drop
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "internet" snat ip to ip saddr map @public
//		}
//	}
//
// The ARP sender MAC is checked too: a bridge that rewrites the Ethernet
// source but not the ARP sender would get ARP replies addressed to a MAC
// the NIC does not own.

const tableName = "fabric"

// internetDev is the fabric's interface towards the internet namespace.
const internetDev = "internet"

var (
	netdevTable = &nftables.Table{Family: nftables.TableFamilyNetdev, Name: tableName}
	ipTable     = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tableName}
)

// existing lists what the fabric's tables already hold, so a rebuild can
// tell "create" from "replace" inside one transaction.
type existing struct {
	chains map[string]bool // "<family>/<chain>"
	sets   map[string]bool // "<family>/<set>"
	objs   map[string]bool // netdev counter names
}

func listExisting(c *nftables.Conn) (existing, error) {
	ex := existing{chains: map[string]bool{}, sets: map[string]bool{}, objs: map[string]bool{}}
	tables, err := c.ListTables()
	if err != nil {
		return ex, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != tableName || (t.Family != netdevTable.Family && t.Family != ipTable.Family) {
			continue
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return ex, fmt.Errorf("list sets of table %s: %w", t.Name, err)
		}
		for _, s := range sets {
			ex.sets[key(t, s.Name)] = true
		}
		if t.Family == netdevTable.Family {
			objs, err := c.GetObjects(t)
			if err != nil {
				return ex, fmt.Errorf("list objects of table netdev %s: %w", t.Name, err)
			}
			for _, o := range objs {
				if co, ok := o.(*nftables.CounterObj); ok {
					ex.objs[co.Name] = true
				}
			}
		}
	}
	chains, err := c.ListChains()
	if err != nil {
		return ex, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == tableName {
			ex.chains[key(ch.Table, ch.Name)] = true
		}
	}
	return ex, nil
}

func key(t *nftables.Table, name string) string { return fmt.Sprintf("%d/%s", t.Family, name) }

// syncNFT writes the whole ruleset in one transaction. Counters keep their
// values across rebuilds; chains, set elements and map elements are
// replaced.
func syncNFT(fab *nsConn, s Spec) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return fmt.Errorf("open nftables in netns %s: %w", fab.name, err)
	}
	ex, err := listExisting(c)
	if err != nil {
		return fmt.Errorf("nftables in netns %s: %w", fab.name, err)
	}

	c.AddTable(netdevTable)
	// Remove what belongs to VMs no longer in the spec: chains first, as
	// their rules hold references to the sets and counters.
	for k := range ex.chains {
		fam, name, _ := strings.Cut(k, "/")
		vm, isPort := strings.CutPrefix(name, "p-")
		if _, known := s.VM(vm); fam == fmt.Sprint(netdevTable.Family) && isPort && !known {
			c.DelChain(&nftables.Chain{Table: netdevTable, Name: name})
		}
	}
	for k := range ex.sets {
		fam, name, _ := strings.Cut(k, "/")
		vm, isSet := strings.CutSuffix(name, "_ips")
		if _, known := s.VM(vm); fam == fmt.Sprint(netdevTable.Family) && isSet && !known {
			c.DelSet(&nftables.Set{Table: netdevTable, Name: name})
		}
	}
	for name := range ex.objs {
		if vm, ok := counterVM(name); ok {
			if _, known := s.VM(vm); !known {
				c.DeleteObject(&nftables.CounterObj{Table: netdevTable, Name: name})
			}
		}
	}
	for _, v := range s.VMs {
		set, err := addPortSet(c, ex, v)
		if err != nil {
			return fmt.Errorf("nftables in netns %s: %w", fab.name, err)
		}
		for _, n := range []string{cntBadMAC, cntBadIP, cntOther} {
			c.AddObj(&nftables.CounterObj{Table: netdevTable, Name: counterName(v.Name, n)})
		}
		ch := &nftables.Chain{
			Name:     PortName(v.Name),
			Table:    netdevTable,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookIngress,
			Priority: nftables.ChainPriorityFilter,
			Device:   PortName(v.Name),
			Policy:   ptr(nftables.ChainPolicyAccept),
		}
		// Re-creating the chain (rather than flushing it) re-binds its hook
		// to the current device if the port was re-created.
		if ex.chains[key(netdevTable, ch.Name)] {
			c.DelChain(ch)
		}
		c.AddChain(ch)
		mark, marked := s.routeTableOf(v.Subnet)
		if marked {
			// The subnet's route table applies to what this NIC sends.
			c.AddRule(nft.Rule(ch, nft.SetMark(uint32(RouteTableBase+mark))))
		}
		for _, r := range portRules(ch, set, v) {
			c.AddRule(r)
		}
	}

	c.AddTable(ipTable)
	public := &nftables.Set{Table: ipTable, Name: "public", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
	if err := c.AddSet(public, nil); err != nil {
		return fmt.Errorf("nftables in netns %s: add map public: %w", fab.name, err)
	}
	if ex.sets[key(ipTable, public.Name)] {
		c.FlushSet(public)
	}
	var elems []nftables.SetElement
	for _, v := range s.VMs {
		if v.PublicIP.IsValid() {
			elems = append(elems, nftables.SetElement{Key: nft.IPv4Key(v.PrimaryIP), Val: nft.IPv4Key(v.PublicIP)})
		}
	}
	if len(elems) > 0 {
		if err := c.SetAddElements(public, elems); err != nil {
			return fmt.Errorf("nftables in netns %s: add elements to map public: %w", fab.name, err)
		}
	}
	c.AddObj(&nftables.CounterObj{Table: ipTable, Name: cntNoPublicIP})
	forward := &nftables.Chain{
		Name: "forward", Table: ipTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyAccept),
	}
	postrouting := &nftables.Chain{
		Name: "postrouting", Table: ipTable, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: ptr(nftables.ChainPolicyAccept),
	}
	prerouting := &nftables.Chain{
		Name: "prerouting", Table: ipTable, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: ptr(nftables.ChainPolicyAccept),
	}
	for _, ch := range []*nftables.Chain{forward, postrouting, prerouting} {
		if ex.chains[key(ipTable, ch.Name)] {
			c.FlushChain(ch)
		} else {
			c.AddChain(ch)
		}
	}
	if err := loadBalancerRules(c, ex, prerouting, s); err != nil {
		return fmt.Errorf("nftables in netns %s: %w", fab.name, err)
	}
	blocks, members, err := addOverlaySets(c, ex, s)
	if err != nil {
		return fmt.Errorf("nftables in netns %s: %w", fab.name, err)
	}
	overlayRule(c, forward, blocks, members)
	nsgRules(c, forward, s)
	c.AddRule(nft.Rule(forward, nft.IIFName(internetDev, true), nft.CtState(nft.CtStateEstablished|nft.CtStateRelated), nft.Accept()))
	c.AddRule(nft.Rule(forward, nft.IIFName(internetDev, true), nft.Drop()))
	c.AddRule(nft.Rule(forward, nft.OIFName(internetDev, true), nft.In(nft.IPSaddr, public, true), nft.Accept()))
	c.AddRule(nft.Rule(forward, nft.OIFName(internetDev, true), nft.NamedCounter(cntNoPublicIP), nft.Drop()))
	c.AddRule(nft.Rule(postrouting, nft.OIFName(internetDev, true), nft.SNATFromMap(public)))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables ruleset in netns %s: %w", fab.name, err)
	}
	return nil
}

// addPortSet adds to the transaction a port's address set holding exactly
// v's addresses.
func addPortSet(c *nftables.Conn, ex existing, v VMSpec) (*nftables.Set, error) {
	set := &nftables.Set{Table: netdevTable, Name: setName(v.Name), KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(set, nil); err != nil {
		return nil, fmt.Errorf("add set %s: %w", set.Name, err)
	}
	if ex.sets[key(netdevTable, set.Name)] {
		c.FlushSet(set)
	}
	var elems []nftables.SetElement
	for _, ip := range v.IPs() {
		elems = append(elems, nftables.SetElement{Key: nft.IPv4Key(ip)})
	}
	if err := c.SetAddElements(set, elems); err != nil {
		return nil, fmt.Errorf("add elements to set %s: %w", set.Name, err)
	}
	return set, nil
}

// syncPortSet replaces the elements of one port's address set in one
// transaction. Equivalent to: nft 'flush set netdev fabric VM_ips; add element ...'.
func syncPortSet(fab *nsConn, v VMSpec) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return fmt.Errorf("open nftables in netns %s: %w", fab.name, err)
	}
	ex := existing{sets: map[string]bool{key(netdevTable, setName(v.Name)): true}}
	if _, err := addPortSet(c, ex, v); err != nil {
		return fmt.Errorf("nftables in netns %s: %w", fab.name, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update set %s in netns %s: %w", setName(v.Name), fab.name, err)
	}
	return nil
}

func portRules(ch *nftables.Chain, set *nftables.Set, v VMSpec) []*nftables.Rule {
	mac := net.HardwareAddr(v.MAC)
	badMAC := nft.NamedCounter(counterName(v.Name, cntBadMAC))
	badIP := nft.NamedCounter(counterName(v.Name, cntBadIP))
	// Every rule starts with "meta iiftype ether" only so that nft lists
	// the ruleset in its own syntax; a port is always Ethernet.
	ether := nft.IIFType(nft.ARPHRDEther)
	ip, arp := nft.EtherType(nft.EtherTypeIPv4), nft.EtherType(nft.EtherTypeARP)
	// The source address check: the NIC's addresses, and its overlay
	// block; none with IP forwarding on.
	srcRule := nft.Rule(ch, ether, ip, nft.In(nft.IPSaddr, set, false), badIP, nft.Drop())
	if v.PodCIDR.IsValid() {
		srcRule = nft.Rule(ch, ether, ip, nft.In(nft.IPSaddr, set, false), nft.IPInPrefix(nft.IPSaddr, v.PodCIDR, false), badIP, nft.Drop())
	}
	rules := []*nftables.Rule{nft.Rule(ch, ether, nft.MAC(nft.EtherSaddr, mac, false), badMAC, nft.Drop())}
	if !v.IPForwarding {
		rules = append(rules, srcRule)
	}
	return append(rules,
		nft.Rule(ch, ether, arp, nft.MAC(nft.ARPSenderMAC, mac, false), badMAC, nft.Drop()),
		nft.Rule(ch, ether, arp, nft.In(nft.ARPSenderIP, set, false), badIP, nft.Drop()),
		nft.Rule(ch, ether, ip, nft.Accept()),
		nft.Rule(ch, ether, arp, nft.Accept()),
		nft.Rule(ch, nft.NamedCounter(counterName(v.Name, cntOther)), nft.Drop()),
	)
}

// counterVM splits a port counter name into its VM.
func counterVM(name string) (string, bool) {
	for _, c := range []string{cntBadMAC, cntBadIP, cntOther} {
		if vm, ok := strings.CutSuffix(name, "_"+c); ok {
			return vm, true
		}
	}
	return "", false
}

func readCounters(fab *nsConn, s Spec) (map[string]PortCounters, uint64, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return nil, 0, fmt.Errorf("open nftables in netns %s: %w", fab.name, err)
	}
	objs, err := c.GetObjects(netdevTable)
	if err != nil {
		return nil, 0, fmt.Errorf("list counters of table netdev %s in netns %s: %w", tableName, fab.name, err)
	}
	out := make(map[string]PortCounters, len(s.VMs))
	for _, v := range s.VMs {
		out[v.Name] = PortCounters{}
	}
	for _, o := range objs {
		co, ok := o.(*nftables.CounterObj)
		if !ok {
			continue
		}
		for _, v := range s.VMs {
			pc := out[v.Name]
			switch co.Name {
			case counterName(v.Name, cntBadMAC):
				pc.BadMAC = co.Packets
			case counterName(v.Name, cntBadIP):
				pc.BadIP = co.Packets
			case counterName(v.Name, cntOther):
				pc.Other = co.Packets
			}
			out[v.Name] = pc
		}
	}
	objs, err = c.GetObjects(ipTable)
	if err != nil {
		return nil, 0, fmt.Errorf("list counters of table ip %s in netns %s: %w", tableName, fab.name, err)
	}
	var noPublic uint64
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok && co.Name == cntNoPublicIP {
			noPublic = co.Packets
		}
	}
	return out, noPublic, nil
}

func ptr[T any](v T) *T { return &v }

// loadBalancerRules translates each load balancer frontend port to its
// backends. Equivalent to: ip daddr VIP tcp dport P dnat ip to numgen inc
// mod N map @lb-NAME (or to the one backend).
func loadBalancerRules(c *nftables.Conn, ex existing, ch *nftables.Chain, s Spec) error {
	for _, lb := range s.LoadBalancers {
		var to []expr.Any
		if len(lb.Backends) == 1 {
			to = nft.DNAT(lb.Backends[0])
		} else {
			m := &nftables.Set{Table: ipTable, Name: "lb-" + lb.Name, IsMap: true, KeyType: nftables.TypeInteger, DataType: nftables.TypeIPAddr}
			if err := c.AddSet(m, nil); err != nil {
				return fmt.Errorf("add map %s: %w", m.Name, err)
			}
			if ex.sets[key(ipTable, m.Name)] {
				c.FlushSet(m)
			}
			var elems []nftables.SetElement
			for i, b := range lb.Backends {
				elems = append(elems, nftables.SetElement{Key: binary.NativeEndian.AppendUint32(nil, uint32(i)), Val: nft.IPv4Key(b)})
			}
			if err := c.SetAddElements(m, elems); err != nil {
				return fmt.Errorf("add elements to map %s: %w", m.Name, err)
			}
			to = nft.DNATRoundRobin(m, uint32(len(lb.Backends)))
		}
		for _, p := range lb.Ports {
			c.AddRule(nft.Rule(ch, nft.IP(nft.IPDaddr, lb.VIP, true), nft.TCPDport(p), to))
		}
	}
	return nil
}

// nsgRules filter inbound traffic of subnets with an NSG: replies pass,
// the rules' sources reach their TCP ports, everything else is dropped and
// counted. Equivalent to:
//
//	ip daddr SUBNET ct state established,related accept
//	ip daddr SUBNET ip saddr SRC tcp dport P accept
//	ip daddr SUBNET counter name nsgI_denied drop
func nsgRules(c *nftables.Conn, ch *nftables.Chain, s Spec) {
	for i, n := range s.NSGs {
		c.AddObj(&nftables.CounterObj{Table: ipTable, Name: nsgCounter(i)})
		to := nft.IPIn(nft.IPDaddr, n.Subnet)
		c.AddRule(nft.Rule(ch, to, nft.CtState(nft.CtStateEstablished|nft.CtStateRelated), nft.Accept()))
		for _, r := range n.Allow {
			for _, p := range r.Ports {
				c.AddRule(nft.Rule(ch, to, nft.IPIn(nft.IPSaddr, r.Source), nft.TCPDport(p), nft.Accept()))
			}
		}
		c.AddRule(nft.Rule(ch, to, nft.NamedCounter(nsgCounter(i)), nft.Drop()))
	}
}

func readNSGCounters(fab *nsConn, s Spec) (map[netip.Prefix]uint64, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return nil, fmt.Errorf("open nftables in netns %s: %w", fab.name, err)
	}
	objs, err := c.GetObjects(ipTable)
	if err != nil {
		return nil, fmt.Errorf("list counters of table ip %s in netns %s: %w", tableName, fab.name, err)
	}
	out := map[netip.Prefix]uint64{}
	for i, n := range s.NSGs {
		for _, o := range objs {
			if co, ok := o.(*nftables.CounterObj); ok && co.Name == nsgCounter(i) {
				out[n.Subnet] = co.Packets
			}
		}
	}
	return out, nil
}
