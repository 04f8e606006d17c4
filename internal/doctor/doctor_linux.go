package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/attachment"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/incumbent"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Doctor examines and repairs one node: its state directory and the
// network namespace its plugins run in.
type Doctor struct {
	Store *store.Store
	Host  *datapath.Host // netlink and nftables of the node's namespace
	Now   func() time.Time
	// IncumbentDir holds the state files of Azure's own azure-vnet: the
	// host veths they name are its pods' (until ADD adopts them), never
	// garbage.
	IncumbentDir string
	close        func()
	// netnsPath is the node's namespace ("" for the caller's own), where
	// its sysctls are read and written.
	netnsPath string
}

// inNode runs fn in the node's namespace.
func (d *Doctor) inNode(fn func() error) error {
	if d.netnsPath == "" {
		return fn()
	}
	return netns.DoPath(d.netnsPath, fn)
}

// Open returns a doctor for the node whose state is in stateDir and whose
// network namespace is at netnsPath ("" for the caller's own).
func Open(stateDir, netnsPath string) (*Doctor, error) {
	d := &Doctor{Store: store.New(stateDir), Now: time.Now, IncumbentDir: incumbent.DirFromEnv()}
	if netnsPath == "" {
		h, err := datapath.NewHost()
		if err != nil {
			return nil, err
		}
		d.Host, d.close = h, h.Close
		return d, nil
	}
	h, err := datapath.NewHostAt(netnsPath)
	if err != nil {
		return nil, err
	}
	d.Host, d.close = h, h.Close
	d.netnsPath = netnsPath
	return d, nil
}

// Close releases the doctor's handles.
func (d *Doctor) Close() {
	if d.close != nil {
		d.close()
	}
}

// Snapshot reads the state, the state directory and the kernel.
func (d *Doctor) Snapshot() (*Snapshot, error) {
	s := &Snapshot{}
	st, err := d.Store.Read()
	switch {
	case store.IsDamaged(err):
		s.StateErr = err
	case err != nil:
		return nil, fmt.Errorf("read state: %w", err)
	default:
		s.State = st
	}
	ents, err := os.ReadDir(d.Store.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list state directory: %w", err)
	}
	for _, e := range ents {
		// A held attachment lock belongs to a command running now.
		if strings.HasPrefix(e.Name(), store.AttachmentLockPrefix) && held(filepath.Join(d.Store.Dir, e.Name())) {
			continue
		}
		s.Files = append(s.Files, e.Name())
	}
	if s.Kernel, err = d.kernel(st); err != nil {
		return nil, err
	}
	return s, nil
}

// held reports whether someone holds a lock file.
func held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// kernel reads the host veths, the networks' pod elements and the routes
// through host veths.
func (d *Doctor) kernel(st *store.State) (*Kernel, error) {
	k := &Kernel{Veths: map[string]*Veth{}, Tables: map[string]*Tables{}, Modes: map[string]string{}}
	var fwd string
	if err := d.inNode(func() (err error) { fwd, err = datapath.ReadSysctl(datapath.ForwardingSysctl); return err }); err != nil {
		return nil, err
	}
	k.ForwardingOff = fwd == "0"
	links, err := d.Host.Netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	theirs := map[string]bool{}
	if d.IncumbentDir != "" {
		if inc, err := incumbent.Read(d.IncumbentDir); err == nil {
			for _, e := range inc.Endpoints {
				theirs[e.HostIfName] = true
			}
		}
	}
	index := map[int]string{}
	for _, l := range links {
		if l.Type() != "veth" || !strings.HasPrefix(l.Attrs().Name, datapath.HostIfPrefix) {
			continue
		}
		if _, err := datapath.ParseAlias(l.Attrs().Alias); err != nil && theirs[l.Attrs().Name] {
			continue // the incumbent azure-vnet's pod, not yet adopted
		}
		v := &Veth{Name: l.Attrs().Name, Index: l.Attrs().Index}
		if a, err := datapath.ParseAlias(l.Attrs().Alias); err == nil {
			v.Labeled, v.Att = true, a
			v.Att.HostIfName = v.Name
			k.Modes[a.Network] = a.Mode
		}
		k.Veths[v.Name] = v
		index[v.Index] = v.Name
	}
	networks := map[string]string{}
	for n, m := range k.Modes {
		networks[n] = m
	}
	if st != nil {
		for n, rec := range st.Networks {
			networks[n] = rec.Mode
		}
		for _, e := range st.Endpoints {
			if _, ok := networks[e.Network]; !ok {
				networks[e.Network] = e.Mode
			}
		}
	}
	for n, mode := range networks {
		t, err := d.tables(n, mode)
		if err != nil {
			return nil, err
		}
		if rec := recorded(st, n); rec != nil && len(rec.RulesSpec) > 0 {
			// The rules the plugin programmed, as it recorded them.
			var r datapath.Rules
			if err := json.Unmarshal(rec.RulesSpec, &r); err != nil {
				return nil, fmt.Errorf("network %s: recorded rules: %w", n, err)
			}
			if t.Damage, err = r.Damage(d.Host.NFT); err != nil {
				return nil, err
			}
			t.Rules = &r
		}
		k.Tables[n] = t
	}
	addrs, err := d.Host.Netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	k.NodeAddrs = map[netip.Addr]NodeAddr{}
	for _, a := range addrs {
		l, err := d.Host.Netlink.LinkByIndex(a.LinkIndex)
		if err != nil || strings.HasPrefix(l.Attrs().Name, datapath.HostIfPrefix) {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		k.NodeAddrs[ip] = NodeAddr{Link: l.Attrs().Name, Prefix: netip.PrefixFrom(ip, ones)}
	}
	if err := d.inNode(func() (err error) {
		k.BridgeNetfilter.Loaded, k.BridgeNetfilter.On, err = datapath.BridgeNetfilter()
		return err
	}); err != nil {
		return nil, err
	}
	routes, err := d.Host.Netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		dev, ok := index[r.LinkIndex]
		if !ok {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Dst != nil {
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(a, ones)
		}
		k.Routes = append(k.Routes, Route{Dst: dst, Dev: dev})
	}
	return k, nil
}

func recorded(st *store.State, network string) *store.Network {
	if st == nil {
		return nil
	}
	return st.Networks[network]
}

// tables reads a network's pod elements.
func (d *Doctor) tables(network, mode string) (*Tables, error) {
	elems, present, err := datapath.Rules{Network: network, Mode: mode}.Elements(d.Host.NFT)
	if err != nil {
		return nil, err
	}
	return &Tables{Mode: mode, Present: present, Elems: elems}, nil
}

// Report is what a run found and what is still wrong after it.
type Report struct {
	Found     []*Finding `json:"found"`
	Remaining []*Finding `json:"remaining"`
}

// Run diagnoses the node and, with fix, repairs the findings which selects
// (all when nil); then it diagnoses again. Repairs of an attachment are
// made holding its lock and after diagnosing again, so a command running
// meanwhile is never undone.
func (d *Doctor) Run(fix bool, which func(Kind) bool) (*Report, error) {
	if which == nil {
		which = func(Kind) bool { return true }
	}
	diagnose := func() ([]*Finding, error) {
		s, err := d.Snapshot()
		if err != nil {
			return nil, err
		}
		var out []*Finding
		for _, f := range Diagnose(s) {
			if which(f.Kind) {
				out = append(out, f)
			}
		}
		return out, nil
	}
	found, err := diagnose()
	if err != nil {
		return nil, err
	}
	if found == nil {
		found = []*Finding{}
	}
	r := &Report{Found: found, Remaining: found}
	if !fix || len(found) == 0 {
		return r, nil
	}
	results := map[string]error{} // by identity
	fresh := found
	for _, f := range found {
		if f.Kind == StateDamaged {
			results[identity(f)] = d.rebuildState()
			if fresh, err = diagnose(); err != nil {
				return nil, err
			}
		}
	}
	// Lock every attachment concerned, then look again.
	var keys []string
	seen := map[string]bool{}
	for _, f := range fresh {
		if f.key != "" && f.Kind.Fixable() && !seen[f.key] {
			seen[f.key] = true
			keys = append(keys, f.key)
		}
	}
	sort.Strings(keys)
	unlocks := map[string]func(bool){}
	for _, key := range keys {
		c, i, _ := strings.Cut(key, "/")
		u, err := d.Store.LockAttachment(c, i)
		if err != nil {
			for _, u := range unlocks {
				u(false)
			}
			return nil, err
		}
		unlocks[key] = u
	}
	if len(keys) > 0 {
		if fresh, err = diagnose(); err != nil {
			for _, u := range unlocks {
				u(false)
			}
			return nil, err
		}
	}
	// The rules first: a pod's elements need their tables.
	sort.SliceStable(fresh, func(i, j int) bool { return fresh[i].Kind == MissingRules && fresh[j].Kind != MissingRules })
	for _, f := range fresh {
		if !f.Kind.Fixable() || f.Kind == StateDamaged {
			continue
		}
		if f.key != "" && unlocks[f.key] == nil {
			continue // appeared meanwhile: the next run sees it
		}
		results[identity(f)] = d.repair(f)
	}
	for key, u := range unlocks {
		u(!d.exists(key))
	}
	remaining, err := diagnose()
	if err != nil {
		return nil, err
	}
	if remaining == nil {
		remaining = []*Finding{}
	}
	left := map[string]bool{}
	for _, f := range remaining {
		left[identity(f)] = true
	}
	for _, f := range found {
		err, tried := results[identity(f)]
		switch {
		case !left[identity(f)]:
			f.Fixed = true
		case !f.Kind.Fixable():
			f.FixError = "not repairable by the doctor"
		case err != nil:
			f.FixError = err.Error()
		case !tried:
			f.FixError = "changed while being repaired; run again"
		default:
			f.FixError = "still present after the repair"
		}
	}
	r.Remaining = remaining
	return r, nil
}

func identity(f *Finding) string { return string(f.Kind) + " " + f.Network + " " + f.Subject }

// exists reports whether a container interface still has a record or a veth.
func (d *Doctor) exists(key string) bool {
	if st, err := d.Store.Read(); err == nil {
		if _, ok := st.Endpoints[key]; ok {
			return true
		}
		c, i, _ := strings.Cut(key, "/")
		if _, ok := st.AllocationFor(c, i); ok {
			return true
		}
	}
	c, i, _ := strings.Cut(key, "/")
	_, err := d.Host.Netlink.LinkByName(datapath.HostIfName(c, i))
	return err == nil
}

// repair fixes one finding.
func (d *Doctor) repair(f *Finding) error {
	switch f.Kind {
	case TempFile, StaleLockFile:
		return d.removeFile(f)
	case UnrecordedAttachment:
		return d.record(f.att, nil)
	case Mismatch:
		return d.record(f.att, f.endpoint)
	case DuplicateAddress:
		return d.removeAttachment(f.att.HostIfName, f.att.Mode, f.att.Network, f.att.IP.Addr(), f.att.PodMAC, "")
	case UnlabeledVeth:
		if f.endpoint != nil {
			mac, _ := net.ParseMAC(f.endpoint.PodMAC)
			return d.removeAttachment(f.endpoint.HostIfName, f.endpoint.Mode, f.endpoint.Network, f.endpoint.IP.Addr(), mac, f.key)
		}
		return d.removeAttachment(f.Subject, "", "", netip.Addr{}, nil, "")
	case MissingVeth:
		mac, _ := net.ParseMAC(f.endpoint.PodMAC)
		return d.removeAttachment(f.endpoint.HostIfName, f.endpoint.Mode, f.endpoint.Network, f.endpoint.IP.Addr(), mac, f.key)
	case LeakedAllocation:
		return d.release(f.key)
	case MissingRules:
		if f.rules == nil {
			return errors.New("the state records no rules configuration for it (set up by an older version); the next ADD programs them")
		}
		// Equivalent to what ADD does on a damaged node: the static rules
		// again, pod elements kept (or, with the tables gone, from the
		// live pods), then every live pod's elements.
		resync := !f.rules.Present(d.Host.NFT)
		if err := f.rules.Program(d.Host.NFT, resync, f.pods); err != nil {
			return err
		}
		var errs []error
		for _, p := range f.pods {
			errs = append(errs, f.rules.AddPod(d.Host.NFT, p))
		}
		return errors.Join(errs...)
	case NodeHoldsPodAddress:
		l, err := d.Host.Netlink.LinkByName(f.nodeAddr.Link)
		if err != nil {
			return err
		}
		// Equivalent to: ip addr del IP/BITS dev LINK.
		return d.Host.Netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(f.nodeAddr.Prefix)})
	case BridgeNetfilterOff:
		return d.inNode(d.Host.EnsureBridgeNetfilter)
	case MissingElement:
		if f.att == nil {
			return errors.New("no live attachment to take the elements from")
		}
		r := datapath.Rules{Network: f.att.Network, Mode: f.att.Mode}
		return r.AddPod(d.Host.NFT, datapath.PodElem{HostIf: f.att.HostIfName, MAC: f.att.PodMAC, IP: f.att.IP.Addr()})
	case StaleElement:
		return d.deleteElems(f.Network, *f.elem)
	case ForwardingOff:
		return d.inNode(func() error { return datapath.WriteSysctl(datapath.ForwardingSysctl, "1") })
	case MissingRoute:
		l, err := d.Host.Netlink.LinkByName(f.route.Dev)
		if err != nil {
			return err
		}
		// Equivalent to: ip route replace IP/32 dev VETH scope link.
		return d.Host.Netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(f.route.Dst)})
	case StaleRoute:
		l, err := d.Host.Netlink.LinkByName(f.route.Dev)
		if err != nil {
			return err
		}
		routes, err := d.Host.Netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == ipNet(f.route.Dst).String() {
				return d.Host.Netlink.RouteDel(&r)
			}
		}
		return nil
	}
	return fmt.Errorf("no repair for %s", f.Kind)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// removeFile removes a temporary file (under the state lock, where no
// writer exists) or a lock file nobody holds.
func (d *Doctor) removeFile(f *Finding) error {
	path := filepath.Join(d.Store.Dir, f.file)
	if f.Kind == TempFile {
		unlock, err := d.Store.Lock(store.LockName)
		if err != nil {
			return err
		}
		defer unlock()
		return os.Remove(path)
	}
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // taken meanwhile: in use again
	}
	// Waiters check the file is still the one they locked (store.LockAttachment).
	err = os.Remove(path)
	_ = unix.Flock(int(fh.Fd()), unix.LOCK_UN)
	return err
}

// record makes the state record the kernel's attachment att (replacing
// rec when it disagrees), unless its address is someone else's.
func (d *Doctor) record(att *datapath.Attachment, rec *store.Endpoint) error {
	key := store.EndpointKey(att.ContainerID, att.IfName)
	ip := att.IP.Addr()
	return d.Store.Update(func(st *store.State) error {
		if a := st.Allocations[ip.String()]; a != nil && store.EndpointKey(a.ContainerID, a.IfName) != key {
			return fmt.Errorf("address %s is allocated to %s", ip, store.EndpointKey(a.ContainerID, a.IfName))
		}
		// The container interface's other address, if any, is given back.
		for k, a := range st.Allocations {
			if store.EndpointKey(a.ContainerID, a.IfName) == key && a.IP != ip {
				delete(st.Allocations, k)
			}
		}
		e, alloc := attachment.Record(*att, d.Now().UTC())
		if n := st.Networks[att.Network]; n != nil && st.Pools[n.Pool] != nil {
			alloc.Pool = n.Pool
		}
		if st.Allocations[ip.String()] == nil {
			st.Allocations[ip.String()] = alloc
		}
		if rec != nil {
			e.Netns, e.HostMAC, e.PodNamespace, e.PodName, e.Created = rec.Netns, rec.HostMAC, rec.PodNamespace, rec.PodName, rec.Created
		}
		st.Endpoints[key] = e
		return nil
	})
}

// removeAttachment removes a host veth, its elements (only those that
// name it, or map ip to its MAC) and, when key is set, its record and
// address. Equivalent to: ip link del VETH; nft delete element ...
func (d *Doctor) removeAttachment(hostIf, mode, network string, ip netip.Addr, mac net.HardwareAddr, key string) error {
	var errs []error
	if l, err := d.Host.Netlink.LinkByName(hostIf); err == nil {
		if err := d.Host.Netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
		}
	}
	if network != "" {
		// The pods map is keyed by address: leave it to another veth
		// that gives the pod this address too.
		shared := false
		if atts, err := d.Host.Attachments(); err == nil {
			for _, a := range atts {
				if a.HostIfName != hostIf && a.IP.Addr() == ip {
					shared = true
				}
			}
		}
		t, err := d.tables(network, mode)
		if err != nil {
			errs = append(errs, err)
		} else {
			for _, e := range t.Elems {
				mine := e.HostIf == hostIf || (e.Set == datapath.SetPods && !shared && e.IP == ip && mac != nil && e.MAC.String() == mac.String())
				if mine {
					errs = append(errs, d.deleteElems(network, e))
				}
			}
		}
	}
	if key != "" {
		errs = append(errs, d.release(key))
	}
	return errors.Join(errs...)
}

// release frees a container interface's address and forgets its endpoint.
func (d *Doctor) release(key string) error {
	c, i, _ := strings.Cut(key, "/")
	return d.Store.Update(func(st *store.State) error {
		ipam.Release(st, c, i, d.Now())
		delete(st.Endpoints, key)
		return nil
	})
}

// deleteElems deletes one element. Equivalent to: nft delete element
// FAMILY TABLE SET { KEY }.
func (d *Doctor) deleteElems(network string, e datapath.Element) error {
	return datapath.Rules{Network: network}.DeleteElement(d.Host.NFT, e)
}

// rebuildState keeps a damaged state file aside and rebuilds the state from
// the host veths' aliases, as the plugin does.
func (d *Doctor) rebuildState() error {
	s := *d.Store
	s.Rebuild = func(cause error) (*store.State, error) {
		atts, err := d.Host.Attachments()
		if err != nil {
			return nil, err
		}
		st, _ := attachment.Rebuild(atts, d.Now())
		var de *store.DamagedError
		if errors.As(cause, &de) && de.Salvage != nil {
			attachment.Salvage(st, de.Salvage)
			if st.Validate() != nil {
				st, _ = attachment.Rebuild(atts, d.Now())
			}
		}
		return st, nil
	}
	return s.Update(func(*store.State) error { return nil })
}
