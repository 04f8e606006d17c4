package cniplugin

import (
	"sync"
	"time"
)

// ReadyCache lets a long-lived process (vnetd) skip the per-ADD check that
// a network's node-level setup — the bridge, its netfilter sysctl, every
// static nftables rule — is intact, for a while after a check found it so.
// The check lists the network's tables, chains and rules and costs more
// than the rest of an ADD served by the agent. The agent invalidates the
// cache on every kernel notification that may mean a loss (the ones its
// reconciler repairs); MaxAge bounds what notifications cannot tell
// (sysctls, a monitor that failed).
type ReadyCache struct {
	MaxAge time.Duration
	Now    func() time.Time

	mu  sync.Mutex
	gen uint64
	at  map[string]time.Time // key: network and its rules' fingerprint
}

// NewReadyCache returns a cache whose verifications last maxAge.
func NewReadyCache(maxAge time.Duration) *ReadyCache {
	return &ReadyCache{MaxAge: maxAge, Now: time.Now, at: map[string]time.Time{}}
}

// Invalidate forgets every verification: something may have been lost.
func (c *ReadyCache) Invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.at)
	c.mu.Unlock()
}

// fresh reports whether key was verified recently, and otherwise the
// generation to pass to verified after checking.
func (c *ReadyCache) fresh(key string) (bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.at[key]
	return ok && c.Now().Sub(t) < c.MaxAge, c.gen
}

// verified records a check that found key intact, unless an invalidation
// came while it ran.
func (c *ReadyCache) verified(key string, gen uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.at[key] = at
	}
}
