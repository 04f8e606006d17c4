package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	netv1 "k8s.io/api/networking/v1"
)

func TestEnsurePodFailsClosedBeforeReady(t *testing.T) {
	e := NewEngine(&Fake{})
	e.Update(func(m *Model) { m.SetPod(mkPod("shop", "db", "", "tier=database")) })
	err := e.EnsurePod(context.Background(), "shop", "db", netip.MustParseAddr("10.0.0.12"))
	if !errors.Is(err, ErrNotReady) {
		t.Errorf("EnsurePod before SetReady = %v, want ErrNotReady", err)
	}
}

// TestEnsurePodProgramsBeforeReturning: when EnsurePod returns, the kernel
// sends the new pod's traffic down its policies' chain.
func TestEnsurePodProgramsBeforeReturning(t *testing.T) {
	k := &Fake{}
	e := NewEngine(k)
	e.Update(func(m *Model) {
		m.SetPod(mkPod("shop", "db", "", "tier=database"))
		m.SetPolicy(mkPolicy("shop", "db", "tier=database", ingressRule(peers(podPeer("tier=backend")))))
	})
	e.SetReady()
	if err := e.EnsurePod(context.Background(), "shop", "db", netip.MustParseAddr("10.0.0.12")); err != nil {
		t.Fatal(err)
	}
	if d := k.Dump(); !strings.Contains(d, "10.0.0.12 : jump pods-in-") {
		t.Errorf("after EnsurePod the table has no verdict for 10.0.0.12:\n%s", d)
	}
	e.ReleasePod("shop", "db", netip.MustParseAddr("10.0.0.12"))
	if err := e.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := k.Dump(); strings.Contains(d, "10.0.0.12") {
		t.Errorf("after ReleasePod the table still has 10.0.0.12:\n%s", d)
	}
}

// TestEnsurePodWaitsForThePod: a pod the informers have not delivered yet
// is waited for; one that never comes is an error when ctx ends.
func TestEnsurePodWaitsForThePod(t *testing.T) {
	k := &Fake{}
	e := NewEngine(k)
	e.SetReady()
	done := make(chan error, 1)
	go func() {
		done <- e.EnsurePod(context.Background(), "shop", "late", netip.MustParseAddr("10.0.0.40"))
	}()
	e.Update(func(m *Model) { m.SetNamespace(Namespace{Name: "shop"}) }) // not yet the pod
	e.Update(func(m *Model) {
		m.SetPod(mkPod("shop", "late", "", "a=b"))
		m.SetPolicy(mkPolicy("shop", "deny", "", types(netv1.PolicyTypeIngress)))
	})
	if err := <-done; err != nil {
		t.Fatalf("EnsurePod = %v", err)
	}
	if !strings.Contains(k.Dump(), "10.0.0.40 : jump") {
		t.Errorf("pod not enforced:\n%s", k.Dump())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.EnsurePod(ctx, "shop", "never", netip.MustParseAddr("10.0.0.41")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("EnsurePod of an unknown pod = %v, want a deadline error", err)
	}
}

// TestSyncRebuildsALostTable: when an update fails (the table was deleted
// or changed behind the engine), the next sync replaces it whole; a
// kernel that refuses makes EnsurePod fail.
func TestSyncRebuildsALostTable(t *testing.T) {
	k := &Fake{}
	e := NewEngine(k)
	e.Update(func(m *Model) {
		m.SetPod(mkPod("shop", "db", "10.0.0.12", "tier=database"))
		m.SetPolicy(mkPolicy("shop", "deny", "", types(netv1.PolicyTypeIngress)))
	})
	e.SetReady()
	if err := e.Sync(); err != nil {
		t.Fatal(err)
	}
	k.Clear()
	e.Update(func(m *Model) { m.SetPod(mkPod("shop", "fe", "10.0.0.10", "tier=frontend")) })
	if err := e.Sync(); err != nil {
		t.Fatalf("Sync after the table was lost: %v", err)
	}
	if d := k.Dump(); !strings.Contains(d, "10.0.0.10 : jump") || !strings.Contains(d, "10.0.0.12 : jump") {
		t.Errorf("table not rebuilt:\n%s", d)
	}
	if k.Replaces != 2 {
		t.Errorf("Replaces = %d, want 2 (start, rebuild)", k.Replaces)
	}
	k.Err = errors.New("kernel says no")
	if err := e.EnsurePod(context.Background(), "shop", "fe", netip.MustParseAddr("10.0.0.10")); err == nil {
		t.Error("EnsurePod with a failing kernel succeeded")
	}
}

// TestRunSyncsUpdates: Run applies updates in the background.
func TestRunSyncsUpdates(t *testing.T) {
	k := &Fake{}
	e := NewEngine(k)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx, nil)
	e.SetReady()
	e.Update(func(m *Model) {
		m.SetPod(mkPod("shop", "db", "10.0.0.12", "tier=database"))
		m.SetPolicy(mkPolicy("shop", "deny", "", types(netv1.PolicyTypeIngress)))
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(k.Dump(), "10.0.0.12 : jump") {
		if time.Now().After(deadline) {
			t.Fatalf("update not synced after 10s:\n%s", k.Dump())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunWaitsForReady: updates before SetReady (informers still filling)
// do not touch the kernel, so an agent restarting keeps the previous
// table in force; SetReady syncs at once.
func TestRunWaitsForReady(t *testing.T) {
	k := &Fake{}
	e := NewEngine(k)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx, nil)
	e.Update(func(m *Model) { m.SetPod(mkPod("shop", "db", "", "tier=database")) })
	time.Sleep(50 * time.Millisecond)
	if k.Replaces+k.Updates != 0 {
		t.Fatalf("kernel touched before SetReady: %d replaces, %d updates", k.Replaces, k.Updates)
	}
	e.SetReady()
	deadline := time.Now().Add(5 * time.Second)
	for e.Applied() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no sync after SetReady")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
