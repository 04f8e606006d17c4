package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Endpoint is one pod interface.
type Endpoint struct {
	Attachment                  // container ID, interface name, network, address, pod MAC
	Mode       string           // bridge or transparent
	Netns      string           // the pod's network namespace (path)
	HostIf     string           // host-side veth
	HostMAC    net.HardwareAddr // set by Add
	Gateway    netip.Addr       // the pod's next hop
	Bridge     string           // bridge mode: the bridge to attach to
	MTU        int
}

// Host is the node-side context endpoints are built in: a netlink handle and
// an nftables connection for the node's namespace.
type Host struct {
	Netlink *netlink.Handle
	NFT     *nftables.Conn
	// Sysctl writes a value under /proc/sys/net/ipv4/conf for an interface
	// of the node's namespace.
	Sysctl func(path, value string) error
	// LoadModule loads a kernel module (LoadModule when nil).
	LoadModule func(name string) error
	// Mark, when set, is called as each step of Add and Del completes, with
	// the step's name ("veth", "pod", "link", "nft"), so a caller can time
	// the steps (the plugin's AZURE_VNET_TRACE phases).
	Mark func(step string)

	close func() // NewHostAt's namespace file
}

func (h *Host) mark(step string) {
	if h.Mark != nil {
		h.Mark(step)
	}
}

// NewHost returns a Host for the calling process's namespace.
func NewHost() (*Host, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	c, err := nftables.New()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return &Host{Netlink: h, NFT: c, Sysctl: WriteSysctl}, nil
}

// NewHostAt returns a Host for the network namespace at path.
func NewHostAt(path string) (*Host, error) {
	ns, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	// nftables opens a socket per transaction, in the namespace of this
	// file descriptor: it stays open until Close.
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd)))
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open nftables in netns %s: %w", path, err)
	}
	sysctl := func(key, value string) error {
		return netns.DoPath(path, func() error { return WriteSysctl(key, value) })
	}
	return &Host{Netlink: ns.Netlink, NFT: c, Sysctl: sysctl, close: func() { ns.Fd.Close() }}, nil
}

// Close releases the host's handles.
func (h *Host) Close() {
	h.Netlink.Close()
	if h.close != nil {
		h.close()
	}
}

// WriteSysctl writes a networking sysctl of the calling thread's namespace,
// e.g. WriteSysctl("net/ipv4/ip_forward", "1").
// Equivalent to: sysctl -w net.ipv4.ip_forward=1.
func WriteSysctl(path, value string) error {
	p := filepath.Join("/proc/sys", path)
	if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// ReadSysctl reads a networking sysctl of the calling thread's namespace.
func ReadSysctl(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", path))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func podHandle(path string) (*netlink.Handle, func(), error) {
	h, err := netns.Netlink(path)
	if err != nil {
		return nil, nil, err
	}
	return h, h.Close, nil
}

// Add builds the endpoint: a veth pair whose pod end is configured with the
// endpoint's address and routes, whose host end is attached (bridge) or
// routed to (transparent), and the pod's nftables elements. Anything built
// is removed again if a later step fails. A host veth left by an earlier
// attempt for the same container interface is replaced.
func (h *Host) Add(ep *Endpoint, r Rules) (err error) {
	ph, closePod, err := podHandle(ep.Netns)
	if err != nil {
		return err
	}
	defer closePod()
	nsFd, err := unix.Open(ep.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ep.Netns, err)
	}
	defer unix.Close(nsFd)

	if old, err := h.Netlink.LinkByName(ep.HostIf); err == nil {
		if err := h.Netlink.LinkDel(old); err != nil {
			return fmt.Errorf("remove stale %s: %w", ep.HostIf, err)
		}
	}
	if _, err := ph.LinkByName(ep.IfName); err == nil {
		return fmt.Errorf("interface %s already exists in netns %s", ep.IfName, ep.Netns)
	}

	var masterIdx int
	if ep.Mode == ModeBridge {
		br, err := h.Netlink.LinkByName(ep.Bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s: %w", ep.Bridge, err)
		}
		masterIdx = br.Attrs().Index
		if ep.MTU == 0 {
			ep.MTU = br.Attrs().MTU
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = ep.HostIf
	la.MTU = ep.MTU
	la.Flags = net.FlagUp
	// Chosen by the caller rather than the kernel so it can be recorded
	// before the veth exists.
	switch {
	case ep.Mode == ModeTransparent:
		la.HardwareAddr = TransparentHostMAC
	case ep.HostMAC == nil:
		la.HardwareAddr = RandomMAC()
	default:
		la.HardwareAddr = ep.HostMAC
	}
	veth := &netlink.Veth{LinkAttrs: la, PeerName: ep.IfName, PeerHardwareAddr: ep.PodMAC, PeerNamespace: netlink.NsFd(nsFd)}
	if err := h.Netlink.LinkAdd(veth); err != nil {
		// The link may exist half-configured (e.g. master not set): drop it.
		if l, lerr := h.Netlink.LinkByName(ep.HostIf); lerr == nil {
			_ = h.Netlink.LinkDel(l)
		}
		return fmt.Errorf("create veth %s/%s: %w", ep.HostIf, ep.IfName, err)
	}
	defer func() {
		if err != nil {
			_ = h.Netlink.LinkDel(veth)
		}
	}()
	// LinkAdd filled in the index; the MAC is the one asked for.
	var host netlink.Link = veth
	ep.HostMAC = la.HardwareAddr
	// The kernel ignores an alias given at creation; set it, and the
	// bridge, in one request.
	if err := setMasterAndAlias(host.Attrs().Index, masterIdx, ep.Attachment.Alias()); err != nil {
		return fmt.Errorf("configure %s: %w", ep.HostIf, err)
	}
	h.mark("veth")

	if err := configurePod(ph, ep); err != nil {
		return err
	}
	h.mark("pod")

	switch ep.Mode {
	case ModeBridge:
		// Hairpin lets a pod reach itself through a service address; the
		// static, sticky FDB entry sends the pod's frames nowhere else even
		// before it has spoken.
		if err := h.Netlink.LinkSetHairpin(host, true); err != nil {
			return fmt.Errorf("set hairpin on %s: %w", ep.HostIf, err)
		}
		fdb := &netlink.Neigh{LinkIndex: host.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
			Flags: netlink.NTF_MASTER | netlink.NTF_STICKY, HardwareAddr: ep.PodMAC}
		if err := h.Netlink.NeighSet(fdb); err != nil {
			return fmt.Errorf("add FDB entry %s on %s: %w", ep.PodMAC, ep.HostIf, err)
		}
	case ModeTransparent:
		if err := h.Sysctl("net/ipv4/conf/"+ep.HostIf+"/proxy_arp", "1"); err != nil {
			return err
		}
		rt := &netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: ep.IP.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := h.Netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("add route %s dev %s: %w", ep.IP.Addr(), ep.HostIf, err)
		}
	}
	h.mark("link")

	pe := PodElem{HostIf: ep.HostIf, MAC: ep.PodMAC, IP: ep.IP.Addr()}
	if err := r.AddPod(h.NFT, pe); err != nil {
		return err
	}
	h.mark("nft")
	return nil
}

// configurePod sets the pod end's address, brings it up and adds its routes.
// Equivalent to: ip addr add; ip link set up; ip route add default via GW.
func configurePod(ph *netlink.Handle, ep *Endpoint) error {
	link, err := ph.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("find %s in pod: %w", ep.IfName, err)
	}
	addr := toAddr(ep.IP)
	if ep.Mode == ModeTransparent {
		// Everything goes through 169.254.1.1; no on-link subnet.
		addr.Flags = unix.IFA_F_NOPREFIXROUTE
	}
	if err := ph.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to %s in pod: %w", ep.IP, ep.IfName, err)
	}
	if err := ph.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s in pod: %w", ep.IfName, err)
	}
	idx := link.Attrs().Index
	if ep.Mode == ModeTransparent {
		gw := &net.IPNet{IP: TransparentGateway.AsSlice(), Mask: net.CIDRMask(32, 32)}
		if err := ph.RouteAdd(&netlink.Route{LinkIndex: idx, Scope: netlink.SCOPE_LINK, Dst: gw}); err != nil {
			return fmt.Errorf("add route %s in pod: %w", TransparentGateway, err)
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: TransparentGateway.AsSlice(), HardwareAddr: TransparentHostMAC}
		if err := ph.NeighSet(n); err != nil {
			return fmt.Errorf("add neighbour %s in pod: %w", TransparentGateway, err)
		}
	}
	def := &netlink.Route{LinkIndex: idx, Gw: ep.Gateway.AsSlice(),
		Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if err := ph.RouteAdd(def); err != nil {
		return fmt.Errorf("add default route via %s in pod: %w", ep.Gateway, err)
	}
	return nil
}

// Del removes what Add built. Everything already gone is fine: the host veth
// (whose removal takes the pod end, its addresses and routes, and the host
// route with it) and the nftables elements are removed by name and address.
func (h *Host) Del(ep *Endpoint, r Rules) error {
	var errs []error
	if ep.IP.IsValid() {
		if err := r.DelPod(h.NFT, PodElem{HostIf: ep.HostIf, MAC: ep.PodMAC, IP: ep.IP.Addr()}); err != nil {
			errs = append(errs, err)
		}
	}
	h.mark("nft")
	if l, err := h.Netlink.LinkByName(ep.HostIf); err == nil {
		if err := h.Netlink.LinkDel(l); err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", ep.HostIf, err))
		}
	} else if !isLinkNotFound(err) {
		errs = append(errs, fmt.Errorf("find %s: %w", ep.HostIf, err))
	}
	h.mark("veth")
	return errors.Join(errs...)
}

// Check compares the kernel with the endpoint: the host veth with its
// alias, the pod interface with its MAC, address and default route, and the
// nftables elements.
func (h *Host) Check(ep *Endpoint, r Rules) error {
	host, err := h.Netlink.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("host interface %s: %w", ep.HostIf, err)
	}
	a, err := ParseAlias(host.Attrs().Alias)
	if err != nil || a.ContainerID != ep.ContainerID || a.IfName != ep.IfName {
		return fmt.Errorf("host interface %s belongs to %q, not %s/%s", ep.HostIf, host.Attrs().Alias, ep.ContainerID, ep.IfName)
	}
	if host.Attrs().OperState == netlink.OperDown || host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host interface %s is down", ep.HostIf)
	}
	if ep.Mode == ModeBridge {
		br, err := h.Netlink.LinkByName(ep.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", ep.Bridge, err)
		}
		if host.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("host interface %s is not attached to bridge %s", ep.HostIf, ep.Bridge)
		}
	}
	ph, closePod, err := podHandle(ep.Netns)
	if err != nil {
		return err
	}
	defer closePod()
	link, err := ph.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", ep.IfName, err)
	}
	if ep.PodMAC != nil && link.Attrs().HardwareAddr.String() != ep.PodMAC.String() {
		return fmt.Errorf("pod interface %s has MAC %s, want %s", ep.IfName, link.Attrs().HardwareAddr, ep.PodMAC)
	}
	addrs, err := ph.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of pod interface %s: %w", ep.IfName, err)
	}
	found := false
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == ep.IP {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("pod interface %s lacks address %s", ep.IfName, ep.IP)
	}
	routes, err := ph.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes of pod interface %s: %w", ep.IfName, err)
	}
	found = false
	for _, rt := range routes {
		if (rt.Dst == nil || rt.Dst.IP.IsUnspecified()) && rt.Gw != nil && rt.Gw.Equal(ep.Gateway.AsSlice()) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("pod has no default route via %s on %s", ep.Gateway, ep.IfName)
	}
	ok, err := r.HasPod(h.NFT, PodElem{HostIf: ep.HostIf, MAC: ep.PodMAC, IP: ep.IP.Addr()})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("nftables table %s lacks pod %s", TableName(r.Network), ep.IP.Addr())
	}
	return nil
}

// Attachments lists the pod interfaces the kernel holds, read back from the
// host veths' aliases.
func (h *Host) Attachments() ([]Attachment, error) {
	links, err := h.Netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Attachment
	for _, l := range links {
		if l.Type() != "veth" || !strings.HasPrefix(l.Attrs().Name, HostIfPrefix) {
			continue
		}
		a, err := ParseAlias(l.Attrs().Alias)
		if err != nil {
			continue
		}
		a.HostIfName = l.Attrs().Name
		out = append(out, a)
	}
	return out, nil
}

// setMasterAndAlias sets a link's master (when not 0) and alias in one
// RTM_SETLINK, in the calling thread's namespace.
// Equivalent to: ip link set IF master BR alias ALIAS.
func setMasterAndAlias(index, master int, alias string) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	if master != 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(master))))
	}
	req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
