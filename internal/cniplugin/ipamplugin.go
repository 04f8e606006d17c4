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
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// IPAMFuncs returns azure-vnet-ipam's CNI command handlers: address
// management alone, for plugins that delegate IPAM to it. azure-vnet does
// the same work in-process.
func (p *Plugin) IPAMFuncs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.command("ADD", p.ipamAdd),
		Del:    p.command("DEL", p.ipamDel),
		Check:  p.command("CHECK", p.ipamCheck),
		GC:     p.command("GC", p.ipamGC),
		Status: p.command("STATUS", p.status),
	}
}

func (p *Plugin) ipamNode(b []byte) (*node, error) {
	conf, err := netconf.ParseIPAM(b)
	if err != nil {
		return nil, err
	}
	n, err := p.openNode(conf)
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (p *Plugin) ipamAdd(args *skel.CmdArgs, tr *tracer) error {
	n, err := p.ipamNode(args.StdinData)
	if err != nil {
		return err
	}
	defer n.close()
	st, _, err := n.readState()
	if err != nil {
		return err
	}
	if err := n.resolveMaster(st); err != nil {
		return err
	}
	mgr := n.manager()
	owner := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName, Network: n.conf.Name, Plugin: p.Name}
	ip, pool, err := mgr.Allocate(context.Background(), owner, nil)
	if err != nil {
		var ex *ipam.ExhaustedError
		if !errors.As(err, &ex) && !errors.Is(err, store.ErrLockTimeout) {
			err = withKind(errSource, err)
		}
		return err
	}
	gw := pool.Gateway.AsSlice()
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		IPs: []*current.IPConfig{{
			Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(pool.Subnet.Bits(), 32)},
			Gateway: gw,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:    n.conf.DNS,
	}
	if len(res.DNS.Nameservers) == 0 {
		res.DNS.Nameservers = []string{netconf.WireserverIP.String()}
	}
	return p.print(res, n.conf.CNIVersion)
}

func (p *Plugin) ipamDel(args *skel.CmdArgs, tr *tracer) error {
	n, err := p.ipamNode(args.StdinData)
	if err != nil {
		return err
	}
	defer n.close()
	m := &ipam.Manager{Store: n.store, Now: p.Now}
	_, err = m.Release(args.ContainerID, args.IfName, nil)
	return err
}

func (p *Plugin) ipamCheck(args *skel.CmdArgs, tr *tracer) error {
	n, err := p.ipamNode(args.StdinData)
	if err != nil {
		return err
	}
	defer n.close()
	st, err := n.store.Read()
	if err != nil {
		return err
	}
	a, ok := st.AllocationFor(args.ContainerID, args.IfName)
	if !ok {
		return fmt.Errorf("no address allocated to %s/%s", args.ContainerID, args.IfName)
	}
	if n.conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&n.conf.PluginConf); err != nil {
			return &netconf.FieldError{Field: "prevResult", Problem: err.Error()}
		}
		prev, err := current.NewResultFromResult(n.conf.PrevResult)
		if err != nil {
			return &netconf.FieldError{Field: "prevResult", Problem: err.Error()}
		}
		for _, ipc := range prev.IPs {
			if x, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok && x == a.IP {
				return nil
			}
		}
		return fmt.Errorf("prevResult does not list %s, the address allocated to %s/%s", a.IP, args.ContainerID, args.IfName)
	}
	return nil
}

// ipamGC releases this network's allocations made through azure-vnet-ipam
// that are not in cni.dev/valid-attachments.
func (p *Plugin) ipamGC(args *skel.CmdArgs, tr *tracer) error {
	n, err := p.ipamNode(args.StdinData)
	if err != nil {
		return err
	}
	defer n.close()
	valid := validAttachments(n.conf)
	return n.store.Update(func(st *store.State) error {
		for _, a := range st.SortedAllocations() {
			if a.Network != n.conf.Name || a.Owner != p.Name {
				continue
			}
			if !valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
				ipam.Release(st, a.ContainerID, a.IfName, p.Now())
			}
		}
		return nil
	})
}
