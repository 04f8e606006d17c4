package install

import (
	"testing"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
)

// TestForwarding turns forwarding on in a throwaway namespace and persists
// it; a second run changes nothing.
func TestForwarding(t *testing.T) {
	ns := netnstest.New(t, "vif")
	dir := t.TempDir()
	for i, want := range []Outcome{Installed, Unchanged} {
		var act Action
		var fwd string
		err := netns.Do(ns, func() (err error) {
			if act, err = Forwarding(dir); err != nil {
				return err
			}
			fwd, err = datapath.ReadSysctl(datapath.ForwardingSysctl)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if fwd != "1" || act.Outcome != want {
			t.Errorf("run %d: ip_forward %q, %s %s; want 1, %s", i+1, fwd, act.Path, act.Outcome, want)
		}
	}
}
