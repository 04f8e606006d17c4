package store

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// dirEntries lists a directory's file names, sorted.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDirFromEnv(t *testing.T) {
	t.Setenv(EnvDir, "")
	if got := DirFromEnv(); got != DefaultDir {
		t.Errorf("DirFromEnv() with %s unset = %q, want %q", EnvDir, got, DefaultDir)
	}
	t.Setenv(EnvDir, "/tmp/x")
	if got := DirFromEnv(); got != "/tmp/x" {
		t.Errorf("DirFromEnv() with %s=/tmp/x = %q, want /tmp/x", EnvDir, got)
	}
}

func TestReadMissing(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "not", "yet"))
	st, err := s.Read()
	if err != nil {
		t.Fatalf("Read() of a missing file: %v", err)
	}
	if d := cmp.Diff(NewState(), st); d != "" {
		t.Errorf("Read() of a missing file (-want +got):\n%s", d)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read() created %s (stat: %v); reading must not write", s.Dir, err)
	}
}

func TestReadDamaged(t *testing.T) {
	s := New(t.TempDir())
	writeFile(t, s.Path(), []byte("{\"version\":1,"))
	_, err := s.Read()
	var de *DamagedError
	if !errors.As(err, &de) || de.Path != s.Path() {
		t.Errorf("Read() of a truncated file = %v, want a *DamagedError for %s", err, s.Path())
	}
}

func TestUpdateWritesAtomically(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	for i := 0; i < 5; i++ {
		if err := s.Update(func(st *State) error {
			st.Networks["azure"] = &Network{Name: "azure", Rules: strconv.Itoa(i)}
			return nil
		}); err != nil {
			t.Fatalf("Update #%d: %v", i, err)
		}
	}
	if d := cmp.Diff([]string{FileName, LockName}, dirEntries(t, dir)); d != "" {
		t.Errorf("state dir after Updates (-want +got; no temp files may be left):\n%s", d)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode %v, want 0600", perm)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "}\n") {
		t.Errorf("state file does not end in a complete document: %q", b)
	}
	st, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Networks["azure"].Rules; got != "4" {
		t.Errorf("after 5 Updates, Rules = %q, want 4", got)
	}
}

func TestUpdateFnErrorWritesNothing(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	if err := s.Update(func(st *State) error {
		st.Networks["a"] = &Network{Name: "a"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	errNo := errors.New("no")
	err = s.Update(func(st *State) error {
		st.Networks["b"] = &Network{Name: "b"}
		return errNo
	})
	if !errors.Is(err, errNo) {
		t.Errorf("Update(fn failing with %v) = %v, want fn's error", errNo, err)
	}
	after, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(before), string(after)); d != "" {
		t.Errorf("a failed Update changed the file (-before +after):\n%s", d)
	}
	if d := cmp.Diff([]string{FileName, LockName}, dirEntries(t, dir)); d != "" {
		t.Errorf("state dir (-want +got):\n%s", d)
	}
}

// recorder is a Rebuild and OnRecover pair that records its calls.
type recorder struct {
	rebuilt       *State
	err           error
	causes        []error
	recovered     []string // OnRecover's savedAs
	recoverCauses []error
}

func (r *recorder) attach(s *Store) {
	s.Rebuild = func(cause error) (*State, error) {
		r.causes = append(r.causes, cause)
		if r.err != nil {
			return nil, r.err
		}
		return r.rebuilt, nil
	}
	s.OnRecover = func(cause error, savedAs string) {
		r.recoverCauses = append(r.recoverCauses, cause)
		r.recovered = append(r.recovered, savedAs)
	}
}

// TestUpdateRefusesNewerFile: a state written by a newer version is neither
// rebuilt nor overwritten.
func TestUpdateRefusesNewerFile(t *testing.T) {
	s := New(t.TempDir())
	content := []byte(`{"version":99,"networks":{}}`)
	writeFile(t, s.Path(), content)
	r := &recorder{rebuilt: NewState()}
	r.attach(s)
	err := s.Update(func(*State) error { return nil })
	var ne *NewerError
	if !errors.As(err, &ne) {
		t.Fatalf("Update over a newer file: %v, want a *NewerError", err)
	}
	if len(r.causes) != 0 {
		t.Errorf("Rebuild ran for a newer file: %v", r.causes)
	}
	if b, _ := os.ReadFile(s.Path()); string(b) != string(content) {
		t.Errorf("the newer file was changed to %q", b)
	}
}

func TestUpdateRecoversDamagedFile(t *testing.T) {
	damaged := map[string][]byte{
		"empty":        {},
		"NUL-filled":   make([]byte, 512),
		"truncated":    []byte(`{"version":1,"networks":{"azure":`),
		"inconsistent": []byte(`{"version":1,"endpoints":{"c/eth0":{"containerID":"c","ifName":"eth0","ip":"10.0.0.5/24"}}}`),
	}
	for name, content := range damaged {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := New(dir)
			writeFile(t, s.Path(), content)
			rebuilt := NewState()
			rebuilt.Networks["azure"] = &Network{Name: "azure", Mode: "bridge"}
			r := &recorder{rebuilt: rebuilt}
			r.attach(s)

			var seen *State
			if err := s.Update(func(st *State) error {
				seen = st
				st.Networks["azure"].Rules = "added by fn"
				return nil
			}); err != nil {
				t.Fatalf("Update over a %s file: %v", name, err)
			}
			if len(r.causes) != 1 || !IsDamaged(r.causes[0]) {
				t.Errorf("Rebuild causes %v, want one *DamagedError", r.causes)
			}
			if seen != rebuilt {
				t.Errorf("fn ran on %+v, want the rebuilt state", seen)
			}
			if len(r.recoverCauses) != 1 || !IsDamaged(r.recoverCauses[0]) {
				t.Errorf("OnRecover causes %v, want one *DamagedError", r.recoverCauses)
			}
			if len(r.recovered) != 1 || !strings.HasPrefix(r.recovered[0], s.Path()+".damaged-") {
				t.Fatalf("OnRecover got %v, want one %s.damaged-* path", r.recovered, s.Path())
			}
			kept, err := os.ReadFile(r.recovered[0])
			if err != nil || string(kept) != string(content) {
				t.Errorf("damaged copy %s = %q, %v; want the original %q", r.recovered[0], kept, err, content)
			}
			st, err := s.Read()
			if err != nil {
				t.Fatalf("Read after recovery: %v", err)
			}
			if n := st.Networks["azure"]; n == nil || n.Rules != "added by fn" || n.Mode != "bridge" {
				t.Errorf("after recovery, network = %+v, want the rebuilt one with fn's change", n)
			}
			want := []string{FileName, filepath.Base(r.recovered[0]), LockName}
			sort.Strings(want)
			if d := cmp.Diff(want, dirEntries(t, dir)); d != "" {
				t.Errorf("state dir (-want +got):\n%s", d)
			}
		})
	}
}

func TestUpdateDamagedWithoutRebuild(t *testing.T) {
	s := New(t.TempDir())
	content := []byte("\x00\x00\x00")
	writeFile(t, s.Path(), content)
	called := false
	err := s.Update(func(*State) error { called = true; return nil })
	var de *DamagedError
	if !errors.As(err, &de) || de.Reason != "contains NUL bytes" {
		t.Errorf("Update over a NUL-filled file without Rebuild = %v, want a *DamagedError (contains NUL bytes)", err)
	}
	if called {
		t.Errorf("fn ran on a damaged state")
	}
	if b, _ := os.ReadFile(s.Path()); string(b) != string(content) {
		t.Errorf("damaged file changed to %q; without Rebuild it must be left alone", b)
	}
}

func TestUpdateRebuildFails(t *testing.T) {
	s := New(t.TempDir())
	content := []byte("{")
	writeFile(t, s.Path(), content)
	errKernel := errors.New("netlink: permission denied")
	r := &recorder{err: errKernel}
	r.attach(s)
	err := s.Update(func(*State) error { t.Error("fn ran after a failed rebuild"); return nil })
	if !errors.Is(err, errKernel) || !strings.Contains(err.Error(), "rebuild state") {
		t.Errorf("Update with a failing Rebuild = %v, want a rebuild error wrapping %v", err, errKernel)
	}
	if len(r.recovered) != 0 {
		t.Errorf("OnRecover called with %v after a failed rebuild", r.recovered)
	}
	if b, _ := os.ReadFile(s.Path()); string(b) != string(content) {
		t.Errorf("damaged file changed to %q after a failed rebuild; it must stay for the next try", b)
	}
}

func TestUpdateMissingFileCallsRebuild(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "state"))
	rebuilt := NewState()
	rebuilt.Networks["azure"] = &Network{Name: "azure"}
	r := &recorder{rebuilt: rebuilt}
	r.attach(s)
	errNo := errors.New("no")
	// fn fails: the rebuilt state is written anyway.
	if err := s.Update(func(*State) error { return errNo }); !errors.Is(err, errNo) {
		t.Fatalf("Update = %v, want %v", err, errNo)
	}
	if len(r.causes) != 1 || !errors.Is(r.causes[0], os.ErrNotExist) {
		t.Errorf("Rebuild causes %v, want one wrapping os.ErrNotExist", r.causes)
	}
	if len(r.recovered) != 0 {
		t.Errorf("OnRecover called with %v for a missing file; nothing was damaged", r.recovered)
	}
	st, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if st.Networks["azure"] == nil {
		t.Errorf("after Update, state %+v, want the rebuilt network persisted", st)
	}
	// The file exists now: Rebuild is not asked again.
	if err := s.Update(func(*State) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(r.causes) != 1 {
		t.Errorf("Rebuild called %d times, want 1", len(r.causes))
	}
}

func TestUpdateMissingFileWithoutRebuild(t *testing.T) {
	s := New(t.TempDir())
	var seen *State
	if err := s.Update(func(st *State) error { seen = st; return nil }); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(NewState(), seen); d != "" {
		t.Errorf("fn saw (-want +got):\n%s", d)
	}
}

// TestUpdateConcurrent runs 20 writers, each with its own Store as separate
// processes would have, each incrementing a counter 20 times.
func TestUpdateConcurrent(t *testing.T) {
	dir := t.TempDir()
	const writers, rounds = 20, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := New(dir)
			for i := 0; i < rounds; i++ {
				errs <- s.Update(func(st *State) error {
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
				})
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
	st, err := New(dir).Read()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Networks["counter"].Rules, strconv.Itoa(writers*rounds); got != want {
		t.Errorf("counter after %d×%d increments = %s, want %s", writers, rounds, got, want)
	}
	if d := cmp.Diff([]string{FileName, LockName}, dirEntries(t, dir)); d != "" {
		t.Errorf("state dir (-want +got):\n%s", d)
	}
}

func TestLockSecondFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	s := New(dir)
	unlock, err := s.Lock("network.lock")
	if err != nil {
		t.Fatalf("Lock(network.lock): %v", err)
	}
	t.Cleanup(func() {
		if unlock != nil {
			unlock()
		}
	})

	// The state lock is a different file: Update does not wait.
	done := make(chan error, 1)
	go func() { done <- New(dir).Update(func(*State) error { return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Update while network.lock is held: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Update waited for network.lock")
	}

	// The same lock file is exclusive, also against another Store.
	got := make(chan func(), 1)
	go func() {
		u, err := New(dir).Lock("network.lock")
		if err != nil {
			t.Errorf("second Lock(network.lock): %v", err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case u := <-got:
		u()
		t.Fatal("second Lock(network.lock) succeeded while the first was held")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	unlock = nil
	select {
	case u := <-got:
		u()
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock(network.lock) not granted after the first was released")
	}
	if d := cmp.Diff([]string{"network.lock", FileName, LockName}, dirEntries(t, dir)); d != "" {
		t.Errorf("state dir (-want +got):\n%s", d)
	}
}

// TestUpdateSweepsAbandonedTemporaryFiles: a writer killed between creating
// its temporary file and renaming it leaves the file; the next update
// removes it.
func TestUpdateSweepsAbandonedTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	if err := s.Update(func(*State) error { return nil }); err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.Path()+".tmp-4242", []byte(`{"version":1,"allocat`))
	if err := s.Update(func(*State) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := dirEntries(t, dir), []string{FileName, LockName}; !cmp.Equal(got, want) {
		t.Errorf("after update: directory holds %v, want %v", got, want)
	}
}

// TestLockAttachment: one container interface's lock is exclusive, other
// interfaces' are not held up, and a lock whose holder removed the file on
// release is still exclusive for the processes that were waiting on it.
func TestLockAttachment(t *testing.T) {
	dir := t.TempDir()
	unlock, err := New(dir).LockAttachment("c1", "eth0")
	if err != nil {
		t.Fatalf("LockAttachment(c1, eth0): %v", err)
	}
	other, err := New(dir).LockAttachment("c2", "eth0")
	if err != nil {
		t.Fatalf("LockAttachment(c2, eth0) while c1's is held: %v", err)
	}
	other(true)

	// Two waiters for c1; the holder removes the file on release. Both get
	// the lock in turn, never together.
	var mu sync.Mutex
	holders, maxHolders := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, err := New(dir).LockAttachment("c1", "eth0")
			if err != nil {
				t.Errorf("waiting LockAttachment(c1, eth0): %v", err)
				return
			}
			mu.Lock()
			holders++
			maxHolders = max(maxHolders, holders)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			holders--
			mu.Unlock()
			u(true)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if holders != 0 {
		t.Errorf("%d waiters got c1's lock while it was held", holders)
	}
	mu.Unlock()
	unlock(true)
	wg.Wait()
	if maxHolders != 1 {
		t.Errorf("c1's lock was held by %d processes at once, want 1", maxHolders)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Errorf("after every holder forgot its attachment, the state dir holds %v, want nothing", got)
	}
}
