package fabric

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDHCP: a real client (udhcpc) on a VM's eth0 gets Azure's answer
// from the fabric: the VM's primary address with the subnet's prefix and
// the gateway, the lease kept across a renewal and a restart; a VM with its
// address taken away gets it back from the fabric.
func TestDHCP(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("udhcpc"); err != nil {
		t.Fatalf("udhcpc not installed (scripts/setup.sh installs it): %v", err)
	}
	spec := testSpec(t)
	f := buildFabric(t, spec)
	serve(t, f)
	ns := f.VMNetNS("vm3")
	if out, err := exec.Command("ip", "-n", ns, "addr", "flush", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("flush eth0 of vm3: %v %s", err, out)
	}
	c, err := StartDHCPClient(ns, "eth0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	want := "bound eth0 " + vm3IP.String() + "/24 10.1.0.1"
	if got := c.Events(); !strings.Contains(strings.Join(got, "\n"), want) {
		t.Errorf("events %q, want %q", got, want)
	}
	mustPing(t, f, "vm3", vm3IP, vm1IP)
	if err := c.Renew(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeases(2, 10*time.Second); err != nil {
		t.Fatalf("after a renewal: %v", err)
	}
	if err := c.Restart("eth0"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeases(3, 10*time.Second); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if got := c.Events(); strings.Count(strings.Join(got, "\n"), vm3IP.String()+"/24 10.1.0.1") != 3 {
		t.Errorf("events %q, want three leases of %s", got, vm3IP)
	}
	mustPing(t, f, "vm3", vm3IP, vm1IP)
}

// TestDHCPAnswer: what the fabric answers, field by field.
func TestDHCPAnswer(t *testing.T) {
	v := testSpec(t).VMs[0]
	req := func(typ byte, ciaddr string, requested string) *dhcpMsg {
		m := &dhcpMsg{op: 1, xid: 42, chaddr: append([]byte(nil), v.MAC...), options: map[byte][]byte{optMsgType: {typ}}}
		m.ciaddr = netipOr(ciaddr)
		m.yiaddr, m.siaddr, m.giaddr = netipOr(""), netipOr(""), netipOr("")
		if requested != "" {
			m.options[optRequestedIP] = ip4(netipOr(requested))
		}
		// Through the wire format and back.
		got, err := parseDHCP(m.marshal())
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, tc := range []struct {
		name     string
		req      *dhcpMsg
		wantType byte
		wantIP   string
	}{
		{"discover", req(dhcpDiscover, "", ""), dhcpOffer, v.PrimaryIP.String()},
		{"selecting", req(dhcpRequest, "", v.PrimaryIP.String()), dhcpAck, v.PrimaryIP.String()},
		{"renewing", req(dhcpRequest, v.PrimaryIP.String(), ""), dhcpAck, v.PrimaryIP.String()},
		{"another address", req(dhcpRequest, "", "10.0.0.99"), dhcpNak, "0.0.0.0"},
	} {
		reply, ok := dhcpAnswer(v, tc.req)
		if !ok {
			t.Errorf("%s: no answer", tc.name)
			continue
		}
		got, err := parseDHCP(reply.marshal())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.msgType() != tc.wantType || got.yiaddr.String() != tc.wantIP || got.xid != 42 {
			t.Errorf("%s: type %d yiaddr %s xid %d, want type %d yiaddr %s xid 42", tc.name, got.msgType(), got.yiaddr, got.xid, tc.wantType, tc.wantIP)
		}
		if string(got.options[optServerID]) != string(ip4(WireserverIP)) {
			t.Errorf("%s: server ID %v, want %s", tc.name, got.options[optServerID], WireserverIP)
		}
		if tc.wantType == dhcpNak {
			continue
		}
		for opt, want := range map[byte][]byte{
			optSubnetMask: {255, 255, 255, 0}, optRouter: {10, 0, 0, 1}, optDNS: ip4(WireserverIP),
			optLeaseTime: u32(DHCPInfinite), optRenewalT1: u32(DHCPInfinite), optRebindT2: u32(DHCPInfinite),
			optDomainName: []byte(DNSSuffix),
		} {
			if string(got.options[opt]) != string(want) {
				t.Errorf("%s: option %d = %v, want %v", tc.name, opt, got.options[opt], want)
			}
		}
	}
	other := req(dhcpDiscover, "", "")
	other.chaddr[5]++
	if _, ok := dhcpAnswer(v, other); ok {
		t.Errorf("answered a discover from MAC %s, not the NIC's", other.chaddr)
	}
}
