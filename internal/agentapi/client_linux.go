package agentapi

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrNoAgent means no agent listens on the socket: the plugin works on its
// own.
var ErrNoAgent = errors.New("no agent")

// ErrAgentLost means the agent accepted the request and went away before
// answering (it was killed or restarted). What it did is in the state and
// the kernel, under the same locks a standalone plugin takes: running the
// command again, standalone or through a new agent, completes or repeats
// it idempotently.
var ErrAgentLost = errors.New("agent closed the connection before answering")

// Call sends req to the agent listening at socket and returns its answer.
// It returns ErrNoAgent when nobody listens (no socket file, or a socket
// left by a dead agent), ErrAgentLost when the agent went away mid-call.
func Call(socket string, req *Request) (*Response, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: socket})
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		if err == syscall.ENOENT || err == syscall.ECONNREFUSED || err == syscall.ENOTDIR {
			return nil, ErrNoAgent
		}
		return nil, fmt.Errorf("connect to agent %s: %w", socket, err)
	}
	f := os.NewFile(uintptr(fd), socket)
	defer f.Close()
	req.Proto = Proto
	if err := WriteFrame(f, req); err != nil {
		// The agent died between accept and read: nothing was done.
		return nil, fmt.Errorf("%w: %v", ErrAgentLost, err)
	}
	var resp Response
	if err := ReadFrame(f, &resp); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAgentLost, err)
	}
	return &resp, nil
}

// NetNSID identifies the calling process's network namespace: the device
// and inode of /proc/self/ns/net ("" if it cannot be read).
func NetNSID() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
