package policycli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakeAPI answers list paths with objects, through JSON as the server does.
type fakeAPI map[string]any

func (f fakeAPI) Get(_ context.Context, path string, v any) error {
	b, err := json.Marshal(f[path])
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func TestPolicyExplain(t *testing.T) {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(5432)
	pod := func(name, ip, tier string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"tier": tier}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
	}
	api := fakeAPI{
		"/api/v1/namespaces": corev1.NamespaceList{Items: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}}},
		"/api/v1/pods": corev1.PodList{Items: []corev1.Pod{
			pod("frontend", "10.0.0.10", "frontend"), pod("backend", "10.0.0.11", "backend"), pod("database", "10.0.0.12", "database")}},
		"/apis/networking.k8s.io/v1/networkpolicies": netv1.NetworkPolicyList{Items: []netv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "database"},
			Spec: netv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "database"}},
				Ingress: []netv1.NetworkPolicyIngressRule{{
					From:  []netv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "backend"}}}},
					Ports: []netv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
				}},
			},
		}}},
	}
	m, err := loadModel(context.Background(), api)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetOut(&out)
	if err := explainBothWays(cmd, m, "shop/database", "shop/frontend", "5432/tcp"); err != nil {
		t.Fatal(err)
	}
	want := `shop/frontend (10.0.0.10) -> shop/database (10.0.0.12) 5432/tcp: DENIED
  egress of shop/frontend (10.0.0.10): allowed, no policy selects the pod for egress
  ingress to shop/database (10.0.0.12): denied, selected by shop/database and no rule of theirs matches
shop/database (10.0.0.12) -> shop/frontend (10.0.0.10) 5432/tcp: ALLOWED
  egress of shop/database (10.0.0.12): allowed, no policy selects the pod for egress
  ingress to shop/frontend (10.0.0.10): allowed, no policy selects the pod for ingress
`
	if out.String() != want {
		t.Errorf("explain shop/database shop/frontend 5432/tcp =\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if err := explainBothWays(cmd, m, "shop/database", "shop/backend", "5432"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "allowed by shop/database ingress rule 0") {
		t.Errorf("backend -> database not allowed by shop/database:\n%s", out.String())
	}
	for _, bad := range [][3]string{{"203.0.113.1", "shop/backend", "80"}, {"shop/database", "shop/none", "80"}, {"shop/database", "shop/backend", "http"}} {
		if err := explainBothWays(cmd, m, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("explain %v succeeded", bad)
		}
	}
}
