package cniplugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// networkLock serialises node-level network setup (bridge creation, moving
// the NIC's configuration, programming the static rules). It is only taken
// when the cheap readiness check fails, i.e. once per node.
const networkLock = "network.lock"

// node is the node-side context of one command.
type node struct {
	p      *Plugin
	conf   *netconf.NetConf
	host   *datapath.Host
	store  *store.Store
	master netlink.Link
	bridge string
}

func (p *Plugin) openNode(conf *netconf.NetConf) (*node, error) {
	host, err := datapath.NewHost()
	if err != nil {
		return nil, err
	}
	n := &node{p: p, conf: conf, host: host, store: store.New(p.StateDir)}
	n.store.Rebuild = n.rebuild
	n.store.OnRecover = func(cause error, saved string) {
		p.Log.Warn("state file damaged; rebuilt from the kernel", "cause", cause, "savedAs", saved)
		fmt.Fprintf(p.Stderr, "%s: %v; rebuilt state from the kernel (damaged copy kept as %s)\n", p.Name, cause, saved)
	}
	return n, nil
}

func (n *node) close() { n.host.Close() }

// readState reads the node's state without locking. A damaged file reads as
// an empty state (and damaged true): the next update rebuilds it from the
// kernel, and commands that only read go by the kernel meanwhile.
func (n *node) readState() (st *store.State, damaged bool, err error) {
	st, err = n.store.Read()
	if store.IsDamaged(err) {
		return store.NewState(), true, nil
	}
	return st, false, err
}

// resolveMaster finds the NIC: the configured master, the one recorded for
// the network, or the interface carrying the default route (the bridge's
// port with the same MAC once bridge mode has moved the route).
func (n *node) resolveMaster(st *store.State) error {
	name := n.conf.Master
	if name == "" {
		if rec, ok := st.Networks[n.conf.Name]; ok {
			name = rec.Master
		}
	}
	h := n.host.Netlink
	if name != "" {
		l, err := h.LinkByName(name)
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) && n.conf.Master != "" {
			return &netconf.FieldError{Field: "master", Value: name, Problem: "no such interface on the node"}
		}
		if err != nil {
			return fmt.Errorf("find master interface %s: %w", name, err)
		}
		n.master = l
	} else {
		l, err := defaultRouteLink(h)
		if err != nil {
			return err
		}
		n.master = l
	}
	n.bridge = n.conf.Bridge
	if n.bridge == "" {
		if rec, ok := st.Networks[n.conf.Name]; ok && rec.Bridge != "" {
			n.bridge = rec.Bridge
		} else {
			n.bridge = datapath.BridgeName(n.master)
		}
	}
	return nil
}

func defaultRouteLink(h *netlink.Handle) (netlink.Link, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
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
		return nil, fmt.Errorf("default route goes through bridge %s, which has no port with its MAC; set \"master\"", l.Attrs().Name)
	}
	return nil, fmt.Errorf("no default route to find the master interface by; set \"master\" in the network config")
}

func (n *node) mac() net.HardwareAddr { return n.master.Attrs().HardwareAddr }

func (n *node) manager() *ipam.Manager {
	return &ipam.Manager{
		Store:  n.store,
		Source: ipam.NewSource(&n.conf.IPAM, n.mac()),
		MAC:    n.mac(),
		MaxAge: n.conf.IPAM.Refresh,
		Now:    n.p.Now,
		OnStale: func(p *store.Pool, err error) {
			n.p.Log.Warn("pool source failed; using the cached pool", "readAt", p.ReadAt, "source", p.Source, "err", err)
		},
	}
}

// rules is the network's static rule configuration for a pool.
func (n *node) rules(pool *store.Pool) datapath.Rules {
	nm := append([]netip.Prefix(nil), n.conf.NonMasquerade...)
	nm = append(nm, netip.PrefixFrom(netconf.WireserverIP, 32))
	if pool != nil && pool.Subnet.IsValid() {
		nm = append(nm, pool.Subnet)
	}
	r := datapath.Rules{
		Network:         n.conf.Name,
		Mode:            n.conf.Mode,
		Master:          n.master.Attrs().Name,
		Bridge:          n.bridge,
		NICMAC:          n.mac(),
		SNAT:            n.conf.SNAT(),
		NonMasquerade:   nm,
		AllowWireserver: n.conf.AllowWireserver,
		BlockIMDS:       n.conf.BlockIMDS,
	}
	if pool != nil {
		r.PrimaryIP = pool.PrimaryIP
	}
	if n.conf.Mode != netconf.ModeBridge {
		r.Bridge = ""
	}
	return r
}

// delRules is enough of the rules to remove a pod's elements: which tables.
func delRules(network, mode string) datapath.Rules {
	return datapath.Rules{Network: network, Mode: mode}
}

// ensureNetwork makes the node-level network ready: cheap checks first, and
// only when they fail the network lock and the setup.
func (n *node) ensureNetwork(st *store.State, pool *store.Pool) (datapath.Rules, error) {
	r := n.rules(pool)
	b := datapath.Bridge{Name: n.bridge, Master: n.master.Attrs().Name}
	if pool.PrimaryIP.IsValid() {
		b.Primary = netip.PrefixFrom(pool.PrimaryIP, pool.Subnet.Bits())
		b.Gateway = pool.Gateway
	}
	if n.ready(st, r, b) {
		return r, nil
	}
	unlock, err := n.store.Lock(networkLock)
	if err != nil {
		return r, err
	}
	defer unlock()
	st, err = n.store.Read()
	if err != nil && !store.IsDamaged(err) {
		return r, err
	}
	if err == nil && n.ready(st, r, b) {
		return r, nil
	}
	var saved *store.LinkConfig
	if st != nil {
		if rec := st.Networks[n.conf.Name]; rec != nil {
			saved = rec.MasterConfig
		}
	}
	if n.conf.Mode == netconf.ModeBridge {
		persist := func(cfg *store.LinkConfig) error {
			return n.store.Update(func(st *store.State) error {
				rec := n.record(st, pool)
				rec.MasterConfig = cfg
				return nil
			})
		}
		if err := b.Ensure(n.host.Netlink, saved, persist); err != nil {
			return r, fmt.Errorf("set up bridge %s: %w", n.bridge, err)
		}
		if n.host.Mark != nil {
			n.host.Mark("bridge") // AZURE_VNET_TRACE: the move to the bridge
		}
		// Redirected pod traffic leaves through the interface it came in
		// by: the node must route it without telling the pod to go direct.
		for _, s := range []string{"net/ipv4/conf/all/send_redirects", "net/ipv4/conf/" + n.bridge + "/send_redirects"} {
			if err := n.host.Sysctl(s, "0"); err != nil {
				return r, err
			}
		}
		// Replies of NATed connections (Services, host ports) that reach a
		// pod over the bridge are un-NATed by bridge netfilter, as Azure's
		// bridge mode requires; where it exists, make sure it is on.
		if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
			if err := n.host.Sysctl("net/bridge/bridge-nf-call-iptables", "1"); err != nil {
				return r, err
			}
		}
	}
	if err := n.host.Sysctl(datapath.ForwardingSysctl, "1"); err != nil {
		return r, err
	}
	resync := !r.Present(n.host.NFT)
	var pods []datapath.PodElem
	if resync && st != nil {
		for _, e := range st.Endpoints {
			if e.Network == n.conf.Name {
				mac, _ := net.ParseMAC(e.PodMAC)
				pods = append(pods, datapath.PodElem{HostIf: e.HostIfName, MAC: mac, IP: e.IP.Addr()})
			}
		}
	}
	if err := r.Program(n.host.NFT, resync, pods); err != nil {
		return r, err
	}
	err = n.store.Update(func(st *store.State) error {
		rec := n.record(st, pool)
		rec.Rules = r.Fingerprint()
		return nil
	})
	return r, err
}

// ready is the cheap per-ADD check that the network is set up as configured.
func (n *node) ready(st *store.State, r datapath.Rules, b datapath.Bridge) bool {
	rec := st.Networks[n.conf.Name]
	if rec == nil || rec.Rules != r.Fingerprint() {
		return false
	}
	if n.conf.Mode == netconf.ModeBridge && !b.Ready(n.host.Netlink) {
		return false
	}
	return r.Present(n.host.NFT)
}

func (n *node) record(st *store.State, pool *store.Pool) *store.Network {
	rec := st.Networks[n.conf.Name]
	if rec == nil {
		rec = &store.Network{Name: n.conf.Name}
		st.Networks[n.conf.Name] = rec
	}
	rec.Mode = n.conf.Mode
	rec.Master = n.master.Attrs().Name
	rec.Pool = pool.ID
	if n.conf.Mode == netconf.ModeBridge {
		rec.Bridge = n.bridge
	} else {
		rec.Bridge = ""
	}
	return rec
}
