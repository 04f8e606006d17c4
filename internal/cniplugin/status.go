package cniplugin

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/netconf"
)

// status reports whether the node can network pods: its NIC is found and
// its pool is known (cached and fresh, or readable from its source). A full
// pool is not an unready network: ADD answers it with "try again later"
// (code 11), and a node reported NotReady would have its pods evicted
// exactly when it is busiest.
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
	return nil
}
