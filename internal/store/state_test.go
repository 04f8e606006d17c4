package store

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// sampleState is a consistent state: one network, its pool, two pods.
func sampleState() *State {
	st := NewState()
	st.Networks["azure"] = &Network{
		Name: "azure", Mode: "bridge", Master: "eth0", Bridge: "azure0", Pool: "000D3A6E1825", Rules: "f00d",
		MasterConfig: &LinkConfig{
			Addrs:  []netip.Prefix{netip.MustParsePrefix("10.240.0.4/16")},
			Routes: []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("10.240.0.1"), Metric: 100, Protocol: 4}},
		},
	}
	st.Pools["000D3A6E1825"] = &Pool{
		ID: "000D3A6E1825", Source: "wireserver http://168.63.129.16/", ReadAt: t0,
		Subnet: netip.MustParsePrefix("10.240.0.0/16"), Gateway: netip.MustParseAddr("10.240.0.1"),
		PrimaryIP: netip.MustParseAddr("10.240.0.4"),
		Addresses: []netip.Addr{netip.MustParseAddr("10.240.0.5"), netip.MustParseAddr("10.240.0.6"), netip.MustParseAddr("10.240.0.7")},
		Released:  map[netip.Addr]time.Time{netip.MustParseAddr("10.240.0.7"): t0.Add(-time.Hour)},
	}
	for i, c := range []string{"c1", "c2"} {
		ip := netip.AddrFrom4([4]byte{10, 240, 0, byte(5 + i)})
		st.Allocations[ip.String()] = &Allocation{IP: ip, Pool: "000D3A6E1825", ContainerID: c, IfName: "eth0", Network: "azure", Owner: "azure-vnet", Time: t0}
		st.Endpoints[EndpointKey(c, "eth0")] = &Endpoint{
			ContainerID: c, IfName: "eth0", Network: "azure", Mode: "bridge", Netns: "/var/run/netns/" + c,
			HostIfName: "azv" + c, PodMAC: "02:00:00:00:00:0" + string(rune('5'+i)),
			IP: netip.PrefixFrom(ip, 16), Gateway: netip.MustParseAddr("10.240.0.1"), Created: t0,
		}
	}
	return st
}

func encode(t testing.TB, st *State) []byte {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		mutate     func(st *State) // when in is nil: sampleState, mutated, encoded
		wantReason string          // empty: accepted
		wantDetail string          // substring of the wrapped error
	}{
		{name: "sample state", mutate: func(*State) {}},
		{name: "minimal", in: []byte(`{"version":1}`)},
		{name: "null maps", in: []byte(`{"version":1,"networks":null,"pools":null,"allocations":null,"endpoints":null}`)},
		{name: "unknown fields", in: []byte(`{"version":1,"future":{"x":1}}`)},
		{name: "pool without primary", mutate: func(st *State) { st.Pools["000D3A6E1825"].PrimaryIP = netip.Addr{} }},
		{name: "allocation from a pool not named", mutate: func(st *State) { st.Allocations["10.240.0.5"].Pool = "" }},

		{name: "empty", in: []byte{}, wantReason: "empty"},
		{name: "whitespace", in: []byte(" \n\t\r\n "), wantReason: "empty"},
		{name: "NUL-filled", in: make([]byte, 4096), wantReason: "contains NUL bytes"},
		{name: "NUL tail after a crash", in: append([]byte(`{"version":1,"networks":{}`), make([]byte, 100)...), wantReason: "contains NUL bytes"},
		{name: "truncated", in: []byte(`{"version":1,"networks":{"azure":{"name":"az`), wantReason: "not valid JSON"},
		{name: "truncated sample", mutate: nil, in: nil, wantReason: "not valid JSON"}, // filled in below
		{name: "not JSON", in: []byte("version = 1\n"), wantReason: "not valid JSON"},
		{name: "two documents", in: []byte(`{"version":1}{"version":1}`), wantReason: "not valid JSON"},
		{name: "a list", in: []byte(`[{"version":1}]`), wantReason: "not valid JSON"},
		{name: "version a string", in: []byte(`{"version":"1"}`), wantReason: "not valid JSON"},
		{name: "null", in: []byte(`null`), wantReason: "unknown format version 0"},
		{name: "no version", in: []byte(`{"networks":{}}`), wantReason: "unknown format version 0"},
		{name: "negative version", in: []byte(`{"version":-1}`), wantReason: "unknown format version -1"},
		{name: "allocations a list", in: []byte(`{"version":1,"allocations":[]}`), wantReason: "does not match the state schema"},
		{name: "bad address", in: []byte(`{"version":1,"allocations":{"10.0.0.5":{"ip":"10.0.0.256","containerID":"c"}}}`), wantReason: "does not match the state schema"},
		{name: "bad time", in: []byte(`{"version":1,"pools":{"p":{"id":"p","readAt":"yesterday"}}}`), wantReason: "does not match the state schema"},
		{name: "scope overflow", in: []byte(`{"version":1,"networks":{"n":{"name":"n","masterConfig":{"routes":[{"scope":256}]}}}}`), wantReason: "does not match the state schema"},

		{name: "endpoint whose IP is not allocated", mutate: func(st *State) { delete(st.Allocations, "10.240.0.5") },
			wantReason: "inconsistent", wantDetail: "endpoint c1/eth0 uses 10.240.0.5, which is not allocated"},
		{name: "endpoint whose IP is allocated to another container", mutate: func(st *State) { st.Endpoints["c2/eth0"].IP = netip.MustParsePrefix("10.240.0.5/16") },
			wantReason: "inconsistent", wantDetail: "endpoint c2/eth0 uses 10.240.0.5, which is allocated to c1/eth0"},
		{name: "container interface holding two allocations", mutate: func(st *State) { st.Allocations["10.240.0.6"].ContainerID = "c1"; delete(st.Endpoints, "c2/eth0") },
			wantReason: "inconsistent", wantDetail: "container interface c1/eth0 holds both"},
		{name: "allocation stored under another address", mutate: func(st *State) {
			st.Allocations["10.240.0.9"] = st.Allocations["10.240.0.5"]
			delete(st.Allocations, "10.240.0.5")
			delete(st.Endpoints, "c1/eth0")
		}, wantReason: "inconsistent", wantDetail: "allocation 10.240.0.9 holds address 10.240.0.5"},
		{name: "allocation without container", mutate: func(st *State) { st.Allocations["10.240.0.5"].ContainerID = ""; delete(st.Endpoints, "c1/eth0") },
			wantReason: "inconsistent", wantDetail: "allocation 10.240.0.5 has no container"},
		{name: "allocation from an unknown pool", mutate: func(st *State) { st.Allocations["10.240.0.5"].Pool = "000D3A000000" },
			wantReason: "inconsistent", wantDetail: "allocation 10.240.0.5 refers to unknown pool 000D3A000000"},
		{name: "null allocation", in: []byte(`{"version":1,"allocations":{"10.0.0.5":null}}`),
			wantReason: "inconsistent", wantDetail: "allocation 10.0.0.5 is null"},
		{name: "null allocation used by an endpoint", mutate: func(st *State) { st.Allocations["10.240.0.5"] = nil },
			wantReason: "inconsistent", wantDetail: "allocation 10.240.0.5 is null"},
		{name: "endpoint under another key", mutate: func(st *State) { st.Endpoints["c9/eth0"] = st.Endpoints["c1/eth0"]; delete(st.Endpoints, "c1/eth0") },
			wantReason: "inconsistent", wantDetail: "endpoint c1/eth0 is stored under key c9/eth0"},
		{name: "null endpoint", in: []byte(`{"version":1,"endpoints":{"c/eth0":null}}`),
			wantReason: "inconsistent", wantDetail: "endpoint c/eth0 is null"},
		{name: "pool under another ID", mutate: func(st *State) { st.Pools["000D3A6E1825"].ID = "x" },
			wantReason: "inconsistent", wantDetail: "pool 000D3A6E1825 is malformed"},
		{name: "null pool", in: []byte(`{"version":1,"pools":{"p":null}}`), wantReason: "inconsistent", wantDetail: "pool p is malformed"},
		{name: "network under another name", mutate: func(st *State) { st.Networks["azure"].Name = "other" },
			wantReason: "inconsistent", wantDetail: "network azure is malformed"},
		{name: "null network", in: []byte(`{"version":1,"networks":{"n":null}}`), wantReason: "inconsistent", wantDetail: "network n is malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			switch {
			case tt.name == "truncated sample":
				b := encode(t, sampleState())
				in = b[:len(b)*2/3]
			case in == nil:
				st := sampleState()
				tt.mutate(st)
				in = encode(t, st)
			}
			const path = "/run/azure-vnet/state.json"
			st, err := Decode(in, path)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Decode(%q): %v", in, err)
				}
				if st.Version != Version || st.Networks == nil || st.Pools == nil || st.Allocations == nil || st.Endpoints == nil {
					t.Errorf("Decode(%q) = %+v, want version %d and no nil maps", in, st, Version)
				}
				return
			}
			var de *DamagedError
			if !errors.As(err, &de) {
				t.Fatalf("Decode(%q) = %v, %v; want a *DamagedError (%s)", in, st, err, tt.wantReason)
			}
			if st != nil {
				t.Errorf("Decode(%q) returned state %+v with error %v", in, st, err)
			}
			if de.Path != path || !strings.HasPrefix(de.Reason, tt.wantReason) {
				t.Errorf("Decode(%q): DamagedError path %q reason %q; want %q, %q", in, de.Path, de.Reason, path, tt.wantReason)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.wantReason) {
				t.Errorf("Decode(%q): error %q does not name the path and the reason", in, err)
			}
			if tt.wantDetail != "" && !strings.Contains(err.Error(), tt.wantDetail) {
				t.Errorf("Decode(%q): error %q, want it to contain %q", in, err, tt.wantDetail)
			}
			if !IsDamaged(err) || !IsDamaged(errors.Join(errors.New("read"), err)) {
				t.Errorf("IsDamaged(%v) = false", err)
			}
		})
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	want := sampleState()
	got, err := Decode(encode(t, want), "state.json")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, equateNetip); d != "" {
		t.Errorf("Decode(encode(sampleState())) (-want +got):\n%s", d)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	st := sampleState()
	delete(st.Allocations, "10.240.0.5")
	st.Networks["azure"].Name = "x"
	err := st.Validate()
	for _, want := range []string{"endpoint c1/eth0 uses 10.240.0.5, which is not allocated", "network azure is malformed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
}

func TestStateHelpers(t *testing.T) {
	st := sampleState()
	if got := EndpointKey("c1", "eth0"); got != "c1/eth0" {
		t.Errorf("EndpointKey(c1, eth0) = %q, want c1/eth0", got)
	}
	for _, tt := range []struct {
		c, ifName string
		want      string // address; empty: none
	}{{"c1", "eth0", "10.240.0.5"}, {"c2", "eth0", "10.240.0.6"}, {"c1", "eth1", ""}, {"c3", "eth0", ""}} {
		a, ok := st.AllocationFor(tt.c, tt.ifName)
		if got := ""; ok {
			got = a.IP.String()
			if got != tt.want {
				t.Errorf("AllocationFor(%s, %s) = %s, want %q", tt.c, tt.ifName, got, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("AllocationFor(%s, %s) found nothing, want %s", tt.c, tt.ifName, tt.want)
		}
	}

	st.Allocations["10.240.0.10"] = &Allocation{IP: netip.MustParseAddr("10.240.0.10"), ContainerID: "c0"}
	var ips []string
	for _, a := range st.SortedAllocations() {
		ips = append(ips, a.IP.String())
	}
	if d := cmp.Diff([]string{"10.240.0.5", "10.240.0.6", "10.240.0.10"}, ips); d != "" {
		t.Errorf("SortedAllocations (-want +got):\n%s", d)
	}
	var keys []string
	for _, e := range st.SortedEndpoints() {
		keys = append(keys, e.Key())
	}
	if d := cmp.Diff([]string{"c1/eth0", "c2/eth0"}, keys); d != "" {
		t.Errorf("SortedEndpoints (-want +got):\n%s", d)
	}
	if p := st.Pools["000D3A6E1825"]; !p.Has(netip.MustParseAddr("10.240.0.6")) || p.Has(netip.MustParseAddr("10.240.0.4")) {
		t.Errorf("Pool.Has: want 10.240.0.6 (secondary) and not 10.240.0.4 (primary)")
	}
}

// TestDecodeNewer: a file of a newer format is not damage: it is refused,
// whether this version could parse it or not.
func TestDecodeNewer(t *testing.T) {
	valid := sampleState()
	valid.Version = Version + 1
	for _, in := range [][]byte{[]byte(`{"version":99,"somethingNew":[]}`), encode(t, valid)} {
		st, err := Decode(in, "s.json")
		var ne *NewerError
		if !errors.As(err, &ne) || IsDamaged(err) || st != nil || !strings.Contains(err.Error(), "newer version") {
			t.Errorf("Decode(%.40q) = %v, %v; want a *NewerError and no state", in, st, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(f, sampleState()))
	f.Add(encode(f, NewState()))
	f.Add([]byte(`{"version":1,"allocations":{"10.0.0.5":null},"endpoints":{"c/eth0":{"containerID":"c","ifName":"eth0","ip":"10.0.0.5/24"}}}`))
	f.Add([]byte(`{"version":99}`))
	f.Add([]byte(" \x00"))
	f.Add([]byte(`{"version":1,"pools":{"p":{"id":"p","released":{"10.0.0.5":"2025-01-01T00:00:00Z"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		const path = "fuzz/state.json"
		st, err := Decode(b, path)
		if err != nil {
			var de *DamagedError
			var ne *NewerError
			if errors.As(err, &ne) && ne.Path == path && ne.Version > Version {
				return
			}
			if !errors.As(err, &de) || de.Path != path || de.Reason == "" {
				t.Fatalf("Decode(%q) error %v (%T), want a *DamagedError for %s with a reason", b, err, err, path)
			}
			if st != nil {
				t.Fatalf("Decode(%q) returned a state with error %v", b, err)
			}
			return
		}
		if st == nil || st.Version != Version || st.Networks == nil || st.Pools == nil || st.Allocations == nil || st.Endpoints == nil {
			t.Fatalf("Decode(%q) = %+v: want version %d and no nil maps", b, st, Version)
		}
		if err := st.Validate(); err != nil {
			t.Fatalf("Decode(%q) accepted an inconsistent state: %v", b, err)
		}
		// What was accepted is written back and must read the same.
		again, err := json.MarshalIndent(st, "", " ")
		if err != nil {
			t.Fatalf("Decode(%q) accepted a state that cannot be encoded: %v", b, err)
		}
		st2, err := Decode(again, path)
		if err != nil {
			t.Fatalf("Decode(%q) accepted, but its re-encoding %q is rejected: %v", b, again, err)
		}
		if d := cmp.Diff(st, st2, equateNetip, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("Decode(%q): re-encoding changed the state (-first +second):\n%s", b, d)
		}
	})
}
