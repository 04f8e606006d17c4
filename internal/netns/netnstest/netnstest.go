// Package netnstest opens netlink handles into the network namespaces tests
// create.
package netnstest

import (
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

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
	nsh, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	// The handle's sockets are opened in the namespace now; the
	// namespace file is not needed after.
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
