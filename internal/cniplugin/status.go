package cniplugin

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/netconf"
)

// status reports whether the node can network pods: the NIC is there, the
// pool is known (cached and fresh, or readable from its source) and the
// network's rules, once set up, are intact. A full
// pool is not an unready network: ADD answers "try again later" (code 11)
// until a pod is deleted, and the pods already running are unaffected, so
// the node stays ready when it is busiest.
func (p *Plugin) status(args *skel.CmdArgs, tr *tracer) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	n, err := p.openNode(conf)
	if err != nil {
		return err
	}
	defer n.close()
	st, _, err := n.readState()
	if err != nil {
		return err
	}
	if err := n.resolveMaster(st); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	if _, err := n.manager().Pool(context.Background()); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("address pool unknown: %v", err), "")
	}
	// Rules a firewall manager flushed break every pod's off-node traffic.
	damage, err := n.damage(st)
	if err != nil {
		return err
	}
	if len(damage) > 0 {
		return types.NewError(types.ErrPluginNotAvailable, damagedError(conf.Name, damage).Error(), "")
	}
	return nil
}
