package k8slab

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

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

// The pair porter serves its TLS ports with must load as a key pair and
// name 127.0.0.1 and ::1, as upstream's does.
func TestPorterTLS(t *testing.T) {
	certPEM, keyPEM, err := porterTLS()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "example.com"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("VerifyHostname(%s): %v", host, err)
		}
	}
	if !cert.NotAfter.After(time.Now().AddDate(50, 0, 0)) {
		t.Errorf("certificate expires %v; want decades from now", cert.NotAfter)
	}
}
