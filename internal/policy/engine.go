package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Kernel holds the policy table: *Nftables on a node, Fake in tests.
type Kernel interface {
	// Replace makes the table hold exactly the state, atomically.
	Replace(*State) error
	// Update applies Diff's operations in one transaction.
	Update([]Op) error
}

// ErrNotReady is returned by EnsurePod before the engine has the cluster's
// pods, namespaces and policies: a pod started then could be one a policy
// selects, so CNI ADD must fail and be retried rather than start it open.
var ErrNotReady = errors.New("network policy engine not ready: the cluster's policies are not loaded yet; retry")

// Engine keeps the kernel's policy table in step with the model. The node
// agent feeds it the API's objects (Update, from informers), calls
// EnsurePod from CNI ADD before answering, so a selected pod's isolation is
// in the kernel before its first packet, and ReleasePod from DEL.
type Engine struct {
	kernel Kernel

	mu      sync.Mutex
	model   *Model
	ready   bool
	changed chan struct{} // closed and replaced on every Update

	syncMu  sync.Mutex // one sync at a time, model lock not held in the kernel
	applied *State     // what the kernel holds; nil: unknown, Replace next
	dirty   chan struct{}
}

// NewEngine returns an engine over a kernel table; nothing is programmed
// until the first Sync.
func NewEngine(k Kernel) *Engine {
	return &Engine{kernel: k, model: NewModel(), changed: make(chan struct{}), dirty: make(chan struct{}, 1)}
}

// Update changes the model and schedules a sync (Run does it).
func (e *Engine) Update(change func(m *Model)) {
	e.mu.Lock()
	change(e.model)
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	e.poke()
}

// SetReady tells the engine the model holds the whole cluster (informers
// synced); EnsurePod refuses and Run does not touch the kernel until then,
// and the first sync follows at once.
func (e *Engine) SetReady() {
	e.mu.Lock()
	e.ready = true
	e.mu.Unlock()
	e.poke()
}

// Ready reports whether SetReady was called.
func (e *Engine) Ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ready
}

func (e *Engine) poke() {
	select {
	case e.dirty <- struct{}{}:
	default:
	}
}

// View runs fn with the model, read-only (explain, metrics).
func (e *Engine) View(fn func(m *Model)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn(e.model)
}

// Applied returns what the kernel holds (nil before the first sync); the
// caller must not modify it.
func (e *Engine) Applied() *State {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	return e.applied
}

// Sync compiles the model and brings the kernel to it: element-level
// operations when the kernel's content is known, a whole atomic Replace
// after a failure or at start (an agent restart keeps the old table in
// force until the new one replaces it in the same transaction).
func (e *Engine) Sync() error {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	e.mu.Lock()
	want := Compile(e.model)
	e.mu.Unlock()
	if e.applied != nil {
		if err := e.kernel.Update(Diff(e.applied, want)); err == nil {
			e.applied = want
			return nil
		}
		// The table is not what we think (changed behind our back, or a
		// partial failure): rebuild it whole.
	}
	e.applied = nil
	if err := e.kernel.Replace(want); err != nil {
		return fmt.Errorf("sync network policy: %w", err)
	}
	e.applied = want
	return nil
}

// Run syncs after every Update until ctx ends, retrying failures with
// backoff; onError (may be nil) hears about each failure. Nothing is
// synced before SetReady: a model still filling from the informers (pods
// known, their policies not yet) would replace an agent's previous table
// with one that leaves selected pods open.
func (e *Engine) Run(ctx context.Context, onError func(error)) {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.dirty:
		}
		if !e.Ready() {
			continue // SetReady pokes
		}
		if err := e.Sync(); err != nil {
			if onError != nil {
				onError(err)
			}
			select {
			case e.dirty <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// EnsurePod gives a local pod the address CNI ADD allocated and returns
// once the kernel enforces the pod's policies on it (and knows it as a
// peer). It waits, until ctx ends, for the pod to appear from the API; a
// pod the engine cannot place is an error, never an open pod.
func (e *Engine) EnsurePod(ctx context.Context, namespace, name string, ip netip.Addr) error {
	for {
		e.mu.Lock()
		if !e.ready {
			e.mu.Unlock()
			return ErrNotReady
		}
		_, known := e.model.Pod(namespace, name)
		if known {
			e.model.Bind(namespace, name, ip)
			e.mu.Unlock()
			break
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure policy for pod %s/%s: the pod is not known to the policy engine yet: %w", namespace, name, ctx.Err())
		case <-changed:
		}
	}
	if err := e.Sync(); err != nil {
		return fmt.Errorf("ensure policy for pod %s/%s (%s): %w", namespace, name, ip, err)
	}
	return nil
}

// ReleasePod forgets the address EnsurePod gave a pod (CNI DEL) and
// schedules a sync.
func (e *Engine) ReleasePod(namespace, name string, ip netip.Addr) {
	e.Update(func(m *Model) { m.Unbind(namespace, name, ip) })
}
