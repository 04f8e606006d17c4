// Package fabrictest starts an emulated VNet for a test: built, serving,
// and torn down (services first, then namespaces) when the test ends.
package fabrictest

import (
	"testing"

	"github.com/vnetcni/vnetcni/lab/fabric"
)

// Start builds the fabric a spec describes and serves its wireserver,
// DNS, IMDS and internet host until the test ends.
func Start(t testing.TB, spec fabric.Spec) (*fabric.Fabric, *fabric.Services) {
	t.Helper()
	f, err := fabric.Build(spec)
	if err != nil {
		_ = fabric.Destroy(spec)
		t.Fatalf("build fabric: %v", err)
	}
	t.Cleanup(func() {
		if err := fabric.Destroy(spec); err != nil {
			t.Errorf("destroy fabric: %v", err)
		}
	})
	svc, err := f.Serve()
	if err != nil {
		t.Fatalf("serve fabric: %v", err)
	}
	// Cleanups run last-in first-out: the services close before Destroy,
	// as an open socket keeps its namespace alive.
	t.Cleanup(func() { _ = svc.Close() })
	return f, svc
}
