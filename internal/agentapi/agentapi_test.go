package agentapi

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFrameRoundTrip(t *testing.T) {
	in := Request{Proto: Proto, Plugin: "azure-vnet", Command: "ADD", ContainerID: "c1", IfName: "eth0", Stdin: []byte(`{"name":"azure"}`)}
	var buf bytes.Buffer
	if err := WriteFrame(&buf, &in); err != nil {
		t.Fatal(err)
	}
	var out Request
	if err := ReadFrame(&buf, &out); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out); d != "" {
		t.Errorf("round trip (-sent +read):\n%s", d)
	}
}

func TestReadFrameShort(t *testing.T) {
	for _, b := range [][]byte{nil, {0, 0}, {0, 0, 0, 9, '{'}} {
		var r Request
		if err := ReadFrame(bytes.NewReader(b), &r); !errors.Is(err, ErrShortFrame) {
			t.Errorf("ReadFrame(%q) = %v, want ErrShortFrame", b, err)
		}
	}
	var r Request
	if err := ReadFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}), &r); err == nil {
		t.Errorf("ReadFrame of a 4 GB frame: no error")
	}
}

func TestCallNoAgent(t *testing.T) {
	dir := t.TempDir()
	if _, err := Call(SocketPath(dir), &Request{}); !errors.Is(err, ErrNoAgent) {
		t.Errorf("Call without a socket = %v, want ErrNoAgent", err)
	}
	// A socket left by a dead agent: nobody listens.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: SocketPath(dir), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Call(SocketPath(dir), &Request{}); !errors.Is(err, ErrNoAgent) {
		t.Errorf("Call on a dead socket = %v, want ErrNoAgent", err)
	}
}

func TestCallAgentLost(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var r Request
		_ = ReadFrame(c, &r)
		c.Close() // dies before answering
	}()
	if _, err := Call(sock, &Request{Command: "ADD"}); !errors.Is(err, ErrAgentLost) {
		t.Errorf("Call to an agent that closes = %v, want ErrAgentLost", err)
	}
}

func TestCallAnswered(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var r Request
		if ReadFrame(c, &r) != nil {
			return
		}
		_ = WriteFrame(c, &Response{Proto: r.Proto, Stdout: []byte(r.Command)})
	}()
	resp, err := Call(sock, &Request{Command: "DEL"})
	if err != nil || string(resp.Stdout) != "DEL" || resp.Proto != Proto {
		t.Errorf("Call = %+v, %v; want stdout DEL, proto %d", resp, err, Proto)
	}
}
