package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
	"github.com/vnetcni/vnetcni/internal/store"
)

// fakeSource serves a NIC 000D3A6E1825 in 10.0.0.0/16 (primary 10.0.0.4)
// with a settable number of secondaries, and counts its queries.
type fakeSource struct {
	t testing.TB

	mu          sync.Mutex
	calls       int
	secondaries int
	err         error
	// during, when set, runs inside a query (outside any store lock), as
	// another process acting while this one waits for the wireserver.
	during func(call int)
}

func (s *fakeSource) Interfaces(context.Context) ([]nic.Interface, error) {
	s.mu.Lock()
	s.calls++
	call, n, err, during := s.calls, s.secondaries, s.err, s.during
	s.mu.Unlock()
	if during != nil {
		during(call)
	}
	if err != nil {
		return nil, err
	}
	return []nic.Interface{s.nic(n)}, nil
}

func (s *fakeSource) nic(n int) nic.Interface {
	sub := nic.Subnet{Prefix: netip.MustParsePrefix("10.0.0.0/16"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.0.0.4"), IsPrimary: true}}}
	for i := 0; i < n; i++ {
		sub.Addresses = append(sub.Addresses, nic.Address{IP: secondary(i)})
	}
	return nic.Interface{MAC: nictest.MAC(s.t, "00:0d:3a:6e:18:25"), IsPrimary: true, Subnets: []nic.Subnet{sub}}
}

func (s *fakeSource) String() string { return "fake source" }

func (s *fakeSource) set(secondaries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secondaries = secondaries
}

func (s *fakeSource) queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// secondary is the i-th secondary of the fake NIC: 10.0.1.i (from 10.0.1.0).
func secondary(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, 1 + byte(i/256), byte(i % 256)})
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newManager returns a manager over a store in dir, as one CNI process has.
func newManager(t testing.TB, dir string, src Source, clk *clock) *Manager {
	t.Helper()
	return &Manager{
		Store:  store.New(dir),
		Source: src,
		MAC:    nictest.MAC(t, "00:0d:3a:6e:18:25"),
		MaxAge: time.Minute,
		Now:    clk.Now,
	}
}

func owner(c string) Owner {
	return Owner{ContainerID: c, IfName: "eth0", Network: "azure", Plugin: "azure-vnet"}
}

func TestManagerPoolCaching(t *testing.T) {
	src := &fakeSource{t: t, secondaries: 2}
	clk := &clock{now: t0}
	m := newManager(t, t.TempDir(), src, clk)
	ctx := context.Background()

	steps := []struct {
		name      string
		before    func()
		wantCalls int
	}{
		{name: "first Pool reads the source", wantCalls: 1},
		{name: "fresh: cached", wantCalls: 1},
		{name: "still fresh after 59s", before: func() { clk.advance(59 * time.Second) }, wantCalls: 1},
		{name: "stale after MaxAge: read again", before: func() { clk.advance(2 * time.Second) }, wantCalls: 2},
		{name: "fresh again", before: func() { clk.advance(time.Second) }, wantCalls: 2},
		{name: "clock stepped back: read again", before: func() { clk.advance(-time.Hour) }, wantCalls: 3},
		{name: "two of two allocated: exhausted, read again", before: func() {
			for _, c := range []string{"c1", "c2"} {
				if _, _, err := m.Allocate(ctx, owner(c), nil); err != nil {
					t.Fatalf("Allocate(%s): %v", c, err)
				}
			}
		}, wantCalls: 4},
		{name: "still exhausted: read again", wantCalls: 5},
		{name: "NIC grew: fresh and free, cached", before: func() { src.set(3) }, wantCalls: 6},
		{name: "cached", wantCalls: 6},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		p, err := m.Pool(ctx)
		if err != nil {
			t.Fatalf("%s: Pool: %v", s.name, err)
		}
		if got := src.queries(); got != s.wantCalls {
			t.Errorf("%s: source queried %d times in all, want %d", s.name, got, s.wantCalls)
		}
		if p.ID != m.PoolID() || p.Source != "fake source" || p.Gateway != netip.MustParseAddr("10.0.0.1") {
			t.Errorf("%s: Pool() = %+v, want pool %s from fake source with gateway 10.0.0.1", s.name, p, m.PoolID())
		}
	}
	// The stale re-read stamped the pool with the time of reading.
	st, err := m.Store.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Pools[m.PoolID()].ReadAt; !got.Equal(clk.Now()) {
		t.Errorf("pool ReadAt %v, want %v", got, clk.Now())
	}
}

func TestManagerAllocate(t *testing.T) {
	src := &fakeSource{t: t, secondaries: 3}
	clk := &clock{now: t0}
	m := newManager(t, t.TempDir(), src, clk)
	ctx := context.Background()

	record := func(st *store.State, p *store.Pool, ip netip.Addr) error {
		st.Endpoints[store.EndpointKey("c1", "eth0")] = &store.Endpoint{ContainerID: "c1", IfName: "eth0", IP: netip.PrefixFrom(ip, p.Subnet.Bits())}
		return nil
	}
	ip, p, err := m.Allocate(ctx, owner("c1"), record)
	if err != nil {
		t.Fatalf("Allocate(c1): %v", err)
	}
	if ip != secondary(0) || p.ID != m.PoolID() {
		t.Errorf("Allocate(c1) = %v, pool %s; want %v from %s", ip, p.ID, secondary(0), m.PoolID())
	}
	again, _, err := m.Allocate(ctx, owner("c1"), nil)
	if err != nil || again != ip {
		t.Errorf("repeated Allocate(c1) = %v, %v; want %v", again, err, ip)
	}
	st, err := m.Store.Read()
	if err != nil {
		t.Fatal(err)
	}
	if e := st.Endpoints["c1/eth0"]; e == nil || e.IP != netip.PrefixFrom(ip, 16) {
		t.Errorf("record's endpoint %+v, want one for %v/16 stored with the allocation", e, ip)
	}

	// A failing record aborts the whole update: no allocation is kept.
	errRecord := errors.New("record failed")
	_, _, err = m.Allocate(ctx, owner("c2"), func(*store.State, *store.Pool, netip.Addr) error { return errRecord })
	if !errors.Is(err, errRecord) {
		t.Errorf("Allocate(c2) with a failing record = %v, want %v", err, errRecord)
	}
	if st, _ := m.Store.Read(); len(st.Allocations) != 1 {
		t.Errorf("after a failed record, allocations %v, want only c1's", st.Allocations)
	}

	// Release returns the address and runs record in the same update.
	freed, err := m.Release("c1", "", func(st *store.State) error {
		delete(st.Endpoints, "c1/eth0")
		return nil
	})
	if err != nil || len(freed) != 1 || freed[0] != ip {
		t.Errorf("Release(c1) = %v, %v; want [%v]", freed, err, ip)
	}
	st, err = m.Store.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Allocations) != 0 || len(st.Endpoints) != 0 {
		t.Errorf("after Release, allocations %v endpoints %v; want none", st.Allocations, st.Endpoints)
	}
	if !st.Pools[m.PoolID()].Released[ip].Equal(t0) {
		t.Errorf("Released[%v] = %v, want %v", ip, st.Pools[m.PoolID()].Released[ip], t0)
	}
	if got := src.queries(); got != 1 {
		t.Errorf("source queried %d times, want 1 (pool fresh and never exhausted)", got)
	}
}

// TestManagerAllocateRetriesAfterRefresh: another process takes the last
// free address while this one reads the source; the allocation finds the
// pool exhausted, re-reads the NIC (which has grown) and retries once.
func TestManagerAllocateRetriesAfterRefresh(t *testing.T) {
	dir := t.TempDir()
	src := &fakeSource{t: t, secondaries: 1}
	clk := &clock{now: t0}
	other := newManager(t, dir, src, clk)
	src.during = func(call int) {
		if call != 1 {
			return
		}
		// The other process allocates the only address, reading the
		// NIC as it is now.
		err := other.Store.Update(func(st *store.State) error {
			p, err := PoolFrom([]nic.Interface{src.nic(1)}, other.MAC, "other", clk.Now())
			if err != nil {
				return err
			}
			_, err = Allocate(st, Merge(st, p), owner("other"), clk.Now())
			return err
		})
		if err != nil {
			t.Errorf("other process: %v", err)
		}
		src.set(2) // and the NIC is given another address
	}
	m := newManager(t, dir, src, clk)
	ip, _, err := m.Allocate(context.Background(), owner("c1"), nil)
	if err != nil {
		t.Fatalf("Allocate(c1): %v", err)
	}
	if ip != secondary(1) {
		t.Errorf("Allocate(c1) = %v, want %v (the address added to the NIC)", ip, secondary(1))
	}
	if got := src.queries(); got != 2 {
		t.Errorf("source queried %d times, want 2 (first read, one retry)", got)
	}
}

func TestManagerAllocateExhausted(t *testing.T) {
	src := &fakeSource{t: t, secondaries: 2}
	clk := &clock{now: t0}
	m := newManager(t, t.TempDir(), src, clk)
	ctx := context.Background()
	for _, c := range []string{"c1", "c2"} {
		if _, _, err := m.Allocate(ctx, owner(c), nil); err != nil {
			t.Fatalf("Allocate(%s): %v", c, err)
		}
	}
	before := src.queries()
	_, _, err := m.Allocate(ctx, owner("c3"), nil)
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("Allocate(c3) on a full NIC = %v, want an *ExhaustedError", err)
	}
	want := "no free address on NIC 000D3A6E1825 (subnet 10.0.0.0/16): the NIC has 2 secondary addresses, 2 in use"
	if err.Error() != want {
		t.Errorf("Allocate(c3) error %q, want %q", err, want)
	}
	// The NIC is re-read before giving up, but not in a loop.
	if n := src.queries() - before; n < 1 || n > 2 {
		t.Errorf("exhausted Allocate queried the source %d times, want 1 or 2", n)
	}
}

func TestManagerSourceError(t *testing.T) {
	errDown := errors.New("connection refused")
	src := &fakeSource{t: t, err: errDown}
	m := newManager(t, t.TempDir(), src, &clock{now: t0})
	_, _, err := m.Allocate(context.Background(), owner("c1"), nil)
	if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "read address pool") {
		t.Errorf("Allocate with the source down = %v, want a read address pool error wrapping %v", err, errDown)
	}

	// A source without the manager's NIC.
	src = &fakeSource{t: t, secondaries: 1}
	m = newManager(t, t.TempDir(), src, &clock{now: t0})
	m.MAC = nictest.MAC(t, "00:0d:3a:00:00:01")
	_, err = m.Pool(context.Background())
	if want := "fake source lists no interface with MAC 000D3A000001 (it lists 000D3A6E1825)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Pool for a NIC the source does not list = %v, want it to contain %q", err, want)
	}
}

// TestManagerConcurrentAllocate: 50 CNI processes, each with its own Manager
// and Store on one directory, allocate at once.
func TestManagerConcurrentAllocate(t *testing.T) {
	const pods = 50
	dir := t.TempDir()
	src := &fakeSource{t: t, secondaries: pods + 10}
	clk := &clock{now: t0}

	var wg sync.WaitGroup
	ips := make([]netip.Addr, pods)
	errs := make([]error, pods)
	start := make(chan struct{})
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := newManager(t, dir, src, clk)
			<-start
			ips[i], _, errs[i] = m.Allocate(context.Background(), owner(fmt.Sprintf("c%02d", i)), nil)
		}()
	}
	close(start)
	wg.Wait()

	byIP := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Errorf("Allocate(c%02d): %v", i, errs[i])
			continue
		}
		if prev, dup := byIP[ip]; dup {
			t.Errorf("c%02d and c%02d were both given %v", prev, i, ip)
		}
		byIP[ip] = i
	}
	st, err := store.New(dir).Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Allocations) != pods || len(byIP) != pods {
		t.Errorf("%d allocations stored, %d distinct addresses handed out; want %d of each", len(st.Allocations), len(byIP), pods)
	}
	for i, ip := range ips {
		if a := st.Allocations[ip.String()]; a == nil || a.ContainerID != fmt.Sprintf("c%02d", i) {
			t.Errorf("stored allocation for %v is %+v, want c%02d's", ip, a, i)
		}
	}
	t.Logf("%d concurrent first allocations queried the source %d times", pods, src.queries())
}

// TestManagerColdBurstQueriesOnce: processes that find the cache empty at
// the same time wait for the one reading the source and use its answer.
func TestManagerColdBurstQueriesOnce(t *testing.T) {
	const pods = 30
	dir := t.TempDir()
	src := &fakeSource{t: t, secondaries: pods}
	clk := &clock{now: t0}
	release := make(chan struct{})
	src.during = func(call int) {
		if call == 1 {
			<-release // hold the first query until every process is waiting
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, pods)
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = newManager(t, dir, src, clk).Allocate(context.Background(), owner(fmt.Sprintf("c%02d", i)), nil)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Allocate(c%02d): %v", i, err)
		}
	}
	if got := src.queries(); got != 1 {
		t.Errorf("%d processes on a cold cache queried the source %d times, want 1", pods, got)
	}
}

// TestManagerAvoid: addresses the kernel still gives pods are skipped even
// when the state has them free, and an exhausted pool says so.
func TestManagerAvoid(t *testing.T) {
	src := &fakeSource{t: t, secondaries: 3}
	m := newManager(t, t.TempDir(), src, &clock{now: t0})
	m.Avoid = map[netip.Addr]bool{secondary(0): true, secondary(2): true}
	ip, _, err := m.Allocate(context.Background(), owner("c1"), nil)
	if err != nil || ip != secondary(1) {
		t.Fatalf("Allocate(c1) avoiding %v and %v = %v, %v; want %v", secondary(0), secondary(2), ip, err, secondary(1))
	}
	_, _, err = m.Allocate(context.Background(), owner("c2"), nil)
	want := "the NIC has 3 secondary addresses, 1 in use and 2 held by pods the state does not record"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Allocate(c2) = %v, want an error saying %q", err, want)
	}
	// The owner's own address is its own, avoided or not.
	m.Avoid[secondary(1)] = true
	if again, _, err := m.Allocate(context.Background(), owner("c1"), nil); err != nil || again != ip {
		t.Errorf("repeated Allocate(c1) = %v, %v; want %v", again, err, ip)
	}
}

// A stale pool with free addresses is used when its source fails: an
// outage of the wireserver does not stop pods.
func TestPoolFallsBackToStaleCacheWhenSourceFails(t *testing.T) {
	dir := t.TempDir()
	testMAC := nictest.MAC(t, "00:0d:3a:6e:18:25")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src := &failingSource{ifs: []nic.Interface{{MAC: testMAC, IsPrimary: true, Subnets: []nic.Subnet{{
		Prefix:    netip.MustParsePrefix("10.0.0.0/24"),
		Addresses: []nic.Address{{IP: netip.MustParseAddr("10.0.0.4"), IsPrimary: true}, {IP: netip.MustParseAddr("10.0.0.5")}},
	}}}}}
	var warned error
	m := &Manager{Store: store.New(dir), Source: src, MAC: testMAC, MaxAge: time.Minute, Now: func() time.Time { return now },
		OnStale: func(_ *store.Pool, err error) { warned = err }}
	if _, err := m.Pool(context.Background()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	src.fail = errors.New("wireserver down")
	p, err := m.Pool(context.Background())
	if err != nil || p == nil || len(p.Addresses) != 1 {
		t.Fatalf("Pool with the source down and a stale cache = %v, %v; want the cached pool", p, err)
	}
	if warned == nil {
		t.Errorf("OnStale was not told")
	}
	// Without free addresses the failure is the answer.
	if _, _, err := m.Allocate(context.Background(), Owner{ContainerID: "a", IfName: "eth0"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pool(context.Background()); err == nil {
		t.Errorf("Pool with no free address and the source down succeeded")
	}
}

type failingSource struct {
	ifs  []nic.Interface
	fail error
}

func (s *failingSource) Interfaces(context.Context) ([]nic.Interface, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	return s.ifs, nil
}

func (s *failingSource) String() string { return "test source" }
