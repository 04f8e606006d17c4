// Package agentapi is the wire protocol between the CNI plugins and vnetd,
// the node agent: one request and one response per connection on a unix
// stream socket, each a JSON document behind a 4-byte big-endian length.
//
// The request carries what the CNI runtime gave the plugin (the command,
// its environment and stdin); the response what the plugin would have
// printed (stdout, or a CNI error). Both carry the protocol version: an
// agent answers a request of another version with an error naming both
// versions, so a plugin and an agent of different releases either speak the
// same protocol or fail clearly.
//
// The client side uses only the syscall package: it runs in every plugin
// process, where each linked package costs start-up time (net costs about
// 3 ms of CPU per call on the reference machine, see docs/agent.md).
package agentapi

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Proto is the protocol version. Bump it on any change an agent or plugin
// of the previous release would misread.
const Proto = 1

// CNIVersions are the CNI specification versions the plugins support. The
// thin plugin forwards only configurations of these versions (skel's
// check); cniplugin.Versions is built from them.
var CNIVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// SocketName is the agent's socket inside the state directory, so that
// each state directory (one per VM in the lab) has its own agent.
const SocketName = "vnetd.sock"

// LockName is the file the running agent holds an exclusive flock on: a
// second agent for the same state directory refuses to start.
const LockName = "vnetd.lock"

// SocketPath is the agent's socket for a state directory.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// MaxFrame bounds one message: CNI configurations are small; anything
// this large is not a plugin talking.
const MaxFrame = 4 << 20

// Request is one CNI call forwarded by a plugin.
type Request struct {
	Proto       int    `json:"proto"`
	Plugin      string `json:"plugin"`  // azure-vnet or azure-vnet-ipam
	Version     string `json:"version"` // the plugin's release, for logs and errors
	Command     string `json:"command"` // CNI_COMMAND
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Args        string `json:"args,omitempty"`
	Path        string `json:"path,omitempty"`
	Stdin       []byte `json:"stdin"`
	Trace       bool   `json:"trace,omitempty"` // AZURE_VNET_TRACE=1: return the phase timings
	// HostNetNS is the plugin's network namespace (NetNSID): the node the
	// runtime meant. An agent of another namespace (a VM's namespace
	// deleted and made anew under a live agent) does not serve it.
	HostNetNS string `json:"hostNetns,omitempty"`
	// Pod is the pod of a PolicyEnsureCommand or PolicyReleaseCommand.
	Pod *PolicyPod `json:"pod,omitempty"`
}

// Response is the outcome of a Request.
type Response struct {
	Proto   int    `json:"proto"`
	Version string `json:"version"`          // the agent's release
	Stdout  []byte `json:"stdout,omitempty"` // the result to print, on success
	Error   *Error `json:"error,omitempty"`  // the CNI error, on failure
	Trace   string `json:"trace,omitempty"`  // what the command wrote to stderr (trace lines)
	// Foreign says the agent serves another network namespace than the
	// plugin's: nothing was done, and the plugin runs the command itself.
	Foreign bool `json:"foreign,omitempty"`
}

// Error is a CNI error as the plugin prints it.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("CNI error %d: %s", e.Code, e.Msg) }

// CodeTryAgainLater is the CNI error code for a transient failure
// (types.ErrTryAgainLater), named here so the client need not link the
// CNI types package.
const CodeTryAgainLater = 11

// CodeMismatch is the CNI error code (in the plugin-specific range) of a
// plugin and an agent that speak different protocol versions.
const CodeMismatch = 999

// MismatchError is what an agent answers a request of another protocol
// version with.
func MismatchError(req *Request, agentVersion string) *Error {
	return &Error{
		Code: CodeMismatch,
		Msg: fmt.Sprintf("%s %s speaks agent protocol %d, vnetd %s speaks %d: install plugins and agent of one release",
			req.Plugin, req.Version, req.Proto, agentVersion, Proto),
	}
}

// WriteFrame writes v as one length-prefixed JSON message.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("encode message: %d bytes, at most %d", len(b), MaxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ErrShortFrame is returned when the peer closed the connection before a
// whole message arrived.
var ErrShortFrame = errors.New("connection closed before a whole message")

// ReadFrame reads one length-prefixed JSON message into v.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrShortFrame
		}
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("read message: %d bytes, at most %d", n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrShortFrame
		}
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode message: %w", err)
	}
	return nil
}
