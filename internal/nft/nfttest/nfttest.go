// Package nfttest opens nftables connections into the network namespaces
// tests create.
package nfttest

import (
	"os"
	"testing"

	"github.com/google/nftables"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Conn returns a connection to the nftables of the named network namespace,
// valid until the test ends.
func Conn(t testing.TB, name string) *nftables.Conn {
	t.Helper()
	f, err := os.Open(netns.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
