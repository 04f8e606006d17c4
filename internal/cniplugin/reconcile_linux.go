package cniplugin

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Repair is one kernel object the reconciler put back.
type Repair struct {
	Kind   string // datapath.Kind*
	Object string // what it was: a table, an interface, a pod address
}

// Reconciler makes the node's kernel match the state for the networks the
// agent has seen ADDs for: the plugins' own setup code (ensureNetwork,
// datapath.Host.Repair) run again, under the same locks, so a reconcile
// and a CNI call never undo each other's work.
type Reconciler struct {
	P *Plugin

	mu    sync.Mutex
	rules map[string]int // network -> rule count right after it was programmed
}

// Reconcile repairs one network, given its configuration (the stdin of an
// ADD). A network no ADD has set up yet has nothing to repair.
func (rc *Reconciler) Reconcile(stdin []byte) ([]Repair, error) {
	conf, err := netconf.Parse(stdin)
	if err != nil {
		return nil, err
	}
	p := rc.P
	n, err := p.openNode(conf)
	if err != nil {
		return nil, err
	}
	defer n.close()
	host := n.host
	if host == nil {
		return nil, fmt.Errorf("reconcile needs the node's kernel")
	}
	st, _, err := n.readState()
	if err != nil {
		return nil, err
	}
	if _, ok := st.Networks[conf.Name]; !ok {
		return nil, nil
	}
	if err := n.resolveMaster(st); err != nil {
		return nil, err
	}
	pool := st.Pools[n.manager().PoolID()]
	if pool == nil {
		return nil, nil
	}
	var repairs []Repair
	r := n.rules(pool)
	name := datapath.TableName(conf.Name)
	if !r.Present(host.NFT) {
		repairs = append(repairs, Repair{datapath.KindTables, name})
	} else if want, ok := rc.ruleCount(conf.Name); ok {
		if got, err := r.RuleCount(host.NFT); err == nil && got != want {
			// Program again, keeping the pods' elements.
			repairs = append(repairs, Repair{datapath.KindRules, fmt.Sprintf("%s (%d rules, want %d)", name, got, want)})
			if err := rc.program(n, host, r); err != nil {
				return repairs, err
			}
		}
	}
	b := datapath.Bridge{Name: n.bridge, Master: n.master.Attrs().Name}
	if pool.PrimaryIP.IsValid() {
		b.Primary = netip.PrefixFrom(pool.PrimaryIP, pool.Subnet.Bits())
	}
	if conf.Mode == netconf.ModeBridge && !b.Ready(host.Netlink) {
		repairs = append(repairs, Repair{datapath.KindBridge, n.bridge})
	}
	for _, s := range nodeSysctls(conf.Mode, n.bridge) {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(b)) != sysctlWant(s) {
			repairs = append(repairs, Repair{datapath.KindSysctl, s})
			if err := host.Sysctl(s, sysctlWant(s)); err != nil {
				return repairs, err
			}
		}
	}
	rules, err := n.ensureNetwork(st, pool)
	if err != nil {
		return repairs, err
	}
	if c, err := rules.RuleCount(host.NFT); err == nil {
		rc.mu.Lock()
		if rc.rules == nil {
			rc.rules = map[string]int{}
		}
		rc.rules[conf.Name] = c
		rc.mu.Unlock()
	}
	var errs []error
	for key, rec := range st.Endpoints {
		if rec.Network != conf.Name {
			continue
		}
		fixed, err := rc.repairEndpoint(n, host, rules, key, rec.ContainerID, rec.IfName)
		for _, k := range fixed {
			repairs = append(repairs, Repair{k, fmt.Sprintf("%s %s", rec.HostIfName, rec.IP.Addr())})
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return repairs, fmt.Errorf("repair endpoints: %w", errs[0])
	}
	return repairs, nil
}

// repairEndpoint repairs one attachment under its lock, as recorded now: a
// DEL that ran meanwhile removed the record, and its kernel objects stay
// removed.
func (rc *Reconciler) repairEndpoint(n *node, host *datapath.Host, rules datapath.Rules, key, containerID, ifName string) ([]string, error) {
	unlock, err := n.store.LockAttachment(containerID, ifName)
	if err != nil {
		return nil, err
	}
	st, _, err := n.readState()
	if err != nil {
		unlock(false)
		return nil, err
	}
	rec, ok := st.Endpoints[key]
	if !ok {
		unlock(true)
		return nil, nil
	}
	defer unlock(false)
	ep := endpointOf(st, rec)
	ep.Mode = rec.Mode
	return host.Repair(ep, rules)
}

// program installs the network's static rules again under the network
// lock, keeping the pods' elements.
func (rc *Reconciler) program(n *node, host *datapath.Host, r datapath.Rules) error {
	unlock, err := n.store.Lock(networkLock)
	if err != nil {
		return err
	}
	defer unlock()
	return r.Program(host.NFT, false, nil)
}

func (rc *Reconciler) ruleCount(network string) (int, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	c, ok := rc.rules[network]
	return c, ok
}

// nodeSysctls are the node-level settings ensureNetwork writes, relative
// to /proc/sys.
func nodeSysctls(mode, bridge string) []string {
	s := []string{datapath.ForwardingSysctl}
	if mode == netconf.ModeBridge {
		s = append(s, "net/ipv4/conf/all/send_redirects", "net/ipv4/conf/"+bridge+"/send_redirects")
	}
	return s
}

func sysctlWant(s string) string {
	if strings.HasSuffix(s, "send_redirects") {
		return "0"
	}
	return "1"
}

// RefreshPool reads the network's pool from its source when the cached one
// is older than half its refresh interval, so that no ADD waits for the
// wireserver. The configuration is an ADD's stdin.
func (p *Plugin) RefreshPool(ctx context.Context, stdin []byte, ipamOnly bool) (*store.Pool, bool, error) {
	var conf *netconf.NetConf
	var err error
	if ipamOnly {
		conf, err = netconf.ParseIPAM(stdin)
	} else {
		conf, err = netconf.Parse(stdin)
	}
	if err != nil {
		return nil, false, err
	}
	n, err := p.openNode(conf)
	if err != nil {
		return nil, false, err
	}
	defer n.close()
	st, _, err := n.readState()
	if err != nil {
		return nil, false, err
	}
	if err := n.resolveMaster(st); err != nil {
		return nil, false, err
	}
	mgr := n.manager()
	cached := st.Pools[mgr.PoolID()]
	if cached != nil && p.Now().Sub(cached.ReadAt) < mgr.MaxAge/2 {
		return cached, false, nil
	}
	pool, err := mgr.Refresh(ctx)
	if err != nil {
		return cached, true, withKind(errSource, err)
	}
	return pool, true, nil
}
