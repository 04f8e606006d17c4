package store

import (
	"errors"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// increment is an update that counts in the "counter" network's Rules.
func increment(st *State) error {
	n := st.Networks["counter"]
	if n == nil {
		n = &Network{Name: "counter", Rules: "0"}
		st.Networks["counter"] = n
	}
	c, err := strconv.Atoi(n.Rules)
	if err != nil {
		return err
	}
	n.Rules = strconv.Itoa(c + 1)
	return nil
}

func counter(t *testing.T, dir string) string {
	t.Helper()
	st, err := New(dir).Read() // as another process reads it
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Networks["counter"]; n != nil {
		return n.Rules
	}
	return ""
}

// TestCommitterConcurrent: goroutines of one process (each with its own
// Store on a shared Committer) and other processes (Stores without one)
// update the file at once; none of the updates is lost, and every one
// acknowledged is in the file.
func TestCommitterConcurrent(t *testing.T) {
	dir := t.TempDir()
	c := NewCommitter(dir)
	const agents, plugins, rounds = 16, 4, 20
	var writes atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, (agents+plugins)*rounds)
	for w := 0; w < agents+plugins; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				s := New(dir)
				if w < agents {
					s.Committer = c
					s.OnWrite = func() { writes.Add(1) }
				}
				errs <- s.Update(increment)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	if got, want := counter(t, dir), strconv.Itoa((agents+plugins)*rounds); got != want {
		t.Errorf("counter after %d×%d increments = %s, want %s", agents+plugins, rounds, got, want)
	}
	if n := writes.Load(); n > agents*rounds {
		t.Errorf("the committer wrote %d times for %d updates", n, agents*rounds)
	}
	if d := cmp.Diff([]string{FileName, LockName}, dirEntries(t, dir)); d != "" {
		t.Errorf("state dir (-want +got):\n%s", d)
	}
}

// TestCommitterFailedUpdate: an update that fails after changing its copy
// leaves nothing behind, in the file or in the kept state, and the updates
// committed with it stand.
func TestCommitterFailedUpdate(t *testing.T) {
	dir := t.TempDir()
	c := NewCommitter(dir)
	s := &Store{Dir: dir, Committer: c}
	if err := s.Update(increment); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := s.Update(func(st *State) error {
		st.Networks["counter"].Rules = "junk"
		st.Networks["other"] = &Network{Name: "other"}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want %v", err, boom)
	}
	if err := s.Update(increment); err != nil {
		t.Fatal(err)
	}
	st, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if st.Networks["counter"].Rules != "2" || st.Networks["other"] != nil {
		t.Errorf("kept state after a failed update: counter %s, other %v; want 2 and none", st.Networks["counter"].Rules, st.Networks["other"])
	}
	if got := counter(t, dir); got != "2" {
		t.Errorf("file's counter = %s, want 2", got)
	}
}

// TestCommitterSeesOtherWriters: a file replaced by another process (a
// standalone plugin) is read again, not answered from the kept state; and
// Read hands out copies.
func TestCommitterSeesOtherWriters(t *testing.T) {
	dir := t.TempDir()
	s := &Store{Dir: dir, Committer: NewCommitter(dir)}
	if err := s.Update(increment); err != nil {
		t.Fatal(err)
	}
	if err := New(dir).Update(increment); err != nil {
		t.Fatal(err)
	}
	st, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Networks["counter"].Rules; got != "2" {
		t.Errorf("Read after another writer: counter %s, want 2", got)
	}
	st.Networks["counter"].Rules = "mine"
	if err := s.Update(increment); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, dir); got != "3" {
		t.Errorf("file's counter = %s, want 3 (a reader's change to its copy must not leak)", got)
	}
}

func TestCloneIsDeep(t *testing.T) {
	st := NewState()
	st.Networks["n"] = &Network{Name: "n", TakenOff: nil, MasterConfig: &LinkConfig{}}
	st.Pools["p"] = &Pool{ID: "p"}
	st.Allocations["10.0.0.5"] = &Allocation{ContainerID: "c"}
	st.Endpoints["c/eth0"] = &Endpoint{ContainerID: "c", IfName: "eth0"}
	c := st.Clone()
	if !reflect.DeepEqual(st, c) {
		t.Fatalf("Clone = %+v, want %+v", c, st)
	}
	c.Networks["n"].MasterConfig.Addrs = append(c.Networks["n"].MasterConfig.Addrs, Route{}.Dst)
	c.Pools["p"].ID = "q"
	c.Allocations["10.0.0.5"].ContainerID = "d"
	c.Endpoints["c/eth0"].IfName = "eth1"
	if st.Networks["n"].MasterConfig.Addrs != nil || st.Pools["p"].ID != "p" || st.Allocations["10.0.0.5"].ContainerID != "c" || st.Endpoints["c/eth0"].IfName != "eth0" {
		t.Errorf("changing the clone changed the original: %+v", st)
	}
}
