package cniplugin

import (
	"testing"
	"time"
)

func TestReadyCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewReadyCache(2 * time.Second)
	c.Now = func() time.Time { return now }

	if fresh, _ := c.fresh("n"); fresh {
		t.Fatal("fresh before any check, want a check")
	}
	_, gen := c.fresh("n")
	c.verified("n", gen, now)
	if fresh, _ := c.fresh("n"); !fresh {
		t.Error("not fresh right after a check found it intact")
	}
	if fresh, _ := c.fresh("other"); fresh {
		t.Error("another network's key is fresh without a check")
	}
	now = now.Add(2 * time.Second)
	if fresh, _ := c.fresh("n"); fresh {
		t.Error("fresh MaxAge after the check, want a check")
	}

	_, gen = c.fresh("n")
	c.verified("n", gen, now)
	c.Invalidate()
	if fresh, _ := c.fresh("n"); fresh {
		t.Error("fresh after Invalidate, want a check")
	}

	// A loss notified while a check runs: the check may have seen the
	// rules before they went; it must not be recorded.
	_, gen = c.fresh("n")
	c.Invalidate()
	c.verified("n", gen, now)
	if fresh, _ := c.fresh("n"); fresh {
		t.Error("a check that raced an invalidation was recorded")
	}
}
