package cniplugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// del removes a container interface's attachment. It needs neither the
// network namespace (CNI_NETNS may be empty, as containerd sends on
// removal), nor the pool source, nor any state: the host veth's name derives
// from the container ID, and whatever is recorded is released.
func (p *Plugin) del(args *skel.CmdArgs, tr *tracer) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	tr.mark("config")
	n, err := p.openNode(conf)
	if err != nil {
		return err
	}
	defer n.close()
	n.k.SetMark(tr.mark) // split the kernel phase into the datapath's steps
	// Waits for an ADD of the same container interface still running.
	unlock, err := n.store.LockAttachment(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	err = n.remove(args.ContainerID, args.IfName, tr)
	unlock(err == nil)
	return err
}

// remove tears down one attachment and releases its address; the caller
// holds the attachment's lock.
func (n *node) remove(containerID, ifName string, tr *tracer) error {
	st, _, err := n.readState()
	if err != nil {
		return err
	}
	tr.mark("state")
	if err := n.teardown(st, containerID, ifName); err != nil {
		return err
	}
	tr.mark("kernel")
	if _, err = n.p.release(n, containerID, ifName); err != nil {
		return err
	}
	if rec, ok := st.Endpoints[store.EndpointKey(containerID, ifName)]; ok {
		n.p.releasePolicy(n.conf, rec.PodNamespace, rec.PodName, rec.IP.Addr())
	}
	tr.mark("ipam")
	if !hasEndpoints(st, n.conf.Name, containerID, ifName) {
		return n.dropForward()
	}
	return nil
}

// hasEndpoints reports whether the state records endpoints of the network
// other than containerID/ifName.
func hasEndpoints(st *store.State, network, containerID, ifName string) bool {
	for k, e := range st.Endpoints {
		if e.Network == network && k != store.EndpointKey(containerID, ifName) {
			return true
		}
	}
	return false
}

// teardown removes the kernel side of one attachment, whatever the state
// says about it.
func (n *node) teardown(st *store.State, containerID, ifName string) error {
	ep := &datapath.Endpoint{
		Attachment: datapath.Attachment{ContainerID: containerID, IfName: ifName, Network: n.conf.Name},
		Mode:       n.conf.Mode,
		HostIf:     datapath.HostIfName(containerID, ifName),
	}
	if rec, ok := st.Endpoints[store.EndpointKey(containerID, ifName)]; ok {
		ep.IP = rec.IP
		ep.PodMAC, _ = net.ParseMAC(rec.PodMAC)
		ep.Mode = rec.Mode
		ep.HostIf = rec.HostIfName
	} else if a, ok := st.AllocationFor(containerID, ifName); ok {
		ep.IP = netip.PrefixFrom(a.IP, 32)
	}
	if !ep.IP.IsValid() {
		// Nothing recorded: the kernel may still remember (state rebuilt or
		// written by a crashed ADD before it recorded anything).
		if a, err := datapath.ParseAlias(n.k.Alias(ep.HostIf)); err == nil {
			ep.IP, ep.PodMAC = a.IP, a.PodMAC
		}
	}
	return n.k.Del(ep, delRules(n.conf.Name, ep.Mode))
}

// validAttachments returns GC's cni.dev/valid-attachments. libcni sends the
// key with a null value when the runtime keeps no attachment, and leaves it
// out when called without GC arguments, as cnitool's gc does to collect
// every attachment of the network: both mean an empty list.
func validAttachments(conf *netconf.NetConf) map[types.GCAttachment]bool {
	valid := map[types.GCAttachment]bool{}
	if conf.ValidAttachments != nil {
		for _, a := range *conf.ValidAttachments {
			valid[a] = true
		}
	}
	return valid
}

// release frees the allocation and forgets the endpoint, in one update.
func (p *Plugin) release(n *node, containerID, ifName string) ([]netip.Addr, error) {
	m := &ipam.Manager{Store: n.store, Now: p.Now}
	return m.Release(containerID, ifName, func(st *store.State) error {
		delete(st.Endpoints, store.EndpointKey(containerID, ifName))
		return nil
	})
}

// gc removes every attachment of this network that is not in
// cni.dev/valid-attachments: recorded endpoints, allocations, and host veths
// the kernel still holds.
func (p *Plugin) gc(args *skel.CmdArgs, tr *tracer) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	valid := validAttachments(conf)
	n, err := p.openNode(conf)
	if err != nil {
		return err
	}
	defer n.close()
	st, _, err := n.readState()
	if err != nil {
		return err
	}
	stale := map[types.GCAttachment]bool{}
	for _, e := range st.Endpoints {
		if e.Network == conf.Name {
			stale[types.GCAttachment{ContainerID: e.ContainerID, IfName: e.IfName}] = true
		}
	}
	for _, a := range st.Allocations {
		if a.Network == conf.Name {
			stale[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		}
	}
	atts, err := n.k.Attachments()
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Network == conf.Name {
			stale[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		}
	}
	var errs []error
	for a := range stale {
		if valid[a] {
			continue
		}
		unlock, err := n.store.LockAttachment(a.ContainerID, a.IfName)
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s/%s: %w", a.ContainerID, a.IfName, err))
			continue
		}
		err = n.remove(a.ContainerID, a.IfName, tr)
		unlock(err == nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s/%s: %w", a.ContainerID, a.IfName, err))
			continue
		}
		p.Log.Info("gc removed attachment", "container", a.ContainerID, "ifname", a.IfName)
	}
	return errors.Join(errs...)
}
