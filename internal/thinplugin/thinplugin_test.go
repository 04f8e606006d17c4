package thinplugin

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/agentapi"
)

func TestValidEnvRules(t *testing.T) {
	for _, c := range []struct {
		id   string
		want bool
	}{
		{"abc", true}, {"a-b_c.d", true}, {"0x", true}, {"", false}, {"-a", false}, {".a", false}, {"a b", false}, {"a/b", false}, {"ä", false},
	} {
		if got := validID(c.id); got != c.want {
			t.Errorf("validID(%q) = %v, want %v", c.id, got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		want bool
	}{
		{"eth0", true}, {"net1", true}, {"", false}, {".", false}, {"..", false}, {"a/b", false}, {"a:b", false}, {"a b", false},
		{"0123456789abcde", true}, {"0123456789abcdef", false},
	} {
		if got := validIfName(c.name); got != c.want {
			t.Errorf("validIfName(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	for _, c := range []struct {
		conf string
		want bool
	}{
		{`{"cniVersion":"1.0.0","name":"azure"}`, true},
		{`{"cniVersion":"0.3.1","name":"azure"}`, true},
		{`{"cniVersion":"0.2.0","name":"azure"}`, false},
		{`{"name":"azure"}`, false},
		{`{"cniVersion":"1.0.0"}`, false},
		{`{"cniVersion":"1.0.0","name":"a b"}`, false},
		{`not json`, false},
	} {
		if got := validConfig([]byte(c.conf)); got != c.want {
			t.Errorf("validConfig(%s) = %v, want %v", c.conf, got, c.want)
		}
	}
}

// TestThinPlugin runs the built thin plugin beside a fake standalone
// plugin (a script printing its stdin) and, where the case says, a fake
// agent.
func TestThinPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	thin := filepath.Join(dir, "azure-vnet")
	if out, err := exec.Command("go", "build", "-o", thin, "../../cmd/azure-vnet").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script := "#!/bin/sh\necho standalone \"$CNI_COMMAND\"\ncat\n"
	if err := os.WriteFile(filepath.Join(dir, StandaloneName), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := `{"cniVersion":"1.0.0","name":"azure","type":"azure-vnet"}`
	run := func(t *testing.T, stateDir string, env ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(thin)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0", "CNI_NETNS=/var/run/netns/x",
			"CNI_PATH=/opt/cni/bin", "AZURE_VNET_STATE_DIR=" + stateDir}, env...)
		cmd.Stdin = strings.NewReader(conf)
		var out bytes.Buffer
		cmd.Stdout = &out
		err := cmd.Run()
		return out.String(), err
	}

	t.Run("no agent", func(t *testing.T) {
		out, err := run(t, t.TempDir(), "CNI_COMMAND=ADD")
		if err != nil || out != "standalone ADD\n"+conf {
			t.Errorf("got %q (%v), want the standalone plugin's output with the same stdin", out, err)
		}
	})
	t.Run("not forwarded", func(t *testing.T) {
		state := t.TempDir()
		os.WriteFile(agentapi.SocketPath(state), nil, 0o600) // would refuse
		out, err := run(t, state, "CNI_COMMAND=CHECK")
		if err != nil || out != "standalone CHECK\n"+conf {
			t.Errorf("got %q (%v), want the standalone plugin's output", out, err)
		}
	})
	t.Run("dead agent", func(t *testing.T) {
		// stdin was read before the connection failed: the standalone
		// plugin must still get all of it.
		state := t.TempDir()
		ln, err := net.Listen("unix", agentapi.SocketPath(state))
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		out, err := run(t, state, "CNI_COMMAND=DEL")
		if err != nil || out != "standalone DEL\n"+conf {
			t.Errorf("got %q (%v), want the standalone plugin's output with the same stdin", out, err)
		}
	})
	serve := func(t *testing.T, state string, resp *agentapi.Response) <-chan *agentapi.Request {
		t.Helper()
		ln, err := net.Listen("unix", agentapi.SocketPath(state))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		got := make(chan *agentapi.Request, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			var req agentapi.Request
			if agentapi.ReadFrame(c, &req) == nil {
				got <- &req
				agentapi.WriteFrame(c, resp)
			}
		}()
		return got
	}
	t.Run("agent answers", func(t *testing.T) {
		state := t.TempDir()
		reqs := serve(t, state, &agentapi.Response{Proto: agentapi.Proto, Stdout: []byte(`{"ok":1}`)})
		out, err := run(t, state, "CNI_COMMAND=ADD")
		if err != nil || out != `{"ok":1}` {
			t.Errorf("got %q (%v), want the agent's stdout", out, err)
		}
		req := <-reqs
		if req.Command != "ADD" || req.ContainerID != "c1" || req.IfName != "eth0" || string(req.Stdin) != conf || req.Plugin != "azure-vnet" {
			t.Errorf("agent got %+v, want the call's command, environment and stdin", req)
		}
	})
	t.Run("agent error", func(t *testing.T) {
		state := t.TempDir()
		serve(t, state, &agentapi.Response{Proto: agentapi.Proto, Error: &agentapi.Error{Code: 11, Msg: "try again"}})
		out, err := run(t, state, "CNI_COMMAND=ADD")
		if err == nil || !strings.Contains(out, `"code": 11`) || !strings.Contains(out, `"msg": "try again"`) {
			t.Errorf("got %q (%v), want CNI error 11 and exit status 1", out, err)
		}
	})
	t.Run("agent cannot open the netns", func(t *testing.T) {
		state := t.TempDir()
		serve(t, state, &agentapi.Response{Proto: agentapi.Proto, Error: &agentapi.Error{Code: codeInvalidNetNS, Msg: "no netns"}})
		out, err := run(t, state, "CNI_COMMAND=ADD")
		if err != nil || out != "standalone ADD\n"+conf {
			t.Errorf("got %q (%v), want the standalone plugin's output", out, err)
		}
	})
}

// The codes the client names itself (it does not link the CNI library)
// are the library's.
func TestCodes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint
	}{
		{"invalid netns", codeInvalidNetNS, types.ErrInvalidNetNS},
		{"try again later", agentapi.CodeTryAgainLater, types.ErrTryAgainLater},
		{"internal (mismatch)", agentapi.CodeMismatch, types.ErrInternal},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, CNI's is %d", c.name, c.got, c.want)
		}
	}
}
