package cniplugin

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// check compares the kernel with prevResult: the recorded endpoint must
// exist with prevResult's address and gateway, still be allocated to the
// container, and be present in the kernel as built, the network's static
// rules included. It reports; ADD and `vnetctl doctor --fix` repair.
func (p *Plugin) check(args *skel.CmdArgs, tr *tracer) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return &netconf.FieldError{Field: "prevResult", Problem: "required for CHECK"}
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return &netconf.FieldError{Field: "prevResult", Problem: err.Error()}
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return &netconf.FieldError{Field: "prevResult", Problem: err.Error()}
	}
	n, err := p.openNode(conf)
	if err != nil {
		return err
	}
	defer n.close()
	if err := n.k.CheckNetNS(args.Netns); err != nil {
		return err
	}
	st, err := n.store.Read()
	if err != nil {
		return err
	}
	rec, ok := st.Endpoints[store.EndpointKey(args.ContainerID, args.IfName)]
	if !ok {
		return fmt.Errorf("no endpoint recorded for %s/%s", args.ContainerID, args.IfName)
	}
	a, ok := st.AllocationFor(args.ContainerID, args.IfName)
	if !ok || a.IP != rec.IP.Addr() {
		return fmt.Errorf("address %s is no longer allocated to %s/%s", rec.IP.Addr(), args.ContainerID, args.IfName)
	}
	var found bool
	for _, ipc := range prev.IPs {
		pfx, ok := prefixOfIPNet(ipc.Address)
		if ok && pfx == rec.IP {
			found = true
			if gw, ok := netip.AddrFromSlice(ipc.Gateway.To4()); ok && gw != rec.Gateway {
				return fmt.Errorf("prevResult gateway %s differs from the endpoint's %s", gw, rec.Gateway)
			}
		}
	}
	if !found {
		return fmt.Errorf("prevResult does not list the endpoint's address %s", rec.IP)
	}
	for _, i := range prev.Interfaces {
		if i.Sandbox != "" && i.Name == args.IfName && i.Mac != "" && i.Mac != rec.PodMAC {
			return fmt.Errorf("prevResult MAC %s of %s differs from the endpoint's %s", i.Mac, args.IfName, rec.PodMAC)
		}
	}
	ep := endpointOf(st, rec)
	ep.Netns = args.Netns
	// The pod's own elements are not enough: without the static rules its
	// traffic leaves the node unrewritten and unmasqueraded.
	damage, err := n.damage(st)
	if err != nil {
		return err
	}
	if len(damage) > 0 {
		return damagedError(conf.Name, damage)
	}
	return n.k.Check(ep, delRules(conf.Name, rec.Mode))
}

func prefixOfIPNet(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}
