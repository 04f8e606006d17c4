package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/attachment"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/incumbent"
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
	host   *datapath.Host // the real kernel's handles; nil on a fake kernel
	store  *store.Store
	master netlink.Link
	bridge string
}

func (p *Plugin) openNode(conf *netconf.NetConf) (*node, error) {
	k, err := p.openKernel()
	if err != nil {
		return nil, err
	}
	n := &node{p: p, conf: conf, k: k, host: k.Host(), store: store.New(p.StateDir)}
	n.store.Rebuild = n.rebuild
	n.store.OnWrite = p.OnStateWrite
	n.store.Committer = p.StateCommitter
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
		r.Subnet = pool.Subnet
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
	if err := n.adopt(pool); err != nil {
		return r, err
	}
	if fresh, err := n.store.Read(); err == nil {
		st = fresh
	}
	// The recorded pods' elements: programmed again if the rules were lost
	// or damaged.
	var pods []datapath.PodElem
	if st != nil {
		for _, e := range st.Endpoints {
			if e.Network == n.conf.Name && e.Mode == n.conf.Mode {
				mac, _ := net.ParseMAC(e.PodMAC)
				pods = append(pods, datapath.PodElem{HostIf: e.HostIfName, MAC: mac, IP: e.IP.Addr()})
			}
		}
	}
	damage, err := n.k.SetUpNetwork(r, b, saved, persist, pods)
	if err != nil {
		return r, err
	}
	if len(damage) > 0 && st != nil && st.Networks[n.conf.Name] != nil {
		n.p.Log.Warn("nftables rules damaged; reprogrammed", "network", n.conf.Name, "damage", damage, "pods", len(pods))
	}
	spec, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	err = n.store.Update(func(st *store.State) error {
		rec := n.record(st, pool)
		rec.Rules = r.Fingerprint()
		rec.RulesSpec = spec
		return nil
	})
	return r, err
}

// adopt takes over the pods Azure's own azure-vnet attached on this node
// before these plugins replaced it, when the network is set up: each pod
// whose host veth still exists (and whose mode is the network's) is
// recorded as an attachment of this network, its veth labelled like ours,
// so it keeps working, DEL removes it and the doctor knows it; every other
// address the incumbent's IPAM hands out is recorded as allocated and never
// given to a pod. A damaged incumbent file is logged, not fatal.
func (n *node) adopt(pool *store.Pool) error {
	if n.p.IncumbentDir == "" || n.host == nil {
		return nil
	}
	inc, err := incumbent.Read(n.p.IncumbentDir)
	if err != nil {
		n.p.Log.Warn("cannot read the incumbent azure-vnet's state; its pods are not adopted", "dir", n.p.IncumbentDir, "err", err)
		return nil
	}
	if inc.Empty() {
		return nil
	}
	h := n.host.Netlink
	var atts []datapath.Attachment
	for _, e := range inc.Endpoints {
		ip := e.IP.Addr()
		if e.ContainerID == "" || e.Mode != n.conf.Mode || !pool.Has(ip) || len(e.MAC) != 6 {
			continue
		}
		l, err := h.LinkByName(e.HostIfName)
		if err != nil {
			continue // gone with its pod
		}
		ifName := e.IfName
		if ifName == "" {
			ifName = "eth0"
		}
		a := datapath.Attachment{Mode: n.conf.Mode, ContainerID: e.ContainerID, IfName: ifName, Network: n.conf.Name,
			IP: netip.PrefixFrom(ip, pool.Subnet.Bits()), PodMAC: e.MAC, HostIfName: e.HostIfName}
		if _, err := datapath.ParseAlias(l.Attrs().Alias); err != nil {
			// Equivalent to: ip link set VETH alias "azure-vnet …".
			if err := h.LinkSetAlias(l, a.Alias()); err != nil {
				return fmt.Errorf("adopt %s of %s: %w", e.HostIfName, e.ContainerID, err)
			}
		}
		atts = append(atts, a)
	}
	now := n.p.Now().UTC()
	adopted, avoided := 0, 0
	err = n.store.Update(func(st *store.State) error {
		for i, a := range atts {
			key := store.EndpointKey(a.ContainerID, a.IfName)
			if cur := st.Allocations[a.IP.Addr().String()]; cur != nil && store.EndpointKey(cur.ContainerID, cur.IfName) != key {
				continue
			}
			if _, ok := st.Endpoints[key]; ok {
				continue
			}
			e, al := attachment.Record(a, now)
			e.PodName, e.PodNamespace = inc.Endpoints[i].PodName, inc.Endpoints[i].PodNamespace
			al.Pool = pool.ID
			st.Endpoints[key], st.Allocations[a.IP.Addr().String()] = e, al
			adopted++
		}
		for ip, id := range inc.InUse {
			if !pool.Has(ip) || st.Allocations[ip.String()] != nil {
				continue
			}
			if id == "" {
				id = "azure-vnet-incumbent-" + ip.String()
			}
			st.Allocations[ip.String()] = &store.Allocation{IP: ip, Pool: pool.ID, ContainerID: id, IfName: "eth0",
				Network: n.conf.Name, Owner: netconf.IPAMType, Time: now}
			avoided++
		}
		return nil
	})
	if err == nil && adopted+avoided > 0 {
		n.p.Log.Info("adopted the incumbent azure-vnet's pods", "pods", adopted, "addressesKept", avoided, "dir", n.p.IncumbentDir)
	}
	return err
}

// nodeAddr is a pool address the node holds on one of its links.
type nodeAddr struct {
	link netlink.Link
	addr netlink.Addr
}

// poolAddrsOnNode finds the pool's addresses the node holds on its links.
// Those on the NIC or its bridge were put there by the image, not for the
// node: Azure's cloud-init datasource (apply_network_config_for_secondary_ips)
// and some DHCP setups put every secondary IP of the NIC on eth0. A pod may
// claim them; the claim takes the address off the link. Addresses on any
// other link are the node's own and never given to a pod.
func (n *node) poolAddrsOnNode(pool *store.Pool) (claimable map[netip.Addr]nodeAddr, own map[netip.Addr]bool, err error) {
	if n.host == nil {
		return nil, nil, nil
	}
	h := n.host.Netlink
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("list the node's addresses: %w", err)
	}
	claimable, own = map[netip.Addr]nodeAddr{}, map[netip.Addr]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || !pool.Has(ip) {
			continue
		}
		l, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return nil, nil, fmt.Errorf("find the link of %s: %w", ip, err)
		}
		if name := l.Attrs().Name; name == n.master.Attrs().Name || (n.conf.Mode == netconf.ModeBridge && name == n.bridge) {
			claimable[ip] = nodeAddr{l, a}
		} else {
			own[ip] = true
		}
	}
	return claimable, own, nil
}

// takeOff removes from the NIC (or its bridge) the pool addresses that pods
// hold: claimed now, or put back by a DHCP client or networkd since.
// Equivalent to: ip addr del IP/BITS dev eth0.
func (n *node) takeOff(claimable map[netip.Addr]nodeAddr, pods func(netip.Addr) bool) error {
	var errs []error
	var taken []netip.Prefix
	for ip, na := range claimable {
		if !pods(ip) {
			continue
		}
		if err := n.host.Netlink.AddrDel(na.link, &na.addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("take pod address %s off %s: %w", ip, na.link.Attrs().Name, err))
			continue
		}
		n.p.Log.Info("took a pod's address off the node's link (the image put the NIC's secondary IPs there)", "address", ip, "link", na.link.Attrs().Name)
		if p, ok := prefixOfIPNet(*na.addr.IPNet); ok {
			taken = append(taken, p)
		}
	}
	if len(taken) > 0 {
		// Remembered so that uninstall gives them back.
		errs = append(errs, n.store.Update(func(st *store.State) error {
			if rec := st.Networks[n.conf.Name]; rec != nil {
				for _, p := range taken {
					if !slices.Contains(rec.TakenOff, p) {
						rec.TakenOff = append(rec.TakenOff, p)
					}
				}
			}
			return nil
		}))
	}
	return errors.Join(errs...)
}

// ensureForward lets the network's pods through another firewall's forward
// chain that drops by policy (Docker's). It runs after the pod is recorded,
// so a DEL of the network's last pod, which removes the accepts under the
// network lock, either sees the pod or is followed by this.
func (n *node) ensureForward(r datapath.Rules) error {
	if n.host == nil {
		return nil
	}
	missing, err := r.ForwardAcceptMissing(n.host.NFT)
	if err != nil || !missing {
		return err
	}
	unlock, err := n.store.Lock(networkLock)
	if err != nil {
		return err
	}
	defer unlock()
	return r.EnsureForwardAccept(n.host.NFT)
}

// dropForward removes the network's accepts from another firewall's forward
// chain once the network has no pod left on the node.
func (n *node) dropForward() error {
	if n.host == nil {
		return nil
	}
	unlock, err := n.store.Lock(networkLock)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := n.store.Read()
	if err != nil {
		return nil // a damaged state: keep the accepts
	}
	for _, e := range st.Endpoints {
		if e.Network == n.conf.Name {
			return nil
		}
	}
	return delRules(n.conf.Name, n.conf.Mode).RemoveForwardAccept(n.host.NFT)
}

// damage is what the kernel lacks of the recorded network's static rules;
// nothing when the network was never set up on this node.
func (n *node) damage(st *store.State) ([]string, error) {
	rec := st.Networks[n.conf.Name]
	if rec == nil {
		return nil, nil
	}
	if n.master == nil {
		if err := n.resolveMaster(st); err != nil {
			return nil, err
		}
	}
	return n.k.Damage(n.rules(st.Pools[rec.Pool]))
}

// damagedError says what of a network's rules is missing and what repairs it.
func damagedError(network string, damage []string) error {
	return fmt.Errorf("nftables rules of network %s damaged (%s): pods cannot leave the node as built; the next ADD or `vnetctl doctor --fix` reprograms them",
		network, strings.Join(damage, "; "))
}

// ready is the cheap per-ADD check that the network is set up as configured.
func (n *node) ready(st *store.State, r datapath.Rules, b *datapath.Bridge) bool {
	rec := st.Networks[n.conf.Name]
	if rec == nil || rec.Rules != r.Fingerprint() {
		return false
	}
	c := n.p.Ready
	if c == nil {
		return n.k.NetworkReady(r, b)
	}
	key := rec.Rules
	if b != nil {
		key += fmt.Sprintf(" %+v", *b)
	}
	fresh, gen := c.fresh(key)
	if fresh {
		return true
	}
	at := c.Now()
	if !n.k.NetworkReady(r, b) {
		return false
	}
	c.verified(key, gen, at)
	return true
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
