package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/policy"
)

func policyNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "vagpol" + hex.EncodeToString(b)
	if err := netns.Create(name); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	return name
}

// ingressMap is the kernel's ingress verdict map in namespace ns.
func ingressMap(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "map", "ip", policy.TableName, policy.MapIngress).CombinedOutput()
	if err != nil {
		return "error: " + string(out)
	}
	return string(out)
}

// startTestPolicy runs an agent's policy host over the table of a
// throwaway namespace and a fake API holding objs, until the returned stop.
func startTestPolicy(t *testing.T, ns, stateDir string, objs ...runtime.Object) (*Agent, func()) {
	t.Helper()
	nft, err := policy.OpenNftables(netns.Path(ns))
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewSimpleClientset(objs...)
	a := New(Config{StateDir: stateDir, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	a.runPolicy(ctx, &wg, client, nft, "vm-1")
	deadline := time.Now().Add(20 * time.Second)
	for !a.pol.engine.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("policy engine not ready after 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a, func() { cancel(); wg.Wait() }
}

// TestPolicyInTheKernel: vnetd's policy host, fed by informers, puts a new
// pod's verdict into the kernel before EnsurePod returns; the table
// outlives the agent (pods stay enforced while it restarts), and a new
// agent takes it over.
func TestPolicyInTheKernel(t *testing.T) {
	ns := policyNetNS(t)
	dir := t.TempDir()
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}}},
		apiPod("shop", "db", "vm-1"),
		denyAll("shop"),
	}
	a, stop := startTestPolicy(t, ns, dir, objs...)
	pod := agentapi.PolicyPod{Namespace: "shop", Name: "db", IP: netip.MustParseAddr("10.0.0.12"), Mode: netconf.ModeTransparent}
	if err := a.plugins[netconf.PluginType].Policy.EnsurePod(context.Background(), pod); err != nil {
		t.Fatalf("EnsurePod: %v", err)
	}
	if m := ingressMap(t, ns); !strings.Contains(m, "10.0.0.12 : jump pods-in-") {
		t.Fatalf("after EnsurePod the kernel's ingress map lacks the pod:\n%s", m)
	}
	stop()
	if m := ingressMap(t, ns); !strings.Contains(m, "10.0.0.12 : jump pods-in-") {
		t.Fatalf("with the agent stopped the pod is no longer enforced:\n%s", m)
	}
	// The pod's address now comes from the API, as for a running pod.
	p := objs[1].(*corev1.Pod)
	p.Status.PodIP = "10.0.0.12"
	_, stop = startTestPolicy(t, ns, dir, objs...)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := ingressMap(t, ns)
		if strings.Contains(m, "10.0.0.12 : jump pods-in-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted agent's table lacks the pod:\n%s", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkEnsurePod: what network policy adds to one CNI ADD on a node
// (a new pod selected by a policy: bind, compile, one nft transaction),
// with 500 pods and 50 policies in the API.
//
//	go test -run '^$' -bench EnsurePod ./internal/agent
func BenchmarkEnsurePod(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root for network namespaces")
	}
	bb := make([]byte, 3)
	_, _ = rand.Read(bb)
	ns := "vagbench" + hex.EncodeToString(bb)
	if err := netns.Create(ns); err != nil {
		b.Fatal(err)
	}
	defer netns.Delete(ns)
	objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}}}}
	for i := 0; i < 500; i++ {
		p := apiPod("shop", fmt.Sprintf("pod-%d", i), "vm-1")
		p.Labels["app"] = fmt.Sprintf("app-%d", i%50)
		objs = append(objs, p)
	}
	for i := 0; i < 50; i++ {
		pol := denyAll("shop")
		pol.Name = fmt.Sprintf("allow-%d", i)
		pol.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i)}}
		pol.Spec.Ingress = []netv1.NetworkPolicyIngressRule{{From: []netv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (i+1)%50)}}}}}}
		objs = append(objs, pol)
	}
	nft, err := policy.OpenNftables(netns.Path(ns))
	if err != nil {
		b.Fatal(err)
	}
	a := New(Config{StateDir: b.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	a.runPolicy(ctx, &wg, fake.NewSimpleClientset(objs...), nft, "vm-1")
	for !a.pol.engine.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	host := a.plugins[netconf.PluginType].Policy
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i / 250 % 250), byte(i%250 + 1)})
		pod := agentapi.PolicyPod{Namespace: "shop", Name: fmt.Sprintf("pod-%d", i%500), IP: ip, Mode: netconf.ModeTransparent}
		if err := host.EnsurePod(context.Background(), pod); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		host.ReleasePod(pod)
		b.StartTimer()
	}
}
