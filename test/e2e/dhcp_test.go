package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// nodeIdentity is the node's primary address and default route, as `ip`
// prints them (nodeConfig's lines naming either).
func nodeIdentity(t *testing.T, m *vm) string {
	t.Helper()
	var keep []string
	for _, l := range strings.Split(nodeConfig(t, m), "\n") {
		if strings.HasPrefix(l, "default ") || strings.Contains(l, " "+m.spec.PrimaryIP.String()+"/") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestDHCPRenewal: the VMs keep their address from the fabric's DHCP, as
// Azure's do, with a real client (udhcpc) on eth0 that applies each lease
// as networkd does and takes a lost lease's address off. Across a forced
// renewal and a restart of the client (Azure's lease is infinite: nothing
// else renews it) the node keeps its address and default route, and it
// and its pods keep reaching the VNet and the internet.
//
// Transparent mode leaves eth0 alone: the client renews the lease on it.
// Bridge mode moves eth0's address to the bridge, which has eth0's MAC:
// the client on eth0 no longer hears the server (the bridge takes the
// answers), declares the lease lost and takes the address off eth0, which
// no longer holds it; the bridge keeps it. A client told to act on the
// bridge (docs/datapath.md) renews there.
func TestDHCPRenewal(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 6, dhcp: true, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			want := "bound eth0 " + vm1.spec.PrimaryIP.String() + "/24 " + fabric.Gateway(subnet).String()
			if got := vm1.dhcp.Events(); !strings.Contains(strings.Join(got, "\n"), want) {
				t.Errorf("DHCP client events %q, want %q", got, want)
			}
			a := vm1.addPod(t, "a")
			x := vm2.addPod(t, "x")
			mustReachOut(t, a, x)
			booted := nodeIdentity(t, vm1)
			steps := []string{"renew", "restart"}
			if mode == datapath.ModeBridge {
				steps = append(steps, "restart-on-bridge", "renew")
			}
			for _, step := range steps {
				leases, lost := vm1.dhcp.Leases(), vm1.dhcp.Count("leasefail", "deconfig")
				var err error
				switch step {
				case "renew":
					err = vm1.dhcp.Renew()
				case "restart":
					err = vm1.dhcp.Restart(vm1.dhcp.Iface)
				case "restart-on-bridge":
					err = vm1.dhcp.Restart("azure0")
				}
				if err != nil {
					t.Fatal(err)
				}
				if vm1.dhcp.Iface == "eth0" && mode == datapath.ModeBridge {
					// No answer reaches a client on a bridge port.
					err = vm1.dhcp.Wait(lost+1, 15*time.Second, "leasefail", "deconfig")
					if n := vm1.dhcp.Leases(); n != leases {
						t.Errorf("%s: the client on eth0 got a lease through the bridge: events %q", step, vm1.dhcp.Events())
					}
				} else {
					err = vm1.dhcp.WaitLeases(leases+1, 10*time.Second)
				}
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				if got := nodeIdentity(t, vm1); got != booted {
					t.Errorf("after the DHCP client's %s on %s the node's address or default route changed (-before +after):\n%s", step, vm1.dhcp.Iface, cmp.Diff(booted, got))
				}
				mustPing(t, vm1.ns, vm2.spec.PrimaryIP)
				mustPing(t, vm2.ns, vm1.spec.PrimaryIP)
				mustReachOut(t, a, x)
				mustReachOut(t, vm1.addPod(t, "p-"+step), x)
			}
		})
	}
}
