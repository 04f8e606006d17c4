// Package netnstest opens netlink handles into the network namespaces tests
// create.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Handle returns a netlink handle in the named namespace; the caller
// closes it.
func Handle(t testing.TB, name string) *netlink.Handle {
	t.Helper()
	return HandleAt(t, netns.Path(name))
}

// HandleAt is Handle for the namespace mounted at path.
func HandleAt(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	h, err := netns.Netlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// New creates a network namespace with a unique name starting with prefix,
// removed at cleanup, and returns its name. It skips the test when not
// root.
func New(t testing.TB, prefix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root for network namespaces")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if err := netns.Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	return name
}
