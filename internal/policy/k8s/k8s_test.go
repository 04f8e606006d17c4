package k8s

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vnetcni/vnetcni/internal/policy"
)

func TestPodFromAPI(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "be", Labels: map[string]string{"tier": "backend"}},
		Spec: corev1.PodSpec{NodeName: "vm-1", Containers: []corev1.Container{
			{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9000}}},
			{Name: "dns", Ports: []corev1.ContainerPort{{Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.11", PodIPs: []corev1.PodIP{{IP: "10.0.0.11"}}},
	}
	want := policy.Pod{Namespace: "shop", Name: "be", Labels: map[string]string{"tier": "backend"}, Local: true,
		IPs:   []netip.Addr{netip.MustParseAddr("10.0.0.11")},
		Ports: []policy.NamedPort{{Name: "http", Port: 8080}, {Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}}
	if d := cmp.Diff(want, policy.PodFromAPI(p, "vm-1"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("PodFromAPI (-want +got):\n%s", d)
	}
	if policy.PodFromAPI(p, "vm-2").Local {
		t.Error("pod of another node is local")
	}
	p.Status.Phase = corev1.PodSucceeded
	if got := policy.PodFromAPI(p, "vm-1"); len(got.IPs) != 0 {
		t.Errorf("finished pod keeps addresses %v", got.IPs)
	}
	trimmed, _ := trim(p)
	if d := cmp.Diff(policy.PodFromAPI(p, "vm-1"), policy.PodFromAPI(trimmed.(*corev1.Pod), "vm-1"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("trim loses what policy reads (-full +trimmed):\n%s", d)
	}
}

// recorder is a Sink over a model.
type recorder struct {
	mu    sync.Mutex
	m     *policy.Model
	ready bool
}

func (r *recorder) Update(f func(*policy.Model)) { r.mu.Lock(); f(r.m); r.mu.Unlock() }
func (r *recorder) SetReady()                    { r.mu.Lock(); r.ready = true; r.mu.Unlock() }

// TestStart: the informers deliver the API's objects before SetReady, and
// changes after.
func TestStart(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db", Labels: map[string]string{"tier": "database"}},
			Spec: corev1.PodSpec{NodeName: "vm-1"}, Status: corev1.PodStatus{PodIP: "10.0.0.12"}},
		&netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny"}},
	)
	r := &recorder{m: policy.NewModel()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Start(ctx, client, "vm-1", r); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	pods, nss, pols := r.m.Counts()
	if !r.ready || pods != 1 || nss != 1 || pols != 1 {
		t.Errorf("after Start: ready %v, %d pods, %d namespaces, %d policies; want ready, 1, 1, 1", r.ready, pods, nss, pols)
	}
	s := policy.Compile(r.m).Render()
	r.mu.Unlock()
	if !strings.Contains(s, "10.0.0.12 : jump") {
		t.Errorf("compiled model does not isolate shop/db:\n%s", s)
	}
	if err := client.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "deny", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		r.mu.Lock()
		_, _, pols = r.m.Counts()
		r.mu.Unlock()
		if pols == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}
