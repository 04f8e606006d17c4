package cniplugin

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// fakeAgent listens on the plugin's agent socket and answers each request
// with answer(req); a nil answer closes the connection unanswered (an agent
// killed mid-call).
func fakeAgent(t *testing.T, stateDir string, answer func(*agentapi.Request) *agentapi.Response) {
	t.Helper()
	ln, err := net.Listen("unix", agentapi.SocketPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var req agentapi.Request
			if err := agentapi.ReadFrame(c, &req); err == nil {
				if resp := answer(&req); resp != nil {
					_ = agentapi.WriteFrame(c, resp)
				}
			}
			c.Close()
		}
	}()
}

func stateFileExists(t *testing.T, dir string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dir, store.FileName))
	return err == nil
}

// TestAgentOfAnotherProtocol: a plugin and an agent of different protocol
// versions fail clearly (CNI error 999 naming both), whichever side notices,
// and the plugin does not run the command itself behind the agent's back.
func TestAgentOfAnotherProtocol(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(*agentapi.Request) *agentapi.Response
		want   []string
	}{
		{"agent refuses", func(req *agentapi.Request) *agentapi.Response {
			// What an agent of protocol 2 answers a protocol 1 plugin.
			return &agentapi.Response{Proto: agentapi.Proto + 1, Version: "v9.0.0", Error: &agentapi.Error{Code: agentapi.CodeMismatch,
				Msg: "azure-vnet " + req.Version + " speaks agent protocol 1, vnetd v9.0.0 speaks 2: install plugins and agent of one release"}}
		}, []string{"v9.0.0", "protocol 1", "one release"}},
		{"agent answers in another protocol", func(*agentapi.Request) *agentapi.Response {
			return &agentapi.Response{Proto: agentapi.Proto + 1, Version: "v9.0.0", Stdout: []byte(`{"cniVersion":"1.0.0"}`)}
		}, []string{"v9.0.0", "answered in 2", "one release"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel()
			p, out := testPlugin(t, k)
			fakeAgent(t, p.StateDir, tc.answer)
			err := p.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge)))
			var te *types.Error
			if !errors.As(err, &te) || te.Code != agentapi.CodeMismatch {
				t.Fatalf("ADD against an agent of another protocol: %v, want CNI error %d", err, agentapi.CodeMismatch)
			}
			for _, w := range tc.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("error %q lacks %q", te.Msg, w)
				}
			}
			if out.Len() != 0 {
				t.Errorf("printed %q, want nothing", out.String())
			}
			if stateFileExists(t, p.StateDir) {
				t.Errorf("the plugin wrote state: it ran the ADD itself after the agent refused")
			}
		})
	}
}

// TestAgentServesAndFallsBack: through an agent running the plugin's own
// Serve, ADD prints what standalone prints; an agent that closes the
// connection unanswered (killed mid-call) makes the plugin run it itself.
func TestAgentServesAndFallsBack(t *testing.T) {
	standalone, want := testPlugin(t, newFakeKernel())
	if err := standalone.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge))); err != nil {
		t.Fatalf("standalone ADD: %v", err)
	}

	p, out := testPlugin(t, newFakeKernel())
	agentSide, _ := testPlugin(t, newFakeKernel())
	agentSide.StateDir = p.StateDir
	served := 0
	fakeAgent(t, p.StateDir, func(req *agentapi.Request) *agentapi.Response {
		served++
		return agentSide.Serve(req)
	})
	if err := p.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge))); err != nil {
		t.Fatalf("ADD through the agent: %v", err)
	}
	if d := cmp.Diff(noMACs(want.String()), noMACs(out.String())); d != "" || served != 1 {
		t.Errorf("through the agent (served %d times), the result differs from standalone's (-standalone +agent):\n%s", served, d)
	}

	lost, lostOut := testPlugin(t, newFakeKernel())
	fakeAgent(t, lost.StateDir, func(*agentapi.Request) *agentapi.Response { return nil })
	if err := lost.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge))); err != nil {
		t.Fatalf("ADD with an agent lost mid-call: %v", err)
	}
	if d := cmp.Diff(noMACs(want.String()), noMACs(lostOut.String())); d != "" {
		t.Errorf("with the agent lost mid-call, the result differs from standalone's (-standalone +got):\n%s", d)
	}
}

// noMACs blanks the MAC addresses of a result: the fake kernel makes
// random ones.
func noMACs(s string) string {
	return regexp.MustCompile(`"mac": "[0-9a-f:]+"`).ReplaceAllString(s, `"mac": "-"`)
}
