package datapath

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// TestEndpointLifecycle builds, checks and removes an endpoint in each mode
// inside throwaway namespaces, and reads the attachment back from the kernel.
func TestEndpointLifecycle(t *testing.T) {
	for _, mode := range []string{ModeBridge, ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			hostNS, h := nicNS(t)
			podNS := tempNetNS(t)
			r := testRules(mode)
			r.Master = "eth0"
			gw := netip.MustParseAddr("10.0.0.1")
			if mode == ModeTransparent {
				gw = TransparentGateway
			}
			ep := &Endpoint{
				Attachment: Attachment{Mode: mode, ContainerID: "c1", IfName: "eth0", Network: "azure",
					IP: netip.MustParsePrefix("10.0.0.5/24"), PodMAC: mustMAC("02:00:00:00:00:05")},
				Mode: mode, Netns: netns.Path(podNS), HostIf: HostIfName("c1", "eth0"), Gateway: gw, Bridge: "azure0",
			}
			err := netns.Do(hostNS, func() error {
				host, err := NewHost()
				if err != nil {
					return err
				}
				defer host.Close()
				if mode == ModeBridge {
					b := Bridge{Name: "azure0", Master: "eth0"}
					if err := b.Ensure(host.Netlink, nil, nil); err != nil {
						return err
					}
				}
				if err := r.Program(host.NFT, false, nil); err != nil {
					return err
				}
				if err := host.Add(ep, r); err != nil {
					t.Fatalf("Add: %v", err)
				}
				if err := host.Check(ep, r); err != nil {
					t.Errorf("Check after Add: %v", err)
				}
				atts, err := host.Attachments()
				if err != nil || len(atts) != 1 || atts[0].ContainerID != "c1" || atts[0].IP != ep.IP || atts[0].Mode != mode {
					t.Errorf("Attachments = %+v, %v; want c1 with %s", atts, err, ep.IP)
				}
				// Adding again replaces the endpoint rather than failing.
				if err := host.Add(ep, r); err != nil {
					t.Errorf("second Add: %v", err)
				}
				if err := host.Del(ep, r); err != nil {
					t.Fatalf("Del: %v", err)
				}
				if err := host.Del(ep, r); err != nil {
					t.Errorf("second Del: %v", err)
				}
				if err := host.Check(ep, r); err == nil {
					t.Errorf("Check after Del succeeded")
				}
				if pods, _ := r.Pods(host.NFT); len(pods) != 0 {
					t.Errorf("pod elements left after Del: %v", pods)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.LinkByName(ep.HostIf); err == nil {
				t.Errorf("host veth %s left after Del", ep.HostIf)
			}
		})
	}
}

// A pod namespace that already has the interface makes Add fail and leave
// nothing behind.
func TestEndpointAddFailureLeavesNothing(t *testing.T) {
	hostNS, h := nicNS(t)
	podNS := tempNetNS(t)
	r := testRules(ModeTransparent)
	ep := &Endpoint{
		Attachment: Attachment{Mode: ModeTransparent, ContainerID: "c2", IfName: "eth9", Network: "azure",
			IP: netip.MustParsePrefix("10.0.0.6/24"), PodMAC: RandomMAC()},
		Mode: ModeTransparent, Netns: netns.Path(podNS), HostIf: HostIfName("c2", "eth9"), Gateway: TransparentGateway,
	}
	// Occupy the pod's interface name.
	err := netns.Do(podNS, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "eth9"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "x9"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = netns.Do(hostNS, func() error {
		host, err := NewHost()
		if err != nil {
			return err
		}
		defer host.Close()
		if err := r.Program(host.NFT, false, nil); err != nil {
			return err
		}
		if err := host.Add(ep, r); err == nil {
			t.Errorf("Add into a pod that has %s succeeded", ep.IfName)
		}
		if pods, _ := r.Pods(host.NFT); len(pods) != 0 {
			t.Errorf("elements left after a failed Add: %v", pods)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(ep.HostIf); err == nil {
		t.Errorf("host veth left after a failed Add")
	}
}
