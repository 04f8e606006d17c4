package policy

import (
	"fmt"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// TestShopExample: examples/network-policy does what it says: the backend
// only from the frontend, the database only from the backend, the
// frontend from anywhere on HTTP.
func TestShopExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/network-policy/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := NewModel()
	next := 10
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Namespace":
			var ns corev1.Namespace
			if err := yaml.UnmarshalStrict([]byte(doc), &ns); err != nil {
				t.Fatal(err)
			}
			m.SetNamespace(Namespace{Name: ns.Name, Labels: map[string]string{"kubernetes.io/metadata.name": ns.Name}})
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
				t.Fatal(err)
			}
			pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
			pod.Namespace, pod.Name = d.Namespace, d.Name
			pod.Status.PodIP = fmt.Sprintf("10.0.0.%d", next)
			next++
			m.SetPod(PodFromAPI(pod, ""))
		case "NetworkPolicy":
			var p netv1.NetworkPolicy
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			m.SetPolicy(&p)
		}
	}
	m.invalidateAll()
	for _, p := range m.pods {
		p.Local = true
	}
	check(t, m, []flow{
		allow("shop/frontend -> shop/backend 9090/tcp"),
		deny("shop/frontend -> shop/database 5432/tcp"),
		allow("shop/backend -> shop/database 5432/tcp"),
		deny("shop/backend -> shop/database 5433/tcp"),
		deny("shop/database -> shop/backend 9090/tcp"),
		allow("203.0.113.7 -> shop/frontend 8080/tcp"),
		deny("203.0.113.7 -> shop/frontend 9090/tcp"),
		deny("203.0.113.7 -> shop/backend 9090/tcp"),
		allow("shop/database -> 203.0.113.7 443/tcp"), // egress is not isolated
	})
}
