package cniplugin

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// status reports whether an ADD could be served now: the pool is known
// (cached and fresh, or readable from its source) and has a free address.
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
	mgr := n.manager()
	pool, err := mgr.Pool(context.Background())
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("address pool unknown: %v", err), "")
	}
	if st, err = n.store.Read(); err != nil {
		return err
	}
	if free := ipam.Free(st, pool); len(free) == 0 {
		return types.NewError(types.ErrPluginNotAvailable, (&ipam.ExhaustedError{Pool: pool.ID, Subnet: pool.Subnet, Total: len(pool.Addresses), InUse: ipam.InUse(st, pool)}).Error(), "")
	}
	return nil
}
