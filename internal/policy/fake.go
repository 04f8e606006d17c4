package policy

import (
	"fmt"
	"sync"
)

// Fake is a Kernel that keeps the table in memory, applying operations
// with the kernel's checks (objects exist before use, unused when deleted,
// no duplicate or overlapping elements). Dump prints it in nft syntax.
type Fake struct {
	mu    sync.Mutex
	state *State
	// Err, when set, fails every call.
	Err error
	// Replaces and Updates count the calls that succeeded.
	Replaces, Updates int
}

// Replace implements Kernel.
func (f *Fake) Replace(s *State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	f.state = s.Clone()
	f.Replaces++
	return nil
}

// Update implements Kernel.
func (f *Fake) Update(ops []Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if f.state == nil {
		return fmt.Errorf("update %s: no such table", TableName)
	}
	next := f.state.Clone()
	if err := next.Apply(ops); err != nil {
		return err
	}
	f.state = next
	f.Updates++
	return nil
}

// Dump prints the table as nft -f input; "" when there is none.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return ""
	}
	return f.state.Render()
}

// Clear loses the table, as if someone deleted it.
func (f *Fake) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = nil
}
