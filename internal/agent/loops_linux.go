package agent

import (
	"context"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// minGap is the least time between two event-driven reconcile passes: a
// burst of pod changes makes one pass per gap, not one per event, and a
// loss is repaired within minGap plus one pass.
const minGap = 300 * time.Millisecond

// reconcileLoop runs a pass at start, on kernel change notifications that
// may mean a loss (deleted links, routes, addresses, nftables objects; a
// link going down) and every Resync.
func (a *Agent) reconcileLoop(ctx context.Context) {
	events := make(chan struct{}, 1)
	notify := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	a.watchNetlink(ctx, notify)
	a.watchNFT(ctx, notify)

	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	a.pass("start")
	last := time.Now()
	for {
		trigger := ""
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			trigger = "periodic"
		case <-a.kick:
			trigger = "learn"
		case <-events:
			trigger = "event"
			if wait := minGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		a.pass(trigger)
		last = time.Now()
	}
}

// pass reconciles every network the agent knows.
func (a *Agent) pass(trigger string) {
	a.mu.Lock()
	confs := make(map[string][]byte, len(a.networks))
	for k, v := range a.networks {
		confs[k] = v
	}
	a.mu.Unlock()
	a.metrics.passes.WithLabelValues(trigger).Inc()
	for name, conf := range confs {
		repairs, err := a.rec.Reconcile(conf)
		for _, r := range repairs {
			a.log.Warn("repaired", "network", name, "kind", r.Kind, "object", r.Object, "trigger", trigger)
			a.metrics.repairs.WithLabelValues(r.Kind).Inc()
		}
		a.mu.Lock()
		for _, r := range repairs {
			a.repairs[r.Kind]++
		}
		a.mu.Unlock()
		if err != nil {
			a.metrics.passErrors.Inc()
			a.log.Error("reconcile", "network", name, "trigger", trigger, "err", err)
		}
	}
	a.mu.Lock()
	a.lastPass = time.Now()
	a.mu.Unlock()
}

// watchNetlink notifies on link, route and address changes in the agent's
// namespace that may be losses. The creation of pods' links and the
// removal of their host veths (DEL) are the plugins' own work.
func (a *Agent) watchNetlink(ctx context.Context, notify func()) {
	done := ctx.Done()
	onErr := func(err error) { a.log.Warn("netlink subscription", "err", err) }
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to neighbour changes; relying on the periodic resync", "err", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to link changes; relying on the periodic resync", "err", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to route changes; relying on the periodic resync", "err", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to address changes; relying on the periodic resync", "err", err)
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				hostVeth := strings.HasPrefix(u.Attrs().Name, datapath.HostIfPrefix)
				switch {
				case u.Header.Type == unix.RTM_DELLINK && !hostVeth:
					notify()
				case u.Header.Type == unix.RTM_NEWLINK && u.Attrs().Flags&unix.IFF_UP == 0 && u.Attrs().MasterIndex == 0 && !hostVeth:
					notify()
				case u.Header.Type == unix.RTM_NEWLINK && hostVeth && u.Attrs().Flags&unix.IFF_UP == 0:
					notify()
				}
			case u, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				if u.Type == unix.RTM_DELROUTE {
					notify()
				}
			case u, ok := <-neighs:
				if !ok {
					neighs = nil
					continue
				}
				if u.Type == unix.RTM_DELNEIGH && u.Family == unix.AF_BRIDGE {
					notify()
				}
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				if !u.NewAddr {
					notify()
				}
			}
		}
	}()
}

// watchNFT notifies on deletions of nftables tables, chains, rules and
// set elements.
func (a *Agent) watchNFT(ctx context.Context, notify func()) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		a.log.Warn("nftables monitor; relying on the periodic resync", "err", err)
		return
	}
	// All events, filtered here: google/nftables v0.3.0 tests its filter
	// as (flags&1)<<type, which passes nothing but NEWTABLE-carrying masks.
	m := nftables.NewMonitor()
	events, err := c.AddMonitor(m)
	if err != nil {
		a.log.Warn("nftables monitor; relying on the periodic resync", "err", err)
		_ = c.CloseLasting()
		return
	}
	go func() {
		<-ctx.Done()
		_ = m.Close()
		_ = c.CloseLasting()
	}()
	go func() {
		for ev := range events {
			switch ev.Type {
			case nftables.MonitorEventTypeDelTable, nftables.MonitorEventTypeDelChain, nftables.MonitorEventTypeDelRule,
				nftables.MonitorEventTypeDelSet, nftables.MonitorEventTypeDelSetElem, nftables.MonitorEventTypeOOB:
				notify()
			}
		}
	}()
}

// refreshLoop keeps every known network's pool fresh, so no ADD waits for
// the pool source.
func (a *Agent) refreshLoop(ctx context.Context) {
	tick := time.NewTicker(a.cfg.PoolRefresh)
	defer tick.Stop()
	for {
		a.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) refresh(ctx context.Context) {
	type job struct {
		name, plugin string
		conf         []byte
	}
	var jobs []job
	a.mu.Lock()
	for k, v := range a.networks {
		jobs = append(jobs, job{k, netconf.PluginType, v})
	}
	for k, v := range a.ipamNets {
		jobs = append(jobs, job{k, netconf.IPAMType, v})
	}
	a.mu.Unlock()
	for _, j := range jobs {
		p := a.plugins[j.plugin]
		_, read, err := p.RefreshPool(ctx, j.conf, j.plugin == netconf.IPAMType)
		if read {
			a.metrics.refreshes.WithLabelValues(j.name).Inc()
		}
		if err != nil {
			a.metrics.refreshErrs.WithLabelValues(j.name).Inc()
			a.log.Warn("refresh pool", "network", j.name, "err", err)
		}
	}
}
