package k8slab

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestE2EImageRefs(t *testing.T) {
	list := `registry.k8s.io/e2e-test-images/agnhost:2.66.1
registry.k8s.io/e2e-test-images/busybox:1.37.0-2
gcr.io/k8s-authenticated-test/agnhost:2.6
registry.k8s.io/e2e-test-images/httpd:2.4.39-4
registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1
registry.k8s.io/e2e-test-images/nginx:1.27.0-2
registry.k8s.io/e2e-test-images/nginx-new:1.0
registry.k8s.io/pause:3.10.2
registry.k8s.io/etcd:3.6.5-0
`
	want := []string{
		"registry.k8s.io/e2e-test-images/agnhost:2.66.1",
		"registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
		"registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
		"registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
		"registry.k8s.io/pause:3.10.2",
	}
	if d := cmp.Diff(want, E2EImageRefs(list)); d != "" {
		t.Errorf("E2EImageRefs (-want +got):\n%s", d)
	}
}
