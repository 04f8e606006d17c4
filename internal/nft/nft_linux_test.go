package nft_test

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/nft"
	"github.com/vnetcni/vnetcni/internal/nft/nfttest"
)

// TestBuildersAsNftPrintsThem loads one rule per builder into a throwaway
// namespace's kernel and checks that `nft list` reads it back as the rule
// the builder's documentation says it is equivalent to.
func TestBuildersAsNftPrintsThem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "vnf" + hex.EncodeToString(b)
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	c := nfttest.Conn(t, ns)

	mac, _ := net.ParseMAC("00:0d:3a:6e:18:25")
	ip := netip.MustParseAddr("10.0.0.5")

	br := c.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: "t"})
	brChain := c.AddChain(&nftables.Chain{Table: br, Name: "c", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter})
	brPods := &nftables.Set{Table: br, Name: "pods", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeEtherAddr}
	brMACs := &nftables.Set{Table: br, Name: "pod-macs", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)}
	ip4 := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "t"})
	ipChain := c.AddChain(&nftables.Chain{Table: ip4, Name: "c", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	ipFilter := c.AddChain(&nftables.Chain{Table: ip4, Name: "f", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	nomasq := &nftables.Set{Table: ip4, Name: "nomasq", Interval: true, KeyType: nftables.TypeIPAddr}
	ports := &nftables.Set{Table: ip4, Name: "ports", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)}
	snat := &nftables.Set{Table: ip4, Name: "snat", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
	for _, s := range []*nftables.Set{brPods, brMACs, nomasq, ports, snat} {
		if err := c.AddSet(s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetAddElements(nomasq, nft.PrefixElements([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/9"), netip.MustParsePrefix("10.128.0.0/9"), // adjacent: one range
		netip.MustParsePrefix("168.63.129.16/32"), netip.MustParsePrefix("10.1.0.0/16"), // inside
		netip.MustParsePrefix("240.0.0.0/4"), // runs to the end
	})); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(brMACs, []nftables.SetElement{{Key: nft.ConcatKey(nft.IfName("azv1"), mac)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(brPods, []nftables.SetElement{{Key: nft.IPv4Key(ip), Val: mac}}); err != nil {
		t.Fatal(err)
	}

	// nft leaves out what a match implies (ether type arp before an arp
	// field, meta protocol ip before an ip field in a bridge table).
	type rule struct {
		exprs *nftables.Rule
		want  string
	}
	cases := []rule{
		{nft.Rule(brChain, nft.IIFName("azv*", true), nft.EtherType(nft.EtherTypeARP), nft.ARPOp(nft.ARPRequest), nft.Accept()),
			`iifname "azv*" arp operation request accept`},
		{nft.Rule(brChain, nft.OIFName("eth0", false), nft.MAC(nft.EtherSaddr, mac, true), nft.Drop()),
			`oifname != "eth0" ether saddr 00:0d:3a:6e:18:25 drop`},
		{nft.Rule(brChain, nft.IIFName("azv*", true), nft.InConcat(brMACs, false, nft.KeyIIFName, nft.KeyEtherSaddr), nft.Counter(), nft.Drop()),
			`iifname "azv*" iifname . ether saddr != @pod-macs counter packets 0 bytes 0 drop`},
		{nft.Rule(brChain, nft.MetaProtocol(nft.EtherTypeIPv4), nft.SetMACFromMap(nft.EtherDaddr, nft.IPDaddr, brPods)),
			`ether daddr set ip daddr map @pods`},
		{nft.Rule(brChain, nft.EtherType(nft.EtherTypeARP), nft.IP(nft.ARPTargetIP, ip, true), nft.SetMAC(nft.ARPSenderMAC, mac), nft.SetPktTypeHost()),
			`arp daddr ip 10.0.0.5 arp saddr ether set 00:0d:3a:6e:18:25 meta pkttype set host`},
		{nft.Rule(ipChain, nft.OIFName("eth0", true), nft.In(nft.IPDaddr, nomasq, false),
			nft.FibAddrType(false, nft.RTNLocal, false), nft.Masquerade()),
			`oifname "eth0" ip daddr != @nomasq fib saddr type != local masquerade`},
		{nft.Rule(ipChain, nft.IPIn(nft.IPSaddr, netip.MustParsePrefix("10.0.0.0/24")), nft.SNATFromMap(snat)),
			`ip saddr 10.0.0.0/24 snat to ip saddr map @snat`},
		{nft.Rule(ipFilter, nft.IP(nft.IPDaddr, netip.MustParseAddr("168.63.129.16"), true),
			nft.InConcat(ports, false, nft.KeyL4Proto, nft.KeyTHDport), nft.Drop()),
			`ip daddr 168.63.129.16 meta l4proto . th dport != @ports drop`},
		{nft.Rule(ipFilter, nft.CtState(nft.CtStateEstablished|nft.CtStateRelated), nft.Accept()),
			`ct state established,related accept`},
		{nft.Rule(ipFilter, nft.TCPDport(443), nft.L4Proto(unix.IPPROTO_TCP), nft.Return()),
			`tcp dport 443 ip protocol tcp return`},
	}
	for _, r := range cases {
		c.AddRule(r.exprs)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("the kernel refused the rules: %v", err)
	}
	out, err := exec.Command("nsenter", "--net="+netns.Path(ns), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	// One line per rule, elements unwrapped.
	listed := strings.Join(strings.Fields(string(out)), " ")
	for _, r := range cases {
		if !strings.Contains(string(out), "\t\t"+r.want+"\n") {
			t.Errorf("no rule %q in\n%s", r.want, out)
		}
	}
	for _, want := range []string{
		`elements = { 10.0.0.0/8, 168.63.129.16, 240.0.0.0/4 }`,
		`elements = { "azv1" . 00:0d:3a:6e:18:25 }`,
		`elements = { 10.0.0.5 : 00:0d:3a:6e:18:25 }`,
	} {
		if !strings.Contains(listed, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}
