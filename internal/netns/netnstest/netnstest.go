// Package netnstest opens netlink handles into the network namespaces tests
// create.
package netnstest

import (
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
