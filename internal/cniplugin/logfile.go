package cniplugin

import (
	"fmt"
	"os"
	"syscall"
)

// The plugins' log file is capped: a node starting pods for months must
// not fill /var/log. Each plugin process appends a few lines, so checking
// the size once, when the process opens the log, keeps the file within
// LogMaxSize plus a few lines per process running at that instant.
const (
	LogMaxSize = 10 << 20 // bytes before the file is rotated
	LogBackups = 2        // azure-vnet.log.1 (newest) … .2 kept
)

// openLogFile opens path for appending, first rotating it when it holds
// maxSize bytes or more: path.(n-1) becomes path.n, …, path becomes
// path.1, and a new path is opened.
//
// Plugins run as many processes at once, so rotation takes an exclusive
// flock on the file being rotated, and the process that gets it checks
// that path still names that file: when another process has rotated it
// meanwhile, it opens the new file instead of rotating again. A process
// that opened the old file just before the rename writes its lines into
// path.1, where they stay.
//
// This is a dozen lines instead of gopkg.in/natefinch/lumberjack.v2:
// lumberjack's lock is a mutex inside one process (two plugins would both
// rotate), it scans the log directory for old backups in a goroutine on
// every open, and it links compress/gzip into a binary whose start cost
// is paid on every CNI call (docs/agent.md, "The plugins' log file").
func openLogFile(path string, maxSize int64, backups int) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() < maxSize || attempt > 0 {
			// After one rotation (ours or another's), write wherever
			// path now points rather than chase a log that grows faster
			// than we rotate.
			return f, nil
		}
		if err := rotate(f, path, backups); err != nil {
			// A log that cannot rotate still takes the line: losing it
			// would hide the very failure being logged.
			return f, nil
		}
		f.Close()
	}
}

// rotate shifts the backups and moves path (open as f) to path.1, unless
// another process did so while this one waited for the lock.
func rotate(f *os.File, path string, backups int) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	mine, err := f.Stat()
	if err != nil {
		return err
	}
	now, err := os.Stat(path)
	if err != nil || !os.SameFile(mine, now) {
		return nil // rotated (or removed) by someone else: reopen
	}
	if backups < 1 {
		return os.Truncate(path, 0)
	}
	for i := backups - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1))
	}
	return os.Rename(path, path+".1")
}
