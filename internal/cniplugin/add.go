package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

func (p *Plugin) add(args *skel.CmdArgs, tr *tracer) (err error) {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	pa, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	n, err := p.openNode(conf)
	if err != nil {
		return err
	}
	defer n.close()
	if err := n.k.CheckNetNS(args.Netns); err != nil {
		return err
	}
	if err := checkRecordable(conf.Name, args.ContainerID); err != nil {
		return err
	}
	tr.mark("config")
	n.k.SetMark(tr.mark) // split the kernel phase into the datapath's steps
	// A DEL or another ADD of this container interface waits until this
	// ADD has built (or undone) everything; a failed ADD leaves nothing.
	unlock, err := n.store.LockAttachment(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	defer func() { unlock(err != nil) }()
	st, damaged, err := n.readState()
	if err != nil {
		return err
	}
	if rec, ok := st.Endpoints[store.EndpointKey(args.ContainerID, args.IfName)]; ok {
		// ADD again without DEL: an intact attachment is the answer; what
		// an interrupted or superseded one left is removed and rebuilt.
		if ep, err := n.intact(st, rec, args.Netns); err == nil {
			return p.print(result(conf, ep, nil), conf.CNIVersion)
		}
		if err := n.teardown(st, args.ContainerID, args.IfName); err != nil {
			return fmt.Errorf("remove the earlier attachment of %s/%s: %w", args.ContainerID, args.IfName, err)
		}
	}
	if err := n.k.IfNameFree(args.Netns, args.IfName); err != nil {
		return err
	}
	if err := n.resolveMaster(st); err != nil {
		return err
	}
	tr.mark("state")

	mgr := n.manager()
	pool, err := n.pool(mgr, st, damaged)
	if err != nil {
		return err
	}
	tr.mark("pool")

	rules, err := n.ensureNetwork(st, pool)
	if err != nil {
		return err
	}
	tr.mark("network")
	if err := n.avoidHeld(mgr, rules, st, damaged); err != nil {
		return err
	}
	// Never an address the node holds itself; the NIC's secondaries an
	// image put on eth0 are claimed (taken off) instead.
	claimable, own, err := n.poolAddrsOnNode(pool)
	if err != nil {
		return err
	}
	mgr.NodeHeld = own
	ep := n.newEndpoint(args)
	ip, pool, err := n.allocate(mgr, ep, args.Netns, pa)
	if err != nil {
		return err
	}
	tr.mark("ipam")
	defer func() {
		if err == nil {
			return
		}
		// Undo the allocation and the endpoint record; the kernel side was
		// already rolled back by Add.
		if _, rerr := mgr.Release(args.ContainerID, args.IfName, func(st *store.State) error {
			delete(st.Endpoints, store.EndpointKey(args.ContainerID, args.IfName))
			return nil
		}); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release %s after failed ADD: %w", ip, rerr))
		}
	}()

	if len(claimable) > 0 {
		allocated := func(a netip.Addr) bool {
			_, ok := st.Allocations[a.String()]
			return ok || a == ip
		}
		if err := n.takeOff(claimable, allocated); err != nil {
			return err
		}
	}
	// Policy before traffic: the pod's isolation is in the kernel before
	// it has an interface.
	unpolicy, err := p.ensurePolicy(conf, pa, ip)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			unpolicy()
		}
	}()
	tr.mark("policy")
	// The pod is recorded: a DEL of the network's last other pod no longer
	// removes the accepts this adds.
	if err := n.ensureForward(rules); err != nil {
		return err
	}
	if err := n.k.Add(ep, rules); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EBADF) {
			return withKind(errNetNS, err)
		}
		return err
	}
	tr.mark("kernel")

	return p.print(result(conf, ep, pool), conf.CNIVersion)
}

// pool is the network's pool: the state just read usually holds it fresh
// and with free addresses, which spares reading and decoding the file
// again; otherwise the manager refreshes it from its source.
func (n *node) pool(mgr *ipam.Manager, st *store.State, damaged bool) (*store.Pool, error) {
	pool := st.Pools[mgr.PoolID()]
	if damaged || ipam.Stale(pool, mgr.MaxAge, n.p.Now()) || len(ipam.Free(st, pool)) == 0 {
		var err error
		if pool, err = mgr.Pool(context.Background()); err != nil {
			return nil, withKind(errSource, err)
		}
	}
	return pool, nil
}

// avoidHeld keeps the allocator off every address the datapath still gives
// a pod, even if the state (restored from an old copy, say) has it free.
func (n *node) avoidHeld(mgr *ipam.Manager, rules datapath.Rules, st *store.State, damaged bool) error {
	held, err := n.k.HeldPods(rules)
	if err != nil {
		return err
	}
	mgr.Avoid = map[netip.Addr]bool{}
	var unrecorded []string
	for _, e := range held {
		mgr.Avoid[e.IP] = true
		if _, ok := st.Allocations[e.IP.String()]; !ok && !damaged {
			unrecorded = append(unrecorded, e.IP.String())
		}
	}
	if len(unrecorded) > 0 {
		n.p.Log.Warn("pods hold addresses the state does not record; they are not handed out (vnetctl doctor --fix records them)", "addresses", unrecorded)
	}
	return nil
}

// newEndpoint is the attachment about to be built, before its address.
func (n *node) newEndpoint(args *skel.CmdArgs) *datapath.Endpoint {
	conf := n.conf
	return &datapath.Endpoint{
		Attachment: datapath.Attachment{Mode: conf.Mode, ContainerID: args.ContainerID, IfName: args.IfName, Network: conf.Name, PodMAC: datapath.RandomMAC()},
		Mode:       conf.Mode,
		Netns:      args.Netns,
		HostIf:     datapath.HostIfName(args.ContainerID, args.IfName),
		HostMAC:    hostMAC(conf.Mode),
		Bridge:     n.bridge,
		MTU:        n.master.Attrs().MTU,
	}
}

// allocate takes an address for ep and records the endpoint about to be
// built with it, in one atomic update: after a crash, DEL and GC find
// everything to undo.
func (n *node) allocate(mgr *ipam.Manager, ep *datapath.Endpoint, netns string, pa podArgs) (netip.Addr, *store.Pool, error) {
	conf := n.conf
	owner := ipam.Owner{ContainerID: ep.ContainerID, IfName: ep.IfName, Network: conf.Name, Plugin: n.p.Name}
	ip, pool, err := mgr.Allocate(context.Background(), owner, func(st *store.State, pool *store.Pool, ip netip.Addr) error {
		ep.IP = netip.PrefixFrom(ip, pool.Subnet.Bits())
		ep.Gateway = pool.Gateway
		if conf.Mode == netconf.ModeTransparent {
			ep.Gateway = datapath.TransparentGateway
		}
		st.Endpoints[store.EndpointKey(ep.ContainerID, ep.IfName)] = &store.Endpoint{
			ContainerID: ep.ContainerID, IfName: ep.IfName, Network: conf.Name, Mode: conf.Mode,
			Netns: netns, HostIfName: ep.HostIf, HostMAC: ep.HostMAC.String(), PodMAC: ep.PodMAC.String(),
			IP: ep.IP, Gateway: ep.Gateway, PodNamespace: pa.Namespace, PodName: pa.Name,
			Created: n.p.Now().UTC(),
		}
		return nil
	})
	if err != nil {
		var ex *ipam.ExhaustedError
		if !errors.As(err, &ex) && !errors.Is(err, store.ErrLockTimeout) {
			err = withKind(errSource, err)
		}
	}
	return ip, pool, err
}

// intact returns the recorded endpoint if the kernel holds it as built, in
// the namespace netns.
func (n *node) intact(st *store.State, rec *store.Endpoint, netns string) (*datapath.Endpoint, error) {
	if rec.Netns != netns || rec.Mode != n.conf.Mode {
		return nil, fmt.Errorf("endpoint %s was built for netns %s in %s mode", rec.Key(), rec.Netns, rec.Mode)
	}
	ep := endpointOf(st, rec)
	ep.Netns = netns
	ep.HostMAC, _ = net.ParseMAC(rec.HostMAC)
	if err := n.k.Check(ep, delRules(n.conf.Name, rec.Mode)); err != nil {
		return nil, err
	}
	return ep, nil
}

// endpointOf is the datapath endpoint a record describes.
func endpointOf(st *store.State, rec *store.Endpoint) *datapath.Endpoint {
	mac, _ := net.ParseMAC(rec.PodMAC)
	ep := &datapath.Endpoint{
		Attachment: datapath.Attachment{Mode: rec.Mode, ContainerID: rec.ContainerID, IfName: rec.IfName, Network: rec.Network, IP: rec.IP, PodMAC: mac},
		Mode:       rec.Mode,
		Netns:      rec.Netns,
		HostIf:     rec.HostIfName,
		Gateway:    rec.Gateway,
	}
	if rec.Mode == netconf.ModeBridge {
		if nw := st.Networks[rec.Network]; nw != nil {
			ep.Bridge = nw.Bridge
		}
	}
	return ep
}

func result(conf *netconf.NetConf, ep *datapath.Endpoint, pool *store.Pool) *current.Result {
	idx := 1
	gw := ep.Gateway.AsSlice()
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: ep.HostIf, Mac: ep.HostMAC.String()},
			{Name: ep.IfName, Mac: ep.PodMAC.String(), Sandbox: ep.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: &idx,
			Address:   net.IPNet{IP: ep.IP.Addr().AsSlice(), Mask: net.CIDRMask(ep.IP.Bits(), 32)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:    conf.DNS,
	}
}

// Limits that keep an attachment recordable in its host veth's alias,
// which the kernel caps at 255 bytes: "azure-vnet MODE NETWORK CONTAINER
// IFNAME ADDRESS/BITS MAC" (62 bytes with the longest mode, interface
// name, address and MAC).
const (
	maxNetworkName = 48
	maxContainerID = 128
)

// checkRecordable rejects a network name or container ID too long for the
// alias, before anything is set up for them.
func checkRecordable(network, containerID string) error {
	if len(network) > maxNetworkName {
		return &netconf.FieldError{Field: "name", Value: network[:16] + "...", Problem: fmt.Sprintf("longer than %d characters", maxNetworkName)}
	}
	if len(containerID) > maxContainerID {
		return withKind(errArgs, fmt.Errorf("CNI_CONTAINERID is %d characters long, at most %d are supported", len(containerID), maxContainerID))
	}
	return nil
}

// checkIfName verifies CNI_IFNAME is free in the pod.
// hostMAC is the host veth's MAC: fixed in transparent mode, where the pod
// has a static neighbour entry for it; random otherwise.
func hostMAC(mode string) net.HardwareAddr {
	if mode == netconf.ModeTransparent {
		return datapath.TransparentHostMAC
	}
	return datapath.RandomMAC()
}
