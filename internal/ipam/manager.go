package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Manager allocates from one NIC's pool, keeping the pool cached in the
// store. Source queries happen outside the store lock.
type Manager struct {
	Store  *store.Store
	Source Source
	MAC    net.HardwareAddr // the NIC whose secondaries form the pool
	MaxAge time.Duration    // re-read the source when the cache is older
	Now    func() time.Time
	// OnStale, when set, hears that the pool source failed and a stale
	// cached pool with free addresses is used instead.
	OnStale func(cached *store.Pool, err error)
	// Avoid holds addresses never to hand out, whatever the state says:
	// the node's kernel still gives them to pods (a state file restored
	// from an old copy does not know them).
	Avoid map[netip.Addr]bool
	// NodeHeld holds addresses the node itself has on a link: never handed
	// out, counted apart in the exhaustion error.
	NodeHeld map[netip.Addr]bool
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// PoolID is the store key of the manager's pool.
func (m *Manager) PoolID() string { return nic.FormatAzureMAC(m.MAC) }

// poolLock serialises reading the pool source: a burst of ADDs on a cold
// or exhausted cache queries the source once, not once per process.
const poolLock = "pool.lock"

// Pool returns the cached pool, re-reading the source first when it is
// missing, stale, or has no free address.
func (m *Manager) Pool(ctx context.Context) (*store.Pool, error) {
	st, err := m.Store.Read()
	if err != nil && !store.IsDamaged(err) {
		return nil, err
	}
	var seen time.Time
	var cached *store.Pool
	if err == nil {
		p := st.Pools[m.PoolID()]
		free := p != nil && len(Free(st, p)) > 0
		if !Stale(p, m.MaxAge, m.now()) && free {
			return p, nil
		}
		if p != nil {
			seen = p.ReadAt
			if free {
				cached = p
			}
		}
	}
	p, rerr := m.refreshOnce(ctx, seen)
	if rerr != nil && cached != nil {
		// The source is down or slow, but the cached pool still has free
		// addresses: an outage of the wireserver must not stop pods.
		if m.OnStale != nil {
			m.OnStale(cached, rerr)
		}
		return cached, nil
	}
	return p, rerr
}

// refreshOnce re-reads the source unless another process did while this
// one waited for the pool lock (the cached pool is no longer the one read
// at seen): its answer is as fresh as ours would be.
func (m *Manager) refreshOnce(ctx context.Context, seen time.Time) (*store.Pool, error) {
	unlock, err := m.Store.Lock(poolLock)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if st, err := m.Store.Read(); err == nil {
		if p := st.Pools[m.PoolID()]; p != nil && !p.ReadAt.Equal(seen) && !Stale(p, m.MaxAge, m.now()) {
			return p, nil
		}
	}
	return m.Refresh(ctx)
}

// Refresh reads the pool from the source and stores it.
func (m *Manager) Refresh(ctx context.Context) (*store.Pool, error) {
	ifs, err := m.Source.Interfaces(ctx)
	if err != nil {
		return nil, fmt.Errorf("read address pool: %w", err)
	}
	fresh, err := PoolFrom(ifs, m.MAC, m.Source.String(), m.now())
	if err != nil {
		return nil, fmt.Errorf("read address pool: %w", err)
	}
	var merged *store.Pool
	if err := m.Store.Update(func(st *store.State) error {
		merged = Merge(st, fresh)
		return nil
	}); err != nil {
		return nil, err
	}
	return merged, nil
}

// Allocate gives owner an address. record, when not nil, runs in the same
// store update with the address chosen, so the caller can persist what it is
// about to build in the same atomic write.
func (m *Manager) Allocate(ctx context.Context, o Owner, record func(st *store.State, p *store.Pool, ip netip.Addr) error) (netip.Addr, *store.Pool, error) {
	p, err := m.Pool(ctx)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	refreshed := false
	for {
		var ip netip.Addr
		var pool *store.Pool
		var seen time.Time
		err = m.Store.Update(func(st *store.State) error {
			pool = st.Pools[p.ID]
			if pool != nil {
				seen = pool.ReadAt
			}
			if pool == nil {
				pool = Merge(st, p)
			}
			var err error
			ip, err = allocate(st, pool, o, m.now(), m.Avoid, m.NodeHeld)
			if err != nil {
				return err
			}
			if record != nil {
				return record(st, pool, ip)
			}
			return nil
		})
		var ex *ExhaustedError
		if errors.As(err, &ex) && !refreshed {
			// The NIC may have been given more addresses since the pool was read.
			refreshed = true
			if p, err = m.refreshOnce(ctx, seen); err != nil {
				return netip.Addr{}, nil, err
			}
			continue
		}
		if err != nil {
			return netip.Addr{}, nil, err
		}
		return ip, pool, nil
	}
}

// Release frees what a container interface holds (all its interfaces when
// ifName is empty). record, when not nil, runs in the same store update.
func (m *Manager) Release(containerID, ifName string, record func(st *store.State) error) ([]netip.Addr, error) {
	var freed []netip.Addr
	err := m.Store.Update(func(st *store.State) error {
		freed = Release(st, containerID, ifName, m.now())
		if record != nil {
			return record(st)
		}
		return nil
	})
	return freed, err
}
