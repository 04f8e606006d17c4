package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/store"
)

// Bridge is bridge mode's node-level network: a Linux bridge that enslaves
// the NIC and takes over its addresses and routes, as Azure's bridge mode
// does.
type Bridge struct {
	Name   string // e.g. azure0
	Master string // e.g. eth0
	// Primary and Gateway rebuild the NIC's configuration when a move was
	// interrupted and left neither the NIC, the bridge nor a snapshot with
	// an address.
	Primary netip.Prefix
	Gateway netip.Addr
	// PodGateway, when set, makes the bridge the pods' router instead of
	// the NIC's stand-in (the overlay and kubenet models, whose pod CIDR
	// the fabric routes to the node: kubenet's cbr0). It holds this
	// gateway address of the node's pod CIDR, enslaves nothing but pods,
	// and the node routes between it and the NIC, which keeps its
	// configuration. Master and Primary are not used.
	PodGateway netip.Prefix
}

// BridgeName derives a bridge name from the master's interface index when
// the configuration names none, as Azure does ("azure" + index).
func BridgeName(master netlink.Link) string {
	return fmt.Sprintf("azure%d", master.Attrs().Index)
}

// Ready reports whether the bridge exists, enslaves the master and carries
// the primary address: the cheap check made on every ADD.
func (b Bridge) Ready(h *netlink.Handle) bool {
	br, err := h.LinkByName(b.Name)
	if err != nil || br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		return false
	}
	if b.PodGateway.IsValid() {
		addrs, err := h.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok && p == b.PodGateway {
				return true
			}
		}
		return false
	}
	m, err := h.LinkByName(b.Master)
	if err != nil || m.Attrs().MasterIndex != br.Attrs().Index {
		return false
	}
	cfg, err := snapshot(h, br)
	if err != nil {
		return false
	}
	for _, a := range cfg.Addrs {
		if a.Addr() == b.Primary.Addr() {
			return true
		}
	}
	return false
}

// Ensure makes the bridge exist, enslave the master and own the master's
// IPv4 addresses and routes. saved is the snapshot a previous, interrupted
// run persisted (or nil); persist is called with the configuration about to
// be moved before anything changes, so a crash mid-move can be finished.
// On failure the master gets its configuration back.
// Equivalent to: ip link add azure0 type bridge; ip link set eth0 master
// azure0; ip addr del/add ...; ip route replace ... dev azure0.
func (b Bridge) Ensure(h *netlink.Handle, saved *store.LinkConfig, persist func(*store.LinkConfig) error) (err error) {
	if b.PodGateway.IsValid() {
		return b.ensurePodGateway(h)
	}
	master, err := h.LinkByName(b.Master)
	if err != nil {
		return fmt.Errorf("find master interface %s: %w", b.Master, err)
	}
	mac := master.Attrs().HardwareAddr
	br, err := h.LinkByName(b.Name)
	created := false
	switch {
	case err == nil && br.Type() != "bridge":
		return fmt.Errorf("interface %s exists and is a %s, not a bridge", b.Name, br.Type())
	case err == nil:
	case isLinkNotFound(err):
		la := netlink.NewLinkAttrs()
		la.Name = b.Name
		la.HardwareAddr = mac
		la.MTU = master.Attrs().MTU
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		if br, err = h.LinkByName(b.Name); err != nil {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		created = true
	default:
		return fmt.Errorf("find bridge %s: %w", b.Name, err)
	}
	defer func() {
		if err != nil && created {
			_ = h.LinkDel(br)
		}
	}()
	// The bridge must answer to the NIC's MAC: the fabric delivers only to it.
	if br.Attrs().HardwareAddr.String() != mac.String() {
		if err := h.LinkSetHardwareAddr(br, mac); err != nil {
			return fmt.Errorf("set bridge %s MAC: %w", b.Name, err)
		}
	}

	mcfg, err := snapshot(h, master)
	if err != nil {
		return err
	}
	bcfg, err := snapshot(h, br)
	if err != nil {
		return err
	}
	enslaved := master.Attrs().MasterIndex == br.Attrs().Index
	var move *store.LinkConfig
	switch {
	case len(mcfg.Addrs) > 0:
		move = mcfg
	case enslaved && len(bcfg.Addrs) > 0:
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("bring up bridge %s: %w", b.Name, err)
		}
		return b.hairpin(h, master) // otherwise complete
	case saved != nil && len(saved.Addrs) > 0:
		move = saved
	case len(bcfg.Addrs) > 0:
		move = &store.LinkConfig{}
	default:
		if !b.Primary.IsValid() {
			return fmt.Errorf("master %s has no IPv4 address to move to bridge %s", b.Master, b.Name)
		}
		move = &store.LinkConfig{Addrs: []netip.Prefix{b.Primary}}
		if b.Gateway.IsValid() {
			move.Routes = []store.Route{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gw: b.Gateway}}
		}
	}
	if persist != nil {
		if err := persist(move); err != nil {
			return fmt.Errorf("save %s configuration before moving it: %w", b.Master, err)
		}
	}

	// Undo in reverse on failure, so the NIC gets its configuration back.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if !enslaved {
		if err := h.LinkSetMaster(master, br); err != nil {
			return fmt.Errorf("attach %s to bridge %s: %w", b.Master, b.Name, err)
		}
		undo = append(undo, func() { _ = h.LinkSetNoMaster(master) })
	}
	// Removing the addresses takes the master's routes with them: on
	// failure they go back after the addresses (undo runs in reverse).
	undo = append(undo, func() {
		for _, r := range move.Routes {
			_ = h.RouteReplace(toRoute(r, master.Attrs().Index))
		}
	})
	for _, a := range move.Addrs {
		a := a
		if err := h.AddrDel(master, toAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", a, b.Master, err)
		}
		undo = append(undo, func() { _ = h.AddrReplace(master, toAddr(a)) })
		if err := h.AddrReplace(br, toAddr(a)); err != nil {
			return fmt.Errorf("add %s to bridge %s: %w", a, b.Name, err)
		}
		undo = append(undo, func() { _ = h.AddrDel(br, toAddr(a)) })
	}
	// Up only once it has the addresses: a bridge that comes up without one
	// sends IGMP reports from 0.0.0.0, which the fabric drops as spoofed.
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", b.Name, err)
	}
	if err := h.LinkSetUp(master); err != nil {
		return fmt.Errorf("bring up %s: %w", b.Master, err)
	}
	for _, r := range move.Routes {
		r := r
		if err := h.RouteReplace(toRoute(r, br.Attrs().Index)); err != nil {
			return fmt.Errorf("move route %s to bridge %s: %w", routeString(r), b.Name, err)
		}
	}
	moveDNS(b.Master, b.Name)
	return b.hairpin(h, master)
}

// hairpin lets the NIC's bridge port send a frame back out the port it came
// in by. The node rewrites connections that arrive from the fabric for
// other VMs' addresses — a NodePort or load-balanced Service whose backend
// is a pod elsewhere — and bridge netfilter then bridges them back towards
// the fabric, which a port without hairpin refuses. What may take that way
// is limited by the rules' forward chain (only rewritten connections), so
// floods from the fabric are not reflected to it.
// Equivalent to: ip link set eth0 type bridge_slave hairpin on.
func (b Bridge) hairpin(h *netlink.Handle, master netlink.Link) error {
	if err := h.LinkSetHairpin(master, true); err != nil {
		return fmt.Errorf("set hairpin on %s: %w", b.Master, err)
	}
	return nil
}

// ensurePodGateway makes the pods' router bridge: a fixed MAC (a bridge
// otherwise takes its lowest port's, and pods would cache a gateway MAC
// that changes), the gateway address, up.
// Equivalent to: ip link add cbr0 address MAC type bridge; ip addr replace
// 10.244.1.1/24 dev cbr0; ip link set cbr0 up.
func (b Bridge) ensurePodGateway(h *netlink.Handle) error {
	br, err := h.LinkByName(b.Name)
	switch {
	case err == nil && br.Type() != "bridge":
		return fmt.Errorf("interface %s exists and is a %s, not a bridge", b.Name, br.Type())
	case err == nil:
	case isLinkNotFound(err):
		la := netlink.NewLinkAttrs()
		la.Name = b.Name
		la.HardwareAddr = RandomMAC()
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		if br, err = h.LinkByName(b.Name); err != nil {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
	default:
		return fmt.Errorf("find bridge %s: %w", b.Name, err)
	}
	if err := h.AddrReplace(br, toAddr(b.PodGateway)); err != nil {
		return fmt.Errorf("add %s to bridge %s: %w", b.PodGateway, b.Name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", b.Name, err)
	}
	return nil
}

// snapshot reads an interface's global IPv4 addresses and the main-table
// routes through it that the kernel did not create by itself.
func snapshot(h *netlink.Handle, l netlink.Link) (*store.LinkConfig, error) {
	cfg := &store.LinkConfig{}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if ok {
			cfg.Addrs = append(cfg.Addrs, p)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", l.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue
		}
		sr := store.Route{Metric: r.Priority, Table: r.Table, Scope: uint8(r.Scope), Protocol: int(r.Protocol), Onlink: r.Flags&unix.RTNH_F_ONLINK != 0}
		if r.Dst != nil {
			sr.Dst, _ = prefixOf(r.Dst)
		} else {
			sr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		sr.Gw, _ = netip.AddrFromSlice(r.Gw.To4())
		sr.Src, _ = netip.AddrFromSlice(r.Src.To4())
		cfg.Routes = append(cfg.Routes, sr)
	}
	return cfg, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
}

func toRoute(r store.Route, link int) *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: link,
		Dst:       &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Priority:  r.Metric,
		Table:     r.Table,
		Scope:     netlink.Scope(r.Scope),
		Protocol:  netlink.RouteProtocol(r.Protocol),
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	if r.Onlink {
		nr.Flags |= int(netlink.FLAG_ONLINK)
	}
	return nr
}

func routeString(r store.Route) string {
	if r.Gw.IsValid() {
		return fmt.Sprintf("%s via %s", r.Dst, r.Gw)
	}
	return r.Dst.String()
}

func isLinkNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf)
}

// moveDNS copies systemd-resolved's per-link DNS servers and domains from the
// NIC to the bridge: without it, a node whose resolver is configured per
// link loses DNS when its address moves. Best effort, once per network setup;
// nodes without systemd-resolved have nothing to move.
func moveDNS(from, to string) {
	if _, err := os.Stat("/run/systemd/resolve/io.systemd.Resolve"); err != nil {
		return
	}
	resolvectl, err := exec.LookPath("resolvectl")
	if err != nil {
		return
	}
	for _, what := range []string{"dns", "domain"} {
		out, err := exec.Command(resolvectl, what, from).Output()
		if err != nil {
			continue
		}
		// "Link 2 (eth0): 168.63.129.16"
		line := string(out)
		if i := strings.Index(line, "):"); i >= 0 {
			line = line[i+2:]
		}
		vals := strings.Fields(line)
		if len(vals) == 0 {
			continue
		}
		_ = exec.Command(resolvectl, append([]string{what, to}, vals...)...).Run()
	}
}

// Restore undoes Ensure: the master leaves the bridge and gets back its
// addresses and routes (saved, the snapshot taken before the move, or what
// the bridge holds now), and the bridge is deleted. A missing bridge is
// not an error. Equivalent to: ip link set eth0 nomaster; ip addr del …
// dev azure0; ip addr add … dev eth0; ip route replace … dev eth0; ip link
// del azure0.
func (b Bridge) Restore(h *netlink.Handle, saved *store.LinkConfig) error {
	br, err := h.LinkByName(b.Name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", b.Name, err)
	}
	master, err := h.LinkByName(b.Master)
	if err != nil {
		return fmt.Errorf("find master interface %s: %w", b.Master, err)
	}
	now, err := snapshot(h, br)
	if err != nil {
		return err
	}
	cfg := now
	if saved != nil && len(saved.Addrs) > 0 {
		cfg = saved
	}
	if master.Attrs().MasterIndex == br.Attrs().Index {
		if err := h.LinkSetNoMaster(master); err != nil {
			return fmt.Errorf("detach %s from bridge %s: %w", b.Master, b.Name, err)
		}
	}
	for _, a := range now.Addrs {
		if err := h.AddrDel(br, toAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from bridge %s: %w", a, b.Name, err)
		}
	}
	for _, a := range cfg.Addrs {
		if err := h.AddrReplace(master, toAddr(a)); err != nil {
			return fmt.Errorf("give %s back to %s: %w", a, b.Master, err)
		}
	}
	if err := h.LinkSetUp(master); err != nil {
		return fmt.Errorf("bring up %s: %w", b.Master, err)
	}
	for _, r := range cfg.Routes {
		if err := h.RouteReplace(toRoute(r, master.Attrs().Index)); err != nil {
			return fmt.Errorf("give route %s back to %s: %w", routeString(r), b.Master, err)
		}
	}
	if err := h.LinkDel(br); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete bridge %s: %w", b.Name, err)
	}
	return nil
}

// GiveBack puts addresses back on an interface. Equivalent to: ip addr
// replace ADDR dev IF, for each.
func GiveBack(h *netlink.Handle, ifName string, addrs []netip.Prefix) error {
	l, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifName, err)
	}
	var errs []error
	for _, a := range addrs {
		if err := h.AddrReplace(l, toAddr(a)); err != nil {
			errs = append(errs, fmt.Errorf("give %s back to %s: %w", a, ifName, err))
		}
	}
	return errors.Join(errs...)
}
