// Package store keeps a node's CNI state — networks, address pools,
// allocations and endpoints — in one JSON file.
//
// The file is replaced atomically (write temp, fsync, rename, fsync dir), so a
// crash at any instant leaves either the old or the new state, never a
// truncated one. Read-modify-write cycles hold an flock on a separate lock
// file for as long as the in-memory update takes (microseconds); callers do
// their kernel and network work outside Update.
//
// A file that cannot be trusted (empty, NUL-filled, not JSON, from a newer
// version, or internally inconsistent) is never silently replaced by an empty
// state: it is moved aside and the caller's Rebuild hook reconstructs the
// state from the kernel and the pool source.
package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is where the state lives unless EnvDir overrides it. /var/run is
// a tmpfs: the state vanishes at reboot together with the interfaces it
// describes.
const DefaultDir = "/var/run/azure-vnet"

// EnvDir names the environment variable that overrides DefaultDir.
const EnvDir = "AZURE_VNET_STATE_DIR"

// File names inside the state directory.
const (
	FileName = "state.json"
	LockName = "state.lock"
)

// DirFromEnv returns the state directory: $AZURE_VNET_STATE_DIR or DefaultDir.
func DirFromEnv() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	return DefaultDir
}

// LockTimeout is how long Update waits for the lock. The lock is only ever
// held for an in-memory update and one file write, so waiting this long means
// something is badly wrong.
const LockTimeout = 30 * time.Second

// ErrLockTimeout is returned when the lock cannot be taken in time.
var ErrLockTimeout = errors.New("timed out locking state store")

// DamagedError reports a state file that cannot be trusted.
type DamagedError struct {
	Path   string
	Reason string
	Err    error
	// Salvage is the file's content when it decoded but is inconsistent:
	// a rebuild may keep what the kernel cannot tell (see
	// attachment.Salvage). Nil otherwise.
	Salvage *State
}

func (e *DamagedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("state file %s is damaged (%s): %v", e.Path, e.Reason, e.Err)
	}
	return fmt.Sprintf("state file %s is damaged (%s)", e.Path, e.Reason)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// IsDamaged reports whether err is (or wraps) a *DamagedError.
func IsDamaged(err error) bool {
	var d *DamagedError
	return errors.As(err, &d)
}

// NewerError reports a state file written by a newer version of the
// plugins (after a downgrade). It is not damage: rebuilding would throw away
// what the newer version recorded, so commands refuse until the newer
// binaries are back (or the operator removes the file).
type NewerError struct {
	Path    string
	Version int
}

func (e *NewerError) Error() string {
	return fmt.Sprintf("state file %s was written by a newer version (format %d, this binary reads up to %d): install that version again, or remove the file to rebuild it from the kernel", e.Path, e.Version, Version)
}

// Store is a node's state file.
type Store struct {
	Dir string

	// Rebuild reconstructs the state when the file is damaged or missing
	// while the kernel may still hold endpoints. It runs under the exclusive
	// lock. When nil, a damaged file makes Update fail.
	Rebuild func(cause error) (*State, error)

	// OnRecover, when set, is told about every damaged file that was moved
	// aside and rebuilt, with where the damaged copy now is.
	OnRecover func(cause error, savedAs string)

	// OnWrite, when set, hears of every state file written (the agent
	// counts them).
	OnWrite func()

	// Committer, when set (by a long-lived process, for the same Dir),
	// keeps the decoded state between calls and group-commits updates.
	Committer *Committer
}

// New returns the store in dir.
func New(dir string) *Store { return &Store{Dir: dir} }

// Path is the state file's path.
func (s *Store) Path() string { return filepath.Join(s.Dir, FileName) }

// Read returns the current state without locking: the file is only ever
// replaced by rename, so a reader sees a complete old or new version. A
// missing file reads as an empty state; a damaged one as a *DamagedError.
func (s *Store) Read() (*State, error) {
	if c := s.committer(); c != nil {
		return c.read(s)
	}
	return s.readFile()
}

func (s *Store) committer() *Committer {
	if s.Committer != nil && s.Committer.dir == s.Dir {
		return s.Committer
	}
	return nil
}

func (s *Store) readFile() (*State, error) {
	st, err := s.load()
	if errors.Is(err, os.ErrNotExist) {
		return NewState(), nil
	}
	return st, err
}

func (s *Store) load() (*State, error) {
	b, err := os.ReadFile(s.Path())
	if err != nil {
		return nil, err
	}
	return Decode(b, s.Path())
}

// Decode parses a state file's content, reporting anything untrustworthy as
// a *DamagedError naming path.
func Decode(b []byte, path string) (*State, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, &DamagedError{Path: path, Reason: "empty"}
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return nil, &DamagedError{Path: path, Reason: "contains NUL bytes"}
	}
	// One pass in the common case: the state of a busy node is read several
	// times per CNI call. Only a file that does not decode is parsed again,
	// to say why.
	st := NewState()
	st.Version = 0
	derr := json.Unmarshal(b, st)
	version := st.Version
	if derr != nil {
		var probe struct {
			Version int `json:"version"`
		}
		if err := json.Unmarshal(b, &probe); err != nil {
			return nil, &DamagedError{Path: path, Reason: "not valid JSON", Err: err}
		}
		version = probe.Version
	}
	if version > Version {
		return nil, &NewerError{Path: path, Version: version}
	}
	if version < 1 {
		return nil, &DamagedError{Path: path, Reason: fmt.Sprintf("unknown format version %d", version)}
	}
	if derr != nil {
		return nil, &DamagedError{Path: path, Reason: "does not match the state schema", Err: derr}
	}
	st.init()
	if err := st.Validate(); err != nil {
		return nil, &DamagedError{Path: path, Reason: "inconsistent", Err: err, Salvage: st}
	}
	return st, nil
}

// Update runs fn on the current state under the exclusive lock and writes
// the result if fn returns nil. fn must not do slow work.
func (s *Store) Update(fn func(*State) error) error {
	if c := s.committer(); c != nil {
		return c.update(s, fn)
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	s.sweep()

	st, err := s.loadForUpdate()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return s.write(st)
}

func (s *Store) rebuild(cause error, damaged bool) (*State, error) {
	if s.Rebuild == nil {
		if !damaged {
			return NewState(), nil
		}
		return nil, cause
	}
	st, err := s.Rebuild(cause)
	if err != nil {
		return nil, fmt.Errorf("rebuild state after %v: %w", cause, err)
	}
	if damaged {
		saved := fmt.Sprintf("%s.damaged-%d", s.Path(), time.Now().UnixNano())
		if err := os.Rename(s.Path(), saved); err != nil {
			return nil, fmt.Errorf("keep damaged state file: %w", err)
		}
		if s.OnRecover != nil {
			s.OnRecover(cause, saved)
		}
	}
	// Persist the rebuilt state even if fn later fails.
	if err := s.write(st); err != nil {
		return nil, err
	}
	return st, nil
}

// sweep removes the temporary files of writers killed before their rename.
// Only a lock holder writes, so under the lock every one is abandoned.
func (s *Store) sweep() {
	tmps, _ := filepath.Glob(s.Path() + tempInfix + "*")
	for _, f := range tmps {
		_ = os.Remove(f)
	}
}

func (s *Store) write(st *State) error {
	st.Version = Version
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	b = append(b, '\n')
	tmp := fmt.Sprintf("%s%s%d", s.Path(), tempInfix, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write state: fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, s.Path()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	if d, err := os.Open(s.Dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if s.OnWrite != nil {
		s.OnWrite()
	}
	return nil
}

// lock takes the state's exclusive lock.
func (s *Store) lock() (func(), error) { return s.Lock(LockName) }

// Lock takes an exclusive flock on a lock file of the state directory. The
// state lock is held for well under a millisecond; other lock files
// serialise rarer, longer work (setting up a node's network, reading the
// pool source) without holding up state updates.
func (s *Store) Lock(name string) (func(), error) {
	f, err := s.lockFile(filepath.Join(s.Dir, name))
	if err != nil {
		return nil, err
	}
	return func() { unlockFile(f) }, nil
}

// LockAttachment serialises the commands for one container interface: a
// DEL that arrives while the container's ADD still runs waits for it, and
// two ADDs for one container never build two attachments. Each attachment
// has its own lock file; unlock(true) removes it, for when the attachment
// is gone.
func (s *Store) LockAttachment(containerID, ifName string) (unlock func(forget bool), err error) {
	path := filepath.Join(s.Dir, AttachmentLockName(containerID, ifName))
	for {
		f, err := s.lockFile(path)
		if err != nil {
			return nil, err
		}
		// A holder that removed the file released a lock nobody else can
		// find: if the path now names another file (or none), start over.
		var held, named unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			unlockFile(f)
			return nil, fmt.Errorf("lock attachment: %w", err)
		}
		if unix.Stat(path, &named) != nil || named.Ino != held.Ino || named.Dev != held.Dev {
			unlockFile(f)
			continue
		}
		return func(forget bool) {
			if forget {
				_ = os.Remove(path)
			}
			unlockFile(f)
		}, nil
	}
}

// tempInfix follows FileName in the name of a writer's temporary file,
// before the writer's PID.
const tempInfix = ".tmp-"

// IsTempFile reports whether a name in the state directory is a writer's
// temporary state file (left behind when the writer was killed before its
// rename).
func IsTempFile(name string) bool { return strings.HasPrefix(name, FileName+tempInfix) }

// AttachmentLockPrefix starts the name of every attachment's lock file.
const AttachmentLockPrefix = "attachment-"

// AttachmentLockName is the name of a container interface's lock file.
func AttachmentLockName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(EndpointKey(containerID, ifName)))
	return AttachmentLockPrefix + hex.EncodeToString(sum[:8]) + ".lock"
}

// lockFile opens and flocks path. Waiting happens in the kernel: hundreds
// of processes polling a lock every few milliseconds starve its holder of
// the CPU it needs to release it.
func (s *Store) lockFile(path string) (*os.File, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	fd := int(f.Fd())
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("lock state: %w", err)
	}
	got := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				got <- err
				return
			}
		}
	}()
	timer := time.NewTimer(LockTimeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock state: %w", err)
		}
		return f, nil
	case <-timer.C:
		// The waiter may still be granted the lock: give it back then.
		go func() {
			if <-got == nil {
				unlockFile(f)
				return
			}
			f.Close()
		}()
		return nil, fmt.Errorf("%w after %s (%s)", ErrLockTimeout, LockTimeout, path)
	}
}

func unlockFile(f *os.File) {
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	f.Close()
}
