package cniplugin

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/datapath"
)

// policyConf is conf with networkPolicy on.
func policyConf(mode string) []byte {
	return []byte(strings.Replace(string(conf("1.0.0", mode)), `"type": "azure-vnet",`, `"type": "azure-vnet", "networkPolicy": true,`, 1))
}

// fakePolicy records the calls of a policy host; the kernel's log shows
// whether the pod was wired before or after EnsurePod.
type fakePolicy struct {
	mu    sync.Mutex
	k     *fakeKernel
	err   error
	calls []string
}

func (f *fakePolicy) EnsurePod(_ context.Context, pod agentapi.PolicyPod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "ensure "+pod.String()+" "+pod.Mode)
	if f.k != nil {
		f.k.logf("policy ensure %s", pod)
	}
	return f.err
}

func (f *fakePolicy) ReleasePod(pod agentapi.PolicyPod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "release "+pod.String())
}

// TestAddEnsuresPolicyBeforeWiring: with a policy host, ADD enforces the
// pod's policy (namespace/name from CNI_ARGS, the allocated address) before
// the pod's interface exists; DEL releases it.
func TestAddEnsuresPolicyBeforeWiring(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	fp := &fakePolicy{k: k}
	p.Policy = fp
	if err := p.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge))); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := p.Funcs().Del(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge))); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	want := []string{"ensure default/c1 (10.0.0.5) bridge", "release default/c1 (10.0.0.5)"}
	if d := cmp.Diff(want, fp.calls); d != "" {
		t.Errorf("policy calls (-want +got):\n%s", d)
	}
	ensured, added := -1, -1
	for i, l := range k.log {
		if strings.HasPrefix(l, "policy ensure") {
			ensured = i
		}
		if strings.HasPrefix(l, "add ") && added < 0 {
			added = i
		}
	}
	if ensured < 0 || added < 0 || ensured > added {
		t.Errorf("kernel log %q: want the policy ensured before the pod is added", k.log)
	}
}

// TestAddFailsClosed: when policy cannot be enforced (the host refuses, or
// networkPolicy is on and no agent listens), ADD fails with CNI code 11 and
// leaves no address taken and no pod wired.
func TestAddFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stdin []byte
		host  *fakePolicy
		want  string
	}{
		{"host refuses", conf("1.0.0", datapath.ModeBridge), &fakePolicy{err: errors.New("network policy engine not ready")}, "not ready"},
		{"no agent", policyConf(datapath.ModeTransparent), nil, "vnetd is not reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel()
			p, out := testPlugin(t, k)
			if tc.host != nil {
				p.Policy = tc.host
			}
			err := p.Funcs().Add(cmdArgs("c1", tc.stdin))
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, tc.want) {
				t.Fatalf("ADD = %v, want code 11 saying %q", err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("ADD printed a result: %s", out)
			}
			st := readState(t, p)
			if len(st.Allocations) != 0 || len(st.Endpoints) != 0 || len(k.atts) != 0 {
				t.Errorf("after the refused ADD: allocations %v, endpoints %v, kernel %v; want none", st.Allocations, st.Endpoints, k.atts)
			}
			if tc.host != nil && len(tc.host.calls) != 2 || tc.host != nil && !strings.HasPrefix(tc.host.calls[1], "release") {
				t.Errorf("policy calls %q, want ensure then release", tc.host.calls)
			}
		})
	}
}

// TestAddAsksTheAgentForPolicy: a plugin running ADD itself with
// networkPolicy on asks the agent's policy host over the socket.
func TestAddAsksTheAgentForPolicy(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	var mu sync.Mutex
	var got []string
	fakeAgent(t, p.StateDir, func(req *agentapi.Request) *agentapi.Response {
		resp := &agentapi.Response{Proto: agentapi.Proto}
		switch req.Command {
		case agentapi.PolicyEnsureCommand, agentapi.PolicyReleaseCommand:
			mu.Lock()
			got = append(got, req.Command+" "+req.Pod.String())
			mu.Unlock()
		default:
			resp.Foreign = true // the plugin runs CNI commands itself
		}
		return resp
	})
	if err := p.Funcs().Add(cmdArgs("c1", policyConf(datapath.ModeBridge))); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := p.Funcs().Del(cmdArgs("c1", policyConf(datapath.ModeBridge))); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	want := []string{"POLICY-ENSURE default/c1 (10.0.0.5)", "POLICY-RELEASE default/c1 (10.0.0.5)"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("agent requests (-want +got):\n%s", d)
	}
}
