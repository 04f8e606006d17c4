package cniplugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

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
	k      kernel
	store  *store.Store
	master netlink.Link
	bridge string
}

func (p *Plugin) openNode(conf *netconf.NetConf) (*node, error) {
	k, err := p.openKernel()
	if err != nil {
		return nil, err
	}
	n := &node{p: p, conf: conf, k: k, store: store.New(p.StateDir)}
	n.store.Rebuild = n.rebuild
	n.store.OnRecover = func(cause error, saved string) {
		p.Log.Warn("state file damaged; rebuilt from the kernel", "cause", cause, "savedAs", saved)
		fmt.Fprintf(p.Stderr, "%s: %v; rebuilt state from the kernel (damaged copy kept as %s)\n", p.Name, cause, saved)
	}
	return n, nil
}

func (n *node) close() { n.k.Close() }

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
	l, err := n.k.Link(name)
	var lnf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &lnf) && n.conf.Master != "":
		return &netconf.FieldError{Field: "master", Value: name, Problem: "no such interface on the node"}
	case err != nil && name != "":
		return fmt.Errorf("find master interface %s: %w", name, err)
	case err != nil:
		return err
	}
	n.master = l
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
	if !n.conf.PodCIDRModel() {
		// Pod addresses are VNet addresses the wireserver answers; a pod
		// CIDR's are not, and reach it as the node.
		nm = append(nm, netip.PrefixFrom(netconf.WireserverIP, 32))
	}
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
		Routed:          n.conf.Mode == netconf.ModeBridge && n.conf.PodCIDRModel(),
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
	var b *datapath.Bridge // bridge mode only
	if n.conf.Mode == netconf.ModeBridge {
		b = &datapath.Bridge{Name: n.bridge, Master: n.master.Attrs().Name}
		if n.conf.PodCIDRModel() {
			// The pods' router: the first address of the node's pod CIDR.
			b.PodGateway = netip.PrefixFrom(pool.Gateway, pool.Subnet.Bits())
		} else if pool.PrimaryIP.IsValid() {
			b.Primary = netip.PrefixFrom(pool.PrimaryIP, pool.Subnet.Bits())
			b.Gateway = pool.Gateway
		}
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
	persist := func(cfg *store.LinkConfig) error {
		return n.store.Update(func(st *store.State) error {
			rec := n.record(st, pool)
			rec.MasterConfig = cfg
			return nil
		})
	}
	// The recorded pods' elements, used if the rules were lost.
	var pods []datapath.PodElem
	if st != nil {
		for _, e := range st.Endpoints {
			if e.Network == n.conf.Name {
				mac, _ := net.ParseMAC(e.PodMAC)
				pods = append(pods, datapath.PodElem{HostIf: e.HostIfName, MAC: mac, IP: e.IP.Addr()})
			}
		}
	}
	if err := n.k.SetUpNetwork(r, b, saved, persist, pods); err != nil {
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
func (n *node) ready(st *store.State, r datapath.Rules, b *datapath.Bridge) bool {
	rec := st.Networks[n.conf.Name]
	if rec == nil || rec.Rules != r.Fingerprint() {
		return false
	}
	return n.k.NetworkReady(r, b)
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
