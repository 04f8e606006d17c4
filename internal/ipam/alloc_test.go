package ipam

import (
	"errors"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
	"github.com/vnetcni/vnetcni/internal/store"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const poolID = "000D3A6E1825"

// testPool is the pool of NIC 000D3A6E1825 in 10.0.0.0/24 (primary
// 10.0.0.4, gateway 10.0.0.1) with the given host numbers as secondaries.
func testPool(hosts ...byte) *store.Pool {
	p := &store.Pool{
		ID: poolID, Source: "test", ReadAt: t0,
		Subnet:    netip.MustParsePrefix("10.0.0.0/24"),
		Gateway:   netip.MustParseAddr("10.0.0.1"),
		PrimaryIP: netip.MustParseAddr("10.0.0.4"),
		Addresses: []netip.Addr{},
	}
	for _, h := range hosts {
		p.Addresses = append(p.Addresses, host(h))
	}
	return p
}

func host(h byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, h}) }

// stateWith returns a state holding p.
func stateWith(p *store.Pool) *store.State {
	st := store.NewState()
	st.Pools[p.ID] = p
	return st
}

// step is one operation on a pool and its expected outcome.
type step struct {
	op        string // "alloc" or "release"
	container string
	ifName    string
	at        time.Duration // since t0
	want      []byte        // alloc: the host number handed out; release: those freed
	exhausted bool          // alloc: want an *ExhaustedError
}

func alloc(c, ifName string, want byte) step {
	return step{op: "alloc", container: c, ifName: ifName, want: []byte{want}}
}

func release(c, ifName string, at time.Duration, freed ...byte) step {
	return step{op: "release", container: c, ifName: ifName, at: at, want: freed}
}

func TestAllocateAndRelease(t *testing.T) {
	tests := []struct {
		name  string
		hosts []byte // the pool's secondaries
		held  []byte // addresses allocated outside the pool before the steps run
		steps []step
	}{
		{
			name: "address order on a fresh pool", hosts: []byte{5, 6, 7},
			steps: []step{alloc("c1", "eth0", 5), alloc("c2", "eth0", 6), alloc("c3", "eth0", 7)},
		},
		{
			name: "pool order does not matter", hosts: []byte{9, 7, 5},
			steps: []step{alloc("c1", "eth0", 5), alloc("c2", "eth0", 7)},
		},
		{
			name: "idempotent per container and interface", hosts: []byte{5, 6, 7},
			steps: []step{alloc("c1", "eth0", 5), alloc("c1", "eth0", 5), alloc("c1", "eth1", 6), alloc("c1", "eth0", 5), alloc("c2", "eth0", 7)},
		},
		{
			name: "idempotent even when exhausted", hosts: []byte{5},
			steps: []step{alloc("c1", "eth0", 5), alloc("c1", "eth0", 5), {op: "alloc", container: "c2", ifName: "eth0", exhausted: true}},
		},
		{
			name: "never-used addresses before released ones", hosts: []byte{5, 6, 7},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c2", "eth0", 6),
				release("c1", "eth0", time.Minute, 5),
				alloc("c3", "eth0", 7), // 5 was just released; 7 never used
				alloc("c4", "eth0", 5),
			},
		},
		{
			name: "released longest ago first", hosts: []byte{5, 6, 7},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c2", "eth0", 6), alloc("c3", "eth0", 7),
				release("c2", "eth0", 1*time.Minute, 6),
				release("c3", "eth0", 2*time.Minute, 7),
				release("c1", "eth0", 3*time.Minute, 5),
				alloc("c4", "eth0", 6), alloc("c5", "eth0", 7), alloc("c6", "eth0", 5),
			},
		},
		{
			name: "reallocated address loses its release time", hosts: []byte{5, 6},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c2", "eth0", 6),
				release("c1", "eth0", 1*time.Minute, 5),
				alloc("c3", "eth0", 5),
				release("c2", "eth0", 2*time.Minute, 6),
				release("c3", "eth0", 3*time.Minute, 5),
				alloc("c4", "eth0", 6),
			},
		},
		{
			name: "primary and gateway never handed out even if listed", hosts: []byte{1, 4, 5},
			steps: []step{alloc("c1", "eth0", 5), {op: "alloc", container: "c2", ifName: "eth0", exhausted: true}},
		},
		{
			name: "address held by another allocation skipped", hosts: []byte{5, 6}, held: []byte{5},
			steps: []step{alloc("c1", "eth0", 6), {op: "alloc", container: "c2", ifName: "eth0", exhausted: true}},
		},
		{
			name: "empty pool", hosts: nil,
			steps: []step{{op: "alloc", container: "c1", ifName: "eth0", exhausted: true}},
		},
		{
			name: "release by container frees all its interfaces", hosts: []byte{5, 6, 7},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c1", "eth1", 6), alloc("c2", "eth0", 7),
				release("c1", "", time.Minute, 5, 6),
				alloc("c2", "eth0", 7),
			},
		},
		{
			name: "release by container and interface frees one", hosts: []byte{5, 6, 7},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c1", "eth1", 6),
				release("c1", "eth1", time.Minute, 6),
				alloc("c1", "eth0", 5),
				release("c1", "eth1", 2*time.Minute),
				release("c1", "eth0", 3*time.Minute, 5),
			},
		},
		{
			name: "release of an unknown container frees nothing", hosts: []byte{5},
			steps: []step{alloc("c1", "eth0", 5), release("c2", "", time.Minute), release("c1", "eth9", time.Minute), alloc("c1", "eth0", 5)},
		},
		{
			name: "exhausted, then released", hosts: []byte{5, 6},
			steps: []step{
				alloc("c1", "eth0", 5), alloc("c2", "eth0", 6),
				{op: "alloc", container: "c3", ifName: "eth0", exhausted: true},
				release("c1", "eth0", time.Minute, 5),
				alloc("c3", "eth0", 5),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool(tt.hosts...)
			st := stateWith(p)
			for _, h := range tt.held {
				st.Allocations[host(h).String()] = &store.Allocation{IP: host(h), ContainerID: "elsewhere", IfName: "eth0"}
			}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "alloc":
					o := Owner{ContainerID: s.container, IfName: s.ifName, Network: "azure", Plugin: "azure-vnet"}
					got, err := Allocate(st, p, o, now)
					if s.exhausted {
						var ex *ExhaustedError
						if !errors.As(err, &ex) {
							t.Fatalf("step %d: Allocate(%s/%s) = %v, %v; want an *ExhaustedError", i, s.container, s.ifName, got, err)
						}
						continue
					}
					if err != nil || got != host(s.want[0]) {
						t.Fatalf("step %d: Allocate(%s/%s) = %v, %v; want %v", i, s.container, s.ifName, got, err, host(s.want[0]))
					}
				case "release":
					got := Release(st, s.container, s.ifName, now)
					sort.Slice(got, func(i, j int) bool { return got[i].Less(got[j]) })
					var want []netip.Addr
					for _, h := range s.want {
						want = append(want, host(h))
					}
					if d := cmp.Diff(want, got, nictest.EquateNetip); d != "" {
						t.Fatalf("step %d: Release(%s, %q) (-want +got):\n%s", i, s.container, s.ifName, d)
					}
					for _, a := range want {
						if p.Released[a] != now {
							t.Errorf("step %d: Release(%s, %q): Released[%v] = %v, want %v", i, s.container, s.ifName, a, p.Released[a], now)
						}
					}
				}
				if err := st.Validate(); err != nil {
					t.Fatalf("step %d: state inconsistent: %v", i, err)
				}
				for k, a := range st.Allocations {
					if a.IP == p.PrimaryIP || a.IP == p.Gateway {
						t.Fatalf("step %d: allocation %s is the primary or gateway address", i, k)
					}
				}
			}
		})
	}
}

func TestAllocateRecords(t *testing.T) {
	p := testPool(5, 6)
	p.Released = map[netip.Addr]time.Time{host(5): t0.Add(-time.Hour)}
	st := stateWith(p)
	now := time.Date(2025, 3, 1, 13, 0, 0, 0, time.FixedZone("CET", 3600))
	got, err := Allocate(st, p, Owner{ContainerID: "c1", IfName: "eth0", Network: "azure", Plugin: "azure-vnet-ipam"}, now)
	if err != nil {
		t.Fatal(err)
	}
	// 6 was never used, so it goes before 5, released an hour ago.
	if got != host(6) {
		t.Fatalf("Allocate = %v, want %v", got, host(6))
	}
	want := &store.Allocation{IP: host(6), Pool: poolID, ContainerID: "c1", IfName: "eth0", Network: "azure", Owner: "azure-vnet-ipam", Time: now.UTC()}
	if d := cmp.Diff(want, st.Allocations["10.0.0.6"], nictest.EquateNetip); d != "" {
		t.Errorf("allocation record (-want +got):\n%s", d)
	}
	if st.Allocations["10.0.0.6"].Time.Location() != time.UTC {
		t.Errorf("allocation time %v, want UTC", st.Allocations["10.0.0.6"].Time)
	}

	got, err = Allocate(st, p, Owner{ContainerID: "c2", IfName: "eth0"}, now)
	if err != nil || got != host(5) {
		t.Fatalf("second Allocate = %v, %v; want %v", got, err, host(5))
	}
	if _, ok := p.Released[host(5)]; ok {
		t.Errorf("Released still lists %v after it was handed out again", host(5))
	}
}

func TestExhaustedError(t *testing.T) {
	p := testPool(5, 6)
	st := stateWith(p)
	st.Allocations["10.0.0.5"] = &store.Allocation{IP: host(5), Pool: poolID, ContainerID: "c1"}
	st.Allocations["10.0.0.6"] = &store.Allocation{IP: host(6), Pool: poolID, ContainerID: "c2"}
	st.Allocations["10.0.0.99"] = &store.Allocation{IP: host(99), Pool: poolID, ContainerID: "c3"} // vanished from the NIC
	_, err := Allocate(st, p, Owner{ContainerID: "c4", IfName: "eth0"}, t0)
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("Allocate on a full pool = %v, want an *ExhaustedError", err)
	}
	if d := cmp.Diff(&ExhaustedError{Pool: poolID, Subnet: p.Subnet, Total: 2, InUse: 2}, ex, nictest.EquateNetip); d != "" {
		t.Errorf("ExhaustedError (-want +got):\n%s", d)
	}
	want := "no free address on NIC 000D3A6E1825 (subnet 10.0.0.0/24): the NIC has 2 secondary addresses, 2 in use"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestReleaseWithoutPool(t *testing.T) {
	st := store.NewState()
	st.Pools["p"] = &store.Pool{ID: "p"} // Released is nil
	st.Allocations["10.0.0.5"] = &store.Allocation{IP: host(5), Pool: "p", ContainerID: "c1", IfName: "eth0"}
	st.Allocations["10.0.0.6"] = &store.Allocation{IP: host(6), Pool: "gone", ContainerID: "c1", IfName: "eth1"}
	got := Release(st, "c1", "", t0)
	sort.Slice(got, func(i, j int) bool { return got[i].Less(got[j]) })
	if d := cmp.Diff([]netip.Addr{host(5), host(6)}, got, nictest.EquateNetip); d != "" {
		t.Errorf("Release (-want +got):\n%s", d)
	}
	if len(st.Allocations) != 0 {
		t.Errorf("allocations left: %v", st.Allocations)
	}
	if d := cmp.Diff(map[netip.Addr]time.Time{host(5): t0}, st.Pools["p"].Released, nictest.EquateNetip); d != "" {
		t.Errorf("Released (-want +got):\n%s", d)
	}
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name         string
		old          *store.Pool // nil: no cached pool
		fresh        *store.Pool
		wantReleased map[netip.Addr]time.Time
	}{
		{
			name:         "first read",
			fresh:        testPool(5, 6),
			wantReleased: map[netip.Addr]time.Time{},
		},
		{
			name: "history kept for present addresses only",
			old: func() *store.Pool {
				p := testPool(5, 6, 9)
				p.Released = map[netip.Addr]time.Time{host(5): t0, host(9): t0.Add(time.Minute)}
				return p
			}(),
			fresh:        testPool(5, 6, 7),
			wantReleased: map[netip.Addr]time.Time{host(5): t0},
		},
		{
			name: "fresh pool's own history ignored",
			old:  testPool(5),
			fresh: func() *store.Pool {
				p := testPool(5)
				p.Released = map[netip.Addr]time.Time{host(5): t0}
				return p
			}(),
			wantReleased: map[netip.Addr]time.Time{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store.NewState()
			if tt.old != nil {
				st.Pools[tt.old.ID] = tt.old
			}
			freshAddrs := append([]netip.Addr(nil), tt.fresh.Addresses...)
			got := Merge(st, tt.fresh)
			if got != st.Pools[tt.fresh.ID] {
				t.Errorf("Merge returned %p, state holds %p; want the same pool", got, st.Pools[tt.fresh.ID])
			}
			if got == tt.fresh {
				t.Errorf("Merge stored the caller's pool itself; want a copy")
			}
			if d := cmp.Diff(freshAddrs, got.Addresses, nictest.EquateNetip); d != "" {
				t.Errorf("merged addresses (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantReleased, got.Released, nictest.EquateNetip); d != "" {
				t.Errorf("merged Released (-want +got):\n%s", d)
			}
		})
	}
}

// TestMergeVanishedAllocated: an address that left the NIC stays with its
// holder until released, is never handed out again, and the next Merge
// forgets its release.
func TestMergeVanishedAllocated(t *testing.T) {
	p := testPool(5, 6)
	st := stateWith(p)
	if _, err := Allocate(st, p, Owner{ContainerID: "c1", IfName: "eth0"}, t0); err != nil {
		t.Fatal(err)
	}
	p = Merge(st, testPool(6))
	if a, ok := st.AllocationFor("c1", "eth0"); !ok || a.IP != host(5) {
		t.Fatalf("after Merge, c1/eth0 holds %+v, want it to keep %v", a, host(5))
	}
	if got := Release(st, "c1", "eth0", t0.Add(time.Minute)); len(got) != 1 || got[0] != host(5) {
		t.Fatalf("Release(c1, eth0) = %v, want [%v]", got, host(5))
	}
	p = Merge(st, testPool(6))
	if d := cmp.Diff(map[netip.Addr]time.Time{}, p.Released, nictest.EquateNetip); d != "" {
		t.Errorf("Released after the next Merge (-want +got):\n%s", d)
	}
	got, err := Allocate(st, p, Owner{ContainerID: "c2", IfName: "eth0"}, t0.Add(2*time.Minute))
	if err != nil || got != host(6) {
		t.Errorf("Allocate(c2) = %v, %v; want %v", got, err, host(6))
	}
	got, err = Allocate(st, p, Owner{ContainerID: "c3", IfName: "eth0"}, t0.Add(2*time.Minute))
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Errorf("Allocate(c3) = %v, %v; want exhausted (%v left the NIC)", got, err, host(5))
	}
}

func TestStale(t *testing.T) {
	p := testPool(5)
	tests := []struct {
		name   string
		p      *store.Pool
		maxAge time.Duration
		now    time.Time
		want   bool
	}{
		{"no pool", nil, time.Minute, t0, true},
		{"just read", p, time.Minute, t0, false},
		{"younger than max age", p, time.Minute, t0.Add(59 * time.Second), false},
		{"exactly max age", p, time.Minute, t0.Add(time.Minute), false},
		{"older than max age", p, time.Minute, t0.Add(time.Minute + time.Nanosecond), true},
		{"read in the future (clock stepped back)", p, time.Minute, t0.Add(-time.Second), true},
		{"zero max age", p, 0, t0.Add(time.Nanosecond), true},
	}
	for _, tt := range tests {
		if got := Stale(tt.p, tt.maxAge, tt.now); got != tt.want {
			t.Errorf("%s: Stale(pool read at %v, %v, %v) = %v, want %v", tt.name, t0, tt.maxAge, tt.now, got, tt.want)
		}
	}
}

func TestGatewayFreeInUse(t *testing.T) {
	for _, tt := range []struct{ subnet, want string }{
		{"10.0.0.0/24", "10.0.0.1"},
		{"10.0.0.77/24", "10.0.0.1"},
		{"10.240.0.0/16", "10.240.0.1"},
		{"192.168.4.8/30", "192.168.4.9"},
	} {
		if got := Gateway(netip.MustParsePrefix(tt.subnet)); got != netip.MustParseAddr(tt.want) {
			t.Errorf("Gateway(%s) = %v, want %s", tt.subnet, got, tt.want)
		}
	}

	p := testPool(1, 4, 5, 6, 7)
	st := stateWith(p)
	st.Allocations["10.0.0.6"] = &store.Allocation{IP: host(6), ContainerID: "c"}
	st.Allocations["10.0.0.200"] = &store.Allocation{IP: host(200), ContainerID: "d"}
	if d := cmp.Diff([]netip.Addr{host(5), host(7)}, Free(st, p), nictest.EquateNetip); d != "" {
		t.Errorf("Free (-want +got):\n%s", d)
	}
	if got := InUse(st, p); got != 1 {
		t.Errorf("InUse = %d, want 1", got)
	}
}
