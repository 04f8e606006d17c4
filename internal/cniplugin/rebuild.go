package cniplugin

import (
	"errors"
	"fmt"
	"os"

	"github.com/vnetcni/vnetcni/internal/attachment"
	"github.com/vnetcni/vnetcni/internal/store"
)

// rebuild reconstructs the state from the kernel when the state file is
// missing or damaged: every host veth carries its attachment (container,
// interface, network, address, pod MAC) in its alias.
func (n *node) rebuild(cause error) (*store.State, error) {
	atts, err := n.k.Attachments()
	if err != nil {
		return nil, fmt.Errorf("list attachments in the kernel: %w", err)
	}
	st, dropped := attachment.Rebuild(atts, n.p.Now())
	var de *store.DamagedError
	if errors.As(cause, &de) && de.Salvage != nil {
		kept := attachment.Salvage(st, de.Salvage)
		if err := st.Validate(); err != nil {
			st, _ = attachment.Rebuild(atts, n.p.Now()) // the kernel's alone
		} else {
			n.p.Log.Warn("rebuild: kept what the damaged file still says", "ipamAllocations", kept, "networks", len(st.Networks))
		}
	}
	for _, a := range dropped {
		kept := st.Allocations[a.IP.Addr().String()]
		n.p.Log.Warn("rebuild: address claimed twice", "ip", a.IP.Addr(), "kept", kept.ContainerID, "dropped", a.ContainerID)
	}
	if len(st.Endpoints) > 0 || !errors.Is(cause, os.ErrNotExist) {
		n.p.Log.Warn("rebuilt state from the kernel", "cause", cause, "endpoints", len(st.Endpoints))
	}
	return st, nil
}
