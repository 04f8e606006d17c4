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
	// A loss also makes the next ADD check its network's static setup
	// again, except a new host veth (down until ADD sets it up), which
	// every ADD makes.
	lost := func() {
		a.setupOK.Invalidate()
		notify()
	}
	a.watchNetlink(ctx, lost, notify)
	a.watchNFT(ctx, lost)

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

// watchNetlink notifies on link, route, address and bridge FDB changes in
// the agent's namespace that may be losses. The creation of pods' links and
// the removal of their host veths (DEL) are the plugins' own work.
//
// podLink is told of a host veth's own changes, which say nothing about the
// network's static setup; notify of everything else.
func (a *Agent) watchNetlink(ctx context.Context, notify, podLink func()) {
	go a.follow(ctx, "link", notify, func(done chan struct{}, onErr func(error)) (<-chan bool, error) {
		ch := make(chan netlink.LinkUpdate, 64)
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			close(ch) // never started: nobody else closes it
			return nil, err
		}
		return losses(ch, func(u netlink.LinkUpdate) bool {
			loss := linkLoss(u.Header.Type, u.Attrs().Name, u.Attrs().RawFlags, u.Attrs().MasterIndex)
			if loss && strings.HasPrefix(u.Attrs().Name, datapath.HostIfPrefix) {
				podLink()
				return false
			}
			return loss
		}), nil
	})
	go a.follow(ctx, "route", notify, func(done chan struct{}, onErr func(error)) (<-chan bool, error) {
		ch := make(chan netlink.RouteUpdate, 64)
		err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			close(ch) // never started: nobody else closes it
			return nil, err
		}
		return losses(ch, func(u netlink.RouteUpdate) bool { return u.Type == unix.RTM_DELROUTE }), nil
	})
	go a.follow(ctx, "address", notify, func(done chan struct{}, onErr func(error)) (<-chan bool, error) {
		ch := make(chan netlink.AddrUpdate, 64)
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			close(ch) // never started: nobody else closes it
			return nil, err
		}
		return losses(ch, func(u netlink.AddrUpdate) bool { return !u.NewAddr }), nil
	})
	go a.follow(ctx, "neighbour", notify, func(done chan struct{}, onErr func(error)) (<-chan bool, error) {
		ch := make(chan netlink.NeighUpdate, 64)
		err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			close(ch) // never started: nobody else closes it
			return nil, err
		}
		return losses(ch, func(u netlink.NeighUpdate) bool { return neighLoss(u.Type, u.Family) }), nil
	})
}

// follow keeps one netlink subscription alive until ctx ends. The kernel
// ends a subscription whose socket overflowed (ENOBUFS, in a burst of
// changes), and vishvananda/netlink then closes its channel: the events in
// between are lost, so follow asks for a pass and subscribes again.
func (a *Agent) follow(ctx context.Context, kind string, notify func(), subscribe func(done chan struct{}, onErr func(error)) (<-chan bool, error)) {
	for {
		done := make(chan struct{})
		onErr := func(err error) {
			if ctx.Err() == nil { // closing the socket at shutdown reports an error too
				a.log.Warn("netlink subscription ended; resubscribing", "kind", kind, "err", err)
			}
		}
		events, err := subscribe(done, onErr)
		if err != nil {
			close(done)
			a.log.Warn("subscribe to netlink changes; relying on the periodic resync until it works", "kind", kind, "err", err)
		} else {
			stop := context.AfterFunc(ctx, func() { close(done) })
			for loss := range events {
				if loss {
					notify()
				}
			}
			if stop() {
				close(done)
			}
		}
		if ctx.Err() != nil {
			return
		}
		notify()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// losses turns a subscription's updates into "may be a loss" flags, and
// closes its channel when the subscription's does.
func losses[T any](in <-chan T, loss func(T) bool) <-chan bool {
	out := make(chan bool, 64)
	go func() {
		defer close(out)
		for u := range in {
			out <- loss(u)
		}
	}()
	return out
}

// linkLoss tells whether a link notification may mean a loss: a link
// deleted, or one going down (eth0 or a bridge leaving its master shows as
// a NEWLINK without IFF_UP and without master). The host veths' deletions
// are DEL's own work, not losses; a host veth going down is one.
func linkLoss(msgType uint16, name string, rawFlags uint32, master int) bool {
	hostVeth := strings.HasPrefix(name, datapath.HostIfPrefix)
	down := rawFlags&unix.IFF_UP == 0
	switch {
	case msgType == unix.RTM_DELLINK:
		return !hostVeth
	case msgType == unix.RTM_NEWLINK && hostVeth:
		return down
	case msgType == unix.RTM_NEWLINK:
		return down && master == 0
	}
	return false
}

// neighLoss tells whether a neighbour notification may mean a loss: a
// bridge FDB entry deleted (ARP and NDP entries come and go by themselves).
func neighLoss(msgType uint16, family int) bool {
	return msgType == unix.RTM_DELNEIGH && family == unix.AF_BRIDGE
}

// nftLoss tells whether an nftables notification may mean a loss:
// deletions of tables, chains, rules, sets or elements, and the monitor's
// out-of-band (overrun) event, after which anything may be missing.
func nftLoss(t nftables.MonitorEventType) bool {
	switch t {
	case nftables.MonitorEventTypeDelTable, nftables.MonitorEventTypeDelChain, nftables.MonitorEventTypeDelRule,
		nftables.MonitorEventTypeDelSet, nftables.MonitorEventTypeDelSetElem, nftables.MonitorEventTypeOOB:
		return true
	}
	return false
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
			if nftLoss(ev.Type) {
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
