package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/policy"
)

// denyAll is a default-deny-ingress policy for every pod of namespace ns.
func denyAll(ns string) *netv1.NetworkPolicy {
	return &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny"},
		Spec: netv1.NetworkPolicySpec{PolicyTypes: []netv1.PolicyType{netv1.PolicyTypeIngress}}}
}

func apiPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node}}
}

func testHost(t *testing.T, k *policy.Fake) *policyHost {
	t.Helper()
	e := policy.NewEngine(k)
	e.Update(func(m *policy.Model) {
		m.SetNamespace(policy.Namespace{Name: "shop"})
		m.SetPolicy(denyAll("shop"))
	})
	return &policyHost{
		engine:   e,
		nodeName: "vm-1",
		wait:     20 * time.Millisecond,
		bridgeOK: func() error { return nil },
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		ensures:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x"}, []string{"result"}),
	}
}

// TestPolicyHostEnsures: a pod the informers delivered is enforced when
// EnsurePod returns; before the engine is ready EnsurePod refuses.
func TestPolicyHostEnsures(t *testing.T) {
	k := &policy.Fake{}
	h := testHost(t, k)
	pod := agentapi.PolicyPod{Namespace: "shop", Name: "db", IP: netip.MustParseAddr("10.0.0.12"), Mode: netconf.ModeTransparent}
	h.engine.Update(func(m *policy.Model) { m.SetPod(policy.PodFromAPI(apiPod("shop", "db", "vm-1"), "vm-1")) })
	if err := h.EnsurePod(context.Background(), pod); !errors.Is(err, policy.ErrNotReady) {
		t.Fatalf("EnsurePod before the informers synced = %v, want ErrNotReady", err)
	}
	h.engine.SetReady()
	if err := h.EnsurePod(context.Background(), pod); err != nil {
		t.Fatalf("EnsurePod: %v", err)
	}
	if d := k.Dump(); !strings.Contains(d, "10.0.0.12 : jump pods-in-") {
		t.Errorf("after EnsurePod the table has no verdict for the pod:\n%s", d)
	}
}

// TestPolicyHostFetchesUnknownPods: a pod the informers have not delivered
// is read from the API and enforced; if the API cannot say, ADD fails
// rather than start a pod whose labels are unknown.
func TestPolicyHostFetchesUnknownPods(t *testing.T) {
	k := &policy.Fake{}
	h := testHost(t, k)
	h.engine.SetReady()
	var asked []string
	h.getPod = func(_ context.Context, ns, name string) (*corev1.Pod, error) {
		asked = append(asked, ns+"/"+name)
		if name == "gone" {
			return nil, errors.New(`pods "gone" not found`)
		}
		return apiPod(ns, name, "vm-1"), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.EnsurePod(ctx, agentapi.PolicyPod{Namespace: "shop", Name: "late", IP: netip.MustParseAddr("10.0.0.40")}); err != nil {
		t.Fatalf("EnsurePod of a pod only the API knows: %v", err)
	}
	if d := k.Dump(); !strings.Contains(d, "10.0.0.40 : jump pods-in-") {
		t.Errorf("fetched pod not enforced:\n%s", d)
	}
	err := h.EnsurePod(ctx, agentapi.PolicyPod{Namespace: "shop", Name: "gone", IP: netip.MustParseAddr("10.0.0.41")})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("EnsurePod of a pod the API does not have = %v, want an error saying so", err)
	}
	if want := []string{"shop/late", "shop/gone"}; strings.Join(asked, " ") != strings.Join(want, " ") {
		t.Errorf("API asked for %q, want %q", asked, want)
	}
}

// TestPolicyHostBridgeNetfilter: in bridge mode without bridge netfilter
// the pod's traffic would bypass the table: refused, saying why.
func TestPolicyHostBridgeNetfilter(t *testing.T) {
	h := testHost(t, &policy.Fake{})
	h.engine.SetReady()
	h.bridgeOK = func() error { return errors.New("bridge-nf-call-iptables is 0") }
	err := h.EnsurePod(context.Background(), agentapi.PolicyPod{Namespace: "shop", Name: "db", IP: netip.MustParseAddr("10.0.0.12"), Mode: netconf.ModeBridge})
	if err == nil || !strings.Contains(err.Error(), "bridge-nf-call-iptables") {
		t.Errorf("EnsurePod in bridge mode without bridge netfilter = %v", err)
	}
}

// TestServePolicyWithoutPolicy: a plugin asking an agent that runs without
// policy gets a retryable error saying how to turn it on.
func TestServePolicyWithoutPolicy(t *testing.T) {
	a, _ := newTestAgent(t, 1, &fakeRunner{}, &fakeRunner{})
	resp := a.run(&agentapi.Request{Proto: agentapi.Proto, Command: agentapi.PolicyEnsureCommand,
		Pod: &agentapi.PolicyPod{Namespace: "shop", Name: "db", IP: netip.MustParseAddr("10.0.0.12")}})
	if resp.Error == nil || resp.Error.Code != agentapi.CodeTryAgainLater || !strings.Contains(resp.Error.Msg, "--network-policy") {
		t.Errorf("POLICY-ENSURE to an agent without policy: %+v, want code 11 naming --network-policy", resp.Error)
	}
}

// TestPolicyCollector: the kernel's per-policy counters become
// vnetd_policy_packets_total by policy, direction and verdict.
func TestPolicyCollector(t *testing.T) {
	h := testHost(t, &policy.Fake{})
	h.engine.SetReady()
	if err := h.engine.Sync(); err != nil {
		t.Fatal(err)
	}
	c := newPolicyCollector(h.engine, func(*policy.State) (map[string]policy.Counts, error) {
		return map[string]policy.Counts{policy.CounterKey("shop/deny", policy.Ingress): {DeniedPackets: 3, DeniedBytes: 180}}, nil
	})
	want := `# HELP vnetd_policy_packets_total Packets a NetworkPolicy's rules allowed, and packets dropped at pods it selects (no policy of theirs allowed them), by policy (namespace/name), direction and verdict.
# TYPE vnetd_policy_packets_total counter
vnetd_policy_packets_total{direction="ingress",policy="shop/deny",verdict="allowed"} 0
vnetd_policy_packets_total{direction="ingress",policy="shop/deny",verdict="denied"} 3
# HELP vnetd_policy_ready 1 once the engine holds the cluster's pods, namespaces and policies and enforces them.
# TYPE vnetd_policy_ready gauge
vnetd_policy_ready 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "vnetd_policy_packets_total", "vnetd_policy_ready"); err != nil {
		t.Error(err)
	}
}
