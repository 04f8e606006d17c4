package cniplugin

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
)

// hostKernel is the kernel of the namespace the plugin runs in.
type hostKernel struct{ h *datapath.Host }

func openHostKernel() (kernel, error) {
	h, err := datapath.NewHost()
	if err != nil {
		return nil, err
	}
	return hostKernel{h}, nil
}

func (k hostKernel) Close()                                      { k.h.Close() }
func (k hostKernel) SetMark(f func(string))                      { k.h.Mark = f }
func (k hostKernel) Attachments() ([]datapath.Attachment, error) { return k.h.Attachments() }
func (k hostKernel) Add(ep *datapath.Endpoint, r datapath.Rules) error {
	return k.h.Add(ep, r)
}
func (k hostKernel) Del(ep *datapath.Endpoint, r datapath.Rules) error {
	return k.h.Del(ep, r)
}
func (k hostKernel) Check(ep *datapath.Endpoint, r datapath.Rules) error {
	return k.h.Check(ep, r)
}
func (k hostKernel) HeldPods(r datapath.Rules) ([]datapath.PodElem, error) { return r.Pods(k.h.NFT) }

func (k hostKernel) Alias(name string) string {
	l, err := k.h.Netlink.LinkByName(name)
	if err != nil {
		return ""
	}
	return l.Attrs().Alias
}

func (k hostKernel) Link(name string) (netlink.Link, error) {
	if name == "" {
		return defaultRouteLink(k.h.Netlink)
	}
	return k.h.Netlink.LinkByName(name)
}

func (k hostKernel) Host() *datapath.Host { return k.h }

func (k hostKernel) Damage(r datapath.Rules) ([]string, error) { return r.Damage(k.h.NFT) }

func (k hostKernel) NetworkReady(r datapath.Rules, b *datapath.Bridge) bool {
	if b != nil {
		if !b.Ready(k.h.Netlink) {
			return false
		}
		if _, on, err := datapath.BridgeNetfilter(); err != nil || !on {
			return false
		}
	}
	if e, ok := datapath.PoolEgressFor(r); ok && !e.Ready(k.h.Netlink) {
		return false
	}
	// The rules themselves, not only their tables: `nft flush table`
	// keeps the tables and empties them.
	damage, err := r.Damage(k.h.NFT)
	return err == nil && len(damage) == 0
}

func (k hostKernel) SetUpNetwork(r datapath.Rules, b *datapath.Bridge, saved *store.LinkConfig, persist func(*store.LinkConfig) error, pods []datapath.PodElem) ([]string, error) {
	h := k.h
	if b != nil {
		if err := b.Ensure(h.Netlink, saved, persist); err != nil {
			return nil, fmt.Errorf("set up bridge %s: %w", b.Name, err)
		}
		if h.Mark != nil {
			h.Mark("bridge") // AZURE_VNET_TRACE: the move to the bridge
		}
		// Redirected pod traffic leaves through the interface it came in
		// by: the node must route it without telling the pod to go direct.
		for _, s := range []string{"net/ipv4/conf/all/send_redirects", "net/ipv4/conf/" + b.Name + "/send_redirects"} {
			if err := h.Sysctl(s, "0"); err != nil {
				return nil, err
			}
		}
		// Replies of NATed connections (Services, host ports) that reach a
		// pod over the bridge are un-NATed by bridge netfilter, as Azure's
		// bridge mode requires: load it where it is a module, turn it on.
		if err := h.EnsureBridgeNetfilter(); err != nil {
			return nil, err
		}
	}
	if err := h.Sysctl(datapath.ForwardingSysctl, "1"); err != nil {
		return nil, err
	}
	// Pods leave through their NIC even when the node's default route
	// goes through another one.
	if e, ok := datapath.PoolEgressFor(r); ok {
		if err := e.Ensure(h.Netlink); err != nil {
			return nil, err
		}
	}
	// The static rules and the recorded pods' elements, whatever was lost:
	// nothing (a no-op), the rules of a flushed table or chain, or every
	// table (`nft flush ruleset`, a restart of the firewall service).
	damage, err := r.Damage(h.NFT)
	if err != nil {
		return nil, err
	}
	// Without its tables the kernel has no pod elements to keep: take them
	// from the state. Otherwise the elements present are kept (the state
	// may be a rebuilt one) and the recorded ones added.
	resync := !r.Present(h.NFT)
	if err := r.Program(h.NFT, resync, pods); err != nil {
		return nil, err
	}
	if len(damage) > 0 && !resync {
		var errs []error
		for _, p := range pods {
			errs = append(errs, r.AddPod(h.NFT, p))
		}
		if err := errors.Join(errs...); err != nil {
			return damage, err
		}
	}
	return damage, nil
}

// CheckNetNS verifies CNI_NETNS names a network namespace, and not the
// plugin's own, before anything is allocated for it.
func (hostKernel) CheckNetNS(path string) error {
	if path == "" {
		return withKind(errNetNS, fmt.Errorf("CNI_NETNS is empty"))
	}
	f, err := os.Open(path)
	if err != nil {
		return withKind(errNetNS, fmt.Errorf("CNI_NETNS %s: %w", path, err))
	}
	defer f.Close()
	// Any namespace file passes a file-system check; only this tells a
	// network namespace from a mount namespace.
	if t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		return withKind(errNetNS, fmt.Errorf("CNI_NETNS %s is not a network namespace", path))
	}
	var pod, own unix.Stat_t
	if unix.Fstat(int(f.Fd()), &pod) == nil && unix.Stat("/proc/self/ns/net", &own) == nil && pod.Dev == own.Dev && pod.Ino == own.Ino {
		return withKind(errNetNS, fmt.Errorf("CNI_NETNS %s is the plugin's own network namespace, not a pod's", path))
	}
	return nil
}

// IfNameFree verifies CNI_IFNAME is not taken in the pod's namespace.
func (hostKernel) IfNameFree(podNetNS, ifName string) error {
	h, err := netns.Netlink(podNetNS)
	if err != nil {
		return withKind(errNetNS, fmt.Errorf("CNI_NETNS %s: %w", podNetNS, err))
	}
	defer h.Close()
	if _, err := h.LinkByName(ifName); err == nil {
		return withKind(errArgs, fmt.Errorf("CNI_IFNAME %s already exists in the pod's namespace %s", ifName, podNetNS))
	}
	return nil
}

func defaultRouteLink(h *netlink.Handle) (netlink.Link, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	// A VM with several NICs may route its default through another NIC
	// than the pods': Azure's DHCP routes the wireserver through the
	// primary NIC (a classless static route), whatever the default. That
	// host route, when there is one, names the NIC; else the default.
	wire := -1
	for i, r := range routes {
		if r.Dst != nil && r.Dst.IP.Equal(netconf.WireserverIP.AsSlice()) {
			if ones, _ := r.Dst.Mask.Size(); ones == 32 {
				wire = i
			}
		}
	}
	if wire >= 0 {
		routes = routes[wire : wire+1]
	}
	for _, r := range routes {
		if wire < 0 && r.Dst != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		l, err := h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("find default route interface: %w", err)
		}
		if l.Type() != "bridge" {
			return l, nil
		}
		// Bridge mode moved the route: the NIC is the port with the bridge's MAC.
		links, err := h.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		for _, p := range links {
			if p.Attrs().MasterIndex == l.Attrs().Index && p.Attrs().HardwareAddr.String() == l.Attrs().HardwareAddr.String() {
				return p, nil
			}
		}
		return nil, fmt.Errorf("the route to the NIC goes through bridge %s, which has no port with its MAC; set \"master\"", l.Attrs().Name)
	}
	return nil, errNoDefaultRoute
}

var errNoDefaultRoute = errors.New("no default route to find the master interface by; set \"master\" in the network config")
