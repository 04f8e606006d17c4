package datapath

import (
	"net/netip"
	"testing"
)

// TestPoolEgress: Ensure adds the two rules and the table's default route,
// is idempotent, Ready sees each piece go, and RemovePoolEgress takes all
// of it away. Kernel round trip in a fresh namespace.
func TestPoolEgress(t *testing.T) {
	_, h := nicNS(t)
	e := PoolEgress{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"), Dev: "eth0"}
	if e.Ready(h) {
		t.Fatalf("Ready before Ensure")
	}
	for i := 0; i < 2; i++ {
		if err := e.Ensure(h); err != nil {
			t.Fatalf("Ensure (run %d): %v", i+1, err)
		}
	}
	if !e.Ready(h) {
		t.Fatalf("not Ready after Ensure")
	}
	rules, err := h.RuleList(2)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		if r.Priority == PodEgressPriority || r.Priority == PodEgressPriority+1 {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d rules at priorities %d-%d after two Ensures, want 2", n, PodEgressPriority, PodEgressPriority+1)
	}
	if err := RemovePoolEgress(h); err != nil {
		t.Fatal(err)
	}
	if e.Ready(h) {
		t.Errorf("Ready after RemovePoolEgress")
	}
	if err := RemovePoolEgress(h); err != nil {
		t.Errorf("RemovePoolEgress again: %v", err)
	}
}

func TestPoolEgressFor(t *testing.T) {
	base := Rules{Mode: ModeTransparent, Master: "eth0", Bridge: "azure0", Subnet: netip.MustParsePrefix("10.0.0.0/24"), PrimaryIP: netip.MustParseAddr("10.0.0.4")}
	bridge := base
	bridge.Mode = ModeBridge
	routed := bridge
	routed.Routed = true
	podCIDR := base
	podCIDR.Subnet = netip.MustParsePrefix("10.244.1.0/24")
	for _, tc := range []struct {
		name    string
		r       Rules
		wantDev string
	}{
		{"transparent", base, "eth0"},
		{"bridge", bridge, "azure0"},
		{"bridge, pod CIDR", routed, ""},
		{"transparent, pod CIDR", podCIDR, ""},
	} {
		e, ok := PoolEgressFor(tc.r)
		if ok != (tc.wantDev != "") || e.Dev != tc.wantDev {
			t.Errorf("%s: %+v %v, want dev %q", tc.name, e, ok, tc.wantDev)
		} else if ok && e.Gateway != netip.MustParseAddr("10.0.0.1") {
			t.Errorf("%s: gateway %s, want 10.0.0.1", tc.name, e.Gateway)
		}
	}
}
