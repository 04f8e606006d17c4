package store

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Committer keeps one process's view of a state file in memory and
// commits its updates in groups: a long-lived process (vnetd) serving
// many commands at once gives every Store it opens on the directory the
// same Committer.
//
// Updates that arrive while a write is in progress queue up; the next
// lock holder applies all of them, each to its own copy so that one
// failing leaves the others' work, and writes the file once (one fsync,
// one rename). An update returns only after the write that contains it,
// so a crash at any instant loses only updates not yet acknowledged, and
// the file keeps its format.
//
// The decoded state is kept between updates and reused while the file is
// the one it was read from or written as (same inode, size and change
// time): other processes — a standalone plugin, vnetctl — replace the file
// by rename under the same flock, which changes all three, and are then
// read again.
type Committer struct {
	dir string

	mu      sync.Mutex
	queue   []*pending
	leading bool

	// st is the state as of file id; never modified once stored here.
	cmu sync.Mutex
	st  *State
	id  fileID
}

// NewCommitter returns a committer for the state directory dir.
func NewCommitter(dir string) *Committer { return &Committer{dir: dir} }

type pending struct {
	s    *Store
	fn   func(*State) error
	err  error
	done chan struct{} // closed when the update is committed or failed
	lead chan struct{} // closed when this waiter is to commit the next batch
}

// fileID identifies one version of the state file.
type fileID struct {
	dev, ino  uint64
	size      int64
	ctimeSec  int64
	ctimeNsec int64
}

func statID(path string) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, ctimeSec: st.Ctim.Sec, ctimeNsec: st.Ctim.Nsec}, nil
}

// cached returns the kept state if the file is still the one it came
// from. The caller must not modify it.
func (c *Committer) cached(path string) (*State, fileID, bool) {
	id, err := statID(path)
	if err != nil {
		return nil, fileID{}, false
	}
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.st != nil && c.id == id {
		return c.st, id, true
	}
	return nil, id, false
}

func (c *Committer) keep(st *State, id fileID) {
	c.cmu.Lock()
	c.st, c.id = st, id
	c.cmu.Unlock()
}

func (c *Committer) forget() { c.keep(nil, fileID{}) }

// read is Store.Read through the kept state: a copy of it when the file
// is unchanged, else the file decoded.
func (c *Committer) read(s *Store) (*State, error) {
	if st, _, ok := c.cached(s.Path()); ok {
		return st.Clone(), nil
	}
	st, err := s.readFile()
	if err != nil {
		return st, err
	}
	return st, nil
}

// update queues fn and returns when the write containing it is done. The
// caller that finds nobody committing commits the queue as one batch, then
// hands the next batch to the oldest waiter, so no caller commits for
// others for long.
func (c *Committer) update(s *Store, fn func(*State) error) error {
	p := &pending{s: s, fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if c.leading {
		c.mu.Unlock()
		select {
		case <-p.done:
			return p.err
		case <-p.lead:
		}
	} else {
		c.leading = true
		c.mu.Unlock()
	}
	c.mu.Lock()
	batch := c.queue // holds p: it is the oldest waiter, or was just queued
	c.queue = nil
	c.mu.Unlock()
	c.commit(batch)
	c.mu.Lock()
	if len(c.queue) > 0 {
		close(c.queue[0].lead)
	} else {
		c.leading = false
	}
	c.mu.Unlock()
	<-p.done
	return p.err
}

// commit applies a batch under the state lock and writes once.
func (c *Committer) commit(batch []*pending) {
	s := batch[0].s // the batch's stores differ only in their hooks
	finish := func(err error) {
		for _, p := range batch {
			if err != nil && p.err == nil {
				p.err = err
			}
			close(p.done)
		}
	}
	unlock, err := s.lock()
	if err != nil {
		finish(err)
		return
	}
	defer unlock()
	s.sweep()

	base, _, ok := c.cached(s.Path())
	if !ok {
		base, err = s.loadForUpdate()
		if err != nil {
			c.forget()
			finish(err)
			return
		}
	}
	st, changed := base, false
	for _, p := range batch {
		work := st.Clone()
		if p.err = p.fn(work); p.err != nil {
			continue
		}
		st, changed = work, true
	}
	if !changed {
		if id, err := statID(s.Path()); err == nil {
			c.keep(base, id)
		}
		finish(nil)
		return
	}
	if err := s.write(st); err != nil {
		c.forget()
		for _, p := range batch {
			if p.err == nil {
				p.err = err
			}
		}
		finish(nil)
		return
	}
	if id, err := statID(s.Path()); err == nil {
		c.keep(st, id)
	} else {
		c.forget()
	}
	finish(nil)
}

// loadForUpdate reads the file under the lock, rebuilding a missing or
// damaged one as Update does.
func (s *Store) loadForUpdate() (*State, error) {
	st, err := s.load()
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, os.ErrNotExist):
		return s.rebuild(err, false)
	case IsDamaged(err):
		return s.rebuild(err, true)
	}
	return nil, fmt.Errorf("read state: %w", err)
}
