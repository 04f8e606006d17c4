package reliability

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// Environment of the crash test.
const (
	EnvSeed   = "VNETCNI_SEED"         // replay a run: the seed it printed
	EnvTrials = "VNETCNI_CRASH_TRIALS" // trials per mode (default 150)
)

// seed returns the seed to use, printing it for replay.
func seed(t *testing.T) int64 {
	t.Helper()
	s := time.Now().UnixNano()
	if v := os.Getenv(EnvSeed); v != "" {
		var err error
		if s, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", EnvSeed, v, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", s, EnvSeed, s)
	fmt.Printf("%s: seed %d (replay with %s=%d)\n", t.Name(), s, EnvSeed, s)
	return s
}

func trialsPerMode(t *testing.T) int {
	t.Helper()
	if v := os.Getenv(EnvTrials); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", EnvTrials, v)
		}
		return n
	}
	return 150
}

// TestCrashAnyInstant kills azure-vnet with SIGKILL at a random instant of
// ADD or DEL, over and over, in both modes, and after each kill does what
// a runtime does: DEL (retried until it succeeds) and GC with the
// attachments it still wants. Some trials kill the first ADD on a cold
// node, in the middle of setting up the network. After every trial the
// node must hold exactly the live pods; at the end every live pod must
// reach the pods of the other VM.
func TestCrashAnyInstant(t *testing.T) {
	rng := rand.New(rand.NewSource(seed(t)))
	trials := trialsPerMode(t)
	total := 0
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			total += crashStorm(t, mode, trials, rng)
		})
	}
	t.Logf("%d trials in all", total)
}

// storm is the state of one mode's run.
type storm struct {
	t       *testing.T
	l       *lab
	rng     *rand.Rand
	live    map[*node][]*pod // pods the runtime wants, per node
	stages  map[string]int   // where kills landed
	results map[string]int
	seq     int
}

const maxLive = 8 // pods per node beyond the anchors; the pool has 16

func crashStorm(t *testing.T, mode string, trials int, rng *rand.Rand) int {
	l := newLab(t, labOpts{vms: 3, secondaries: 16, mode: mode})
	s := &storm{t: t, l: l, rng: rng, live: map[*node][]*pod{}, stages: map[string]int{}, results: map[string]int{}}
	warm, cold := l.vms[:2], l.vms[2]

	// Anchors: pods that live through the whole storm.
	for _, n := range warm {
		for i := 0; i < 2; i++ {
			s.live[n] = append(s.live[n], n.addPod(t, fmt.Sprintf("anchor%d", i)))
		}
	}
	addDur, delDur := s.measure(warm[0])
	coldDur := s.measureCold(cold)
	t.Logf("%s: measured ADD %v, DEL %v, cold ADD %v", mode, addDur, delDur, coldDur)

	coldTrials := trials / 5
	for i := 0; i < trials; i++ {
		switch {
		case i < coldTrials:
			// A jittered sweep across the network setup: the bridge move
			// takes a few milliseconds of it.
			w := coldDur.window
			delay := w[0] + time.Duration((float64(i)+s.rng.Float64())/float64(coldTrials)*float64(w[1]-w[0]))
			s.coldTrial(cold, delay)
		case s.rng.Intn(2) == 0 || len(s.live[warm[0]])+len(s.live[warm[1]]) <= 4: // only anchors
			s.addTrial(warm[s.rng.Intn(2)], addDur)
		default:
			s.delTrial(warm, delDur)
		}
		if t.Failed() {
			t.Fatalf("stopped after trial %d", i)
		}
	}

	// After the storm: every node holds exactly its live pods, and they
	// talk across VMs.
	for _, n := range l.vms {
		v := n.snapshot(t)
		for _, p := range n.expect(v, s.live[n]) {
			t.Error(p)
		}
		if len(v.tmpFiles) > 0 || len(v.damaged) > 0 {
			t.Errorf("%s: left temporary files %v and damaged copies %v", n.spec.Name, v.tmpFiles, v.damaged)
		}
	}
	var pairs [][2]*pod
	for _, a := range s.live[warm[0]] {
		for _, b := range s.live[warm[1]] {
			pairs = append(pairs, [2]*pod{a, b}, [2]*pod{b, a})
		}
	}
	for _, f := range pingAll(pairs) {
		t.Errorf("after the storm: %s", f)
	}
	t.Logf("%s: %d trials; kills landed: %s; outcomes: %s; live pods at the end: %d+%d, %d pings",
		mode, trials, counts(s.stages), counts(s.results), len(s.live[warm[0]]), len(s.live[warm[1]]), len(pairs))
	return trials
}

func counts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}

// timing is what the uninterrupted calls measured: their longest duration,
// and when the phases that change the node ran (from AZURE_VNET_TRACE).
type timing struct {
	dur    time.Duration
	window [2]time.Duration // start and end of the phases of interest
}

func (tm timing) String() string {
	return fmt.Sprintf("%v (node changes between %v and %v)", tm.dur.Round(time.Millisecond),
		tm.window[0].Round(time.Millisecond), tm.window[1].Round(time.Millisecond))
}

// delay draws a kill instant: half uniform over the whole call, half
// within the window where the call changes the node.
func (s *storm) delay(tm timing) time.Duration {
	if s.rng.Intn(2) == 0 || tm.window[1] <= tm.window[0] {
		return time.Duration(s.rng.Int63n(int64(tm.dur)))
	}
	return tm.window[0] + time.Duration(s.rng.Int63n(int64(tm.window[1]-tm.window[0])))
}

// phases reads an AZURE_VNET_TRACE line: "azure-vnet trace ADD
// config=0.3ms state=1.2ms ... total=40.1ms", phases in the order they ran.
func phases(stderr string) (names []string, durs []time.Duration) {
	i := strings.Index(stderr, " trace ")
	if i < 0 {
		return nil, nil
	}
	for _, f := range strings.Fields(stderr[i:]) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			continue
		}
		names, durs = append(names, k), append(durs, d)
	}
	return names, durs
}

// profile times a call: its wall duration and the window from the start
// of the first of the phases named in want to the end of the last.
func profile(o outcome, want map[string]bool) timing {
	names, durs := phases(o.stderr)
	tm := timing{dur: o.dur}
	if len(names) == 0 || names[len(names)-1] != "total" {
		return tm
	}
	// The trace starts after the process has started and parsed its
	// arguments; what the wall clock saw before is startup.
	at := o.dur - durs[len(durs)-1]
	started := false
	for i, name := range names[:len(names)-1] {
		if want[name] {
			if !started {
				tm.window[0], started = at, true
			}
			tm.window[1] = at + durs[i]
		}
		at += durs[i]
	}
	return tm
}

var trace = map[string]string{"AZURE_VNET_TRACE": "1"}

// measure times uninterrupted ADDs and DELs (the median of five).
func (s *storm) measure(n *node) (add, del timing) {
	var adds, dels []timing
	for i := 0; i < 5; i++ {
		p := n.newPod(s.t, s.id("measure"))
		o := n.run(s.t, call{cmd: "ADD", id: p.id, netns: p.path(), env: trace})
		if !o.ok() {
			s.t.Fatalf("ADD %s: %s", p.id, o)
		}
		d := n.run(s.t, call{cmd: "DEL", id: p.id, env: trace})
		if !d.ok() {
			s.t.Fatalf("DEL %s: %s", p.id, d)
		}
		// Kills matter most from the allocation on.
		adds = append(adds, profile(o, map[string]bool{"ipam": true, "veth": true, "pod": true, "link": true, "nft": true, "kernel": true}))
		dels = append(dels, profile(d, map[string]bool{"veth": true, "link": true, "nft": true, "kernel": true, "ipam": true}))
	}
	return median(adds), median(dels)
}

// median is the timing of median duration: the machine is shared, and one
// slow call should not stretch every kill instant.
func median(ts []timing) timing {
	slices.SortFunc(ts, func(a, b timing) int { return int(a.dur - b.dur) })
	return ts[len(ts)/2]
}

func (s *storm) id(kind string) string {
	s.seq++
	return fmt.Sprintf("%s%d", kind, s.seq)
}

// valid is what the runtime keeps on a node.
func (s *storm) valid(n *node) []string {
	var ids []string
	for _, p := range s.live[n] {
		ids = append(ids, p.id)
	}
	return ids
}

// settle runs GC as a runtime does and checks the node holds exactly its
// live pods.
func (s *storm) settle(n *node, what string) {
	n.gc(s.t, s.valid(n))
	v := n.snapshot(s.t)
	for _, p := range n.expect(v, s.live[n]) {
		s.t.Errorf("after %s: %s", what, p)
	}
	if len(v.damaged) > 0 {
		s.t.Errorf("after %s: state was damaged: %v", what, v.damaged)
	}
}

// stage says how far an interrupted ADD got.
func stage(n *node, v *view, p *pod) string {
	_, alloc := v.state.AllocationFor(p.id, "eth0")
	a, veth := v.veths[p.host]
	elems := 0
	for k := range v.elems {
		if strings.Contains(k, p.host) {
			elems++
		}
	}
	switch {
	case !alloc && !veth:
		return "before-allocation"
	case !veth:
		return "allocated"
	case a.ContainerID == "":
		return "veth-without-alias"
	case elems == 0:
		return "veth"
	}
	return "elements"
}

func (s *storm) addTrial(n *node, tm timing) {
	t := s.t
	p := n.newPod(t, s.id("c"))
	delay := s.delay(tm)
	o := n.runKilled(t, call{cmd: "ADD", id: p.id, netns: p.path()}, delay)
	if !o.killed {
		if !o.ok() {
			t.Errorf("ADD %s (not killed): %s", p.id, o)
			return
		}
		if err := p.setResult([]byte(o.stdout)); err != nil {
			t.Fatal(err)
		}
		s.results["add-completed"]++
		s.keepOrDel(n, p)
		return
	}
	s.stages["add:"+stage(n, n.snapshot(t), p)]++
	// The runtime tears the failed sandbox down; sometimes it lost track
	// of it (restarted itself) and only GC cleans up.
	if s.rng.Intn(8) > 0 {
		if retries := n.mustDel(t, p.id); retries > 0 {
			s.results["del-retried"]++
		}
		if ifs := podIfaces(t, p.ns); len(ifs) > 0 {
			t.Errorf("DEL %s after a killed ADD left %v in the pod", p.id, ifs)
		}
		s.results["add-killed-del"]++
	} else {
		s.results["add-killed-gc-only"]++
	}
	s.settle(n, "killed ADD "+p.id+" at "+delay.String())
	// Then it starts the pod again.
	if s.rng.Intn(3) == 0 {
		q := n.newPod(t, s.id("c"))
		if o := n.add(t, q); !o.ok() {
			t.Errorf("ADD %s after a killed ADD: %s", q.id, o)
			return
		}
		s.keepOrDel(n, q)
	}
	_ = netns.Delete(p.ns)
}

// keepOrDel keeps a freshly added pod if there is room, else deletes it.
func (s *storm) keepOrDel(n *node, p *pod) {
	if len(s.live[n]) < maxLive {
		s.live[n] = append(s.live[n], p)
		s.settle(n, "ADD "+p.id)
		return
	}
	n.mustDel(s.t, p.id)
	s.settle(n, "DEL "+p.id)
}

func (s *storm) delTrial(nodes []*node, tm timing) {
	t := s.t
	type cand struct {
		n *node
		i int
	}
	var cands []cand
	for _, n := range nodes {
		for i, p := range s.live[n] {
			if !strings.HasPrefix(p.id, "anchor") {
				cands = append(cands, cand{n, i})
			}
		}
	}
	c := cands[s.rng.Intn(len(cands))]
	n, i := c.n, c.i
	p := s.live[n][i]
	delay := s.delay(tm)
	o := n.runKilled(t, call{cmd: "DEL", id: p.id}, delay)
	s.live[n] = append(s.live[n][:i:i], s.live[n][i+1:]...)
	if !o.killed {
		if !o.ok() {
			t.Errorf("DEL %s (not killed): %s", p.id, o)
		}
		s.results["del-completed"]++
	} else {
		v := n.snapshot(t)
		_, alloc := v.state.AllocationFor(p.id, "eth0")
		_, veth := v.veths[p.host]
		switch {
		case veth && alloc:
			s.stages["del:untouched"]++
		case alloc:
			s.stages["del:kernel-removed"]++
		case veth:
			s.stages["del:released-before-kernel"]++
		default:
			s.stages["del:done"]++
		}
		if s.rng.Intn(8) > 0 {
			n.mustDel(t, p.id)
			s.results["del-killed-retried"]++
		} else {
			s.results["del-killed-gc-only"]++
		}
	}
	s.settle(n, "killed DEL "+p.id+" at "+delay.String())
	_ = netns.Delete(p.ns)
}

// resetNode returns a VM to a first boot: no network set up, no state,
// the NIC configured as Azure's DHCP would.
func (s *storm) resetNode(n *node) {
	t := s.t
	h := n.netlink(t)
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "bridge" {
			if err := h.LinkDel(l); err != nil {
				t.Fatalf("remove bridge %s: %v", l.Attrs().Name, err)
			}
		}
	}
	c := n.nft(t)
	(datapath.Rules{Network: netName, Mode: s.l.mode}).Remove(c)
	if _, err := fabric.Build(s.l.f.Spec()); err != nil {
		t.Fatalf("re-provision %s: %v", n.spec.Name, err)
	}
	if err := os.RemoveAll(n.stateDir()); err != nil {
		t.Fatal(err)
	}
}

func (s *storm) measureCold(n *node) timing {
	var tms []timing
	for i := 0; i < 3; i++ {
		s.resetNode(n)
		p := n.newPod(s.t, s.id("cold"))
		o := n.run(s.t, call{cmd: "ADD", id: p.id, netns: p.path(), env: trace})
		if !o.ok() {
			s.t.Fatalf("cold ADD: %s", o)
		}
		// The network setup: in bridge mode the move to the bridge, else
		// the rules.
		phase := "network"
		if s.l.mode == datapath.ModeBridge {
			phase = "bridge"
		}
		tms = append(tms, profile(o, map[string]bool{phase: true}))
		n.mustDel(s.t, p.id)
	}
	return median(tms)
}

// coldTrial kills the first ADD on a node, which sets up the network (in
// bridge mode: moves the NIC's addresses and routes to the bridge). The
// runtime deletes the sandbox and starts the pod again: that ADD must
// finish the setup, and pod and node must reach the other VMs.
func (s *storm) coldTrial(n *node, delay time.Duration) {
	t := s.t
	s.resetNode(n)
	p := n.newPod(t, s.id("cold"))
	o := n.runKilled(t, call{cmd: "ADD", id: p.id, netns: p.path()}, delay)
	if o.killed {
		s.stages["cold-add:"+s.setupStage(n)+":"+stage(n, n.snapshot(t), p)]++
	} else if !o.ok() {
		t.Errorf("cold ADD %s (not killed): %s", p.id, o)
		return
	}
	n.mustDel(t, p.id)
	s.settle(n, "killed cold ADD "+p.id+" at "+delay.String())
	q := n.newPod(t, s.id("cold"))
	if o := n.add(t, q); !o.ok() {
		t.Errorf("ADD %s after a killed cold ADD at %v: %s", q.id, delay, o)
		return
	}
	s.results["cold-recovered"]++
	peer := s.live[s.l.vms[0]][0]
	for _, f := range pingAll([][2]*pod{{q, peer}, {peer, q}}) {
		t.Errorf("after a cold ADD killed at %v: %s", delay, f)
	}
	n.mustDel(t, q.id)
	s.settle(n, "DEL "+q.id)
	_ = netns.Delete(p.ns)
	_ = netns.Delete(q.ns)
	if _, err := os.Stat(filepath.Join(n.stateDir(), store.FileName)); err != nil {
		t.Errorf("no state after cold trial: %v", err)
	}
}

// setupStage says how far an interrupted network setup got: in bridge mode
// whether the bridge exists, enslaves the NIC, and holds the NIC's address
// and default route.
func (s *storm) setupStage(n *node) string {
	if s.l.mode != datapath.ModeBridge {
		if (datapath.Rules{Network: netName, Mode: s.l.mode}).Present(n.nft(s.t)) {
			return "rules"
		}
		return "no-rules"
	}
	h := n.netlink(s.t)
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		s.t.Fatal(err)
	}
	var br netlink.Link
	links, _ := h.LinkList()
	for _, l := range links {
		if l.Type() == "bridge" {
			br = l
		}
	}
	has := func(l netlink.Link) (addr, def bool) {
		addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.Equal(n.spec.PrimaryIP.AsSlice()) {
				addr = true
			}
		}
		routes, _ := h.RouteList(l, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				def = true
			}
		}
		return addr, def
	}
	switch {
	case br == nil:
		return "no-bridge"
	case eth0.Attrs().MasterIndex != br.Attrs().Index:
		return "bridge-created"
	}
	onNIC, _ := has(eth0)
	onBr, brDef := has(br)
	switch {
	case onNIC:
		return "nic-enslaved"
	case !onBr:
		return "address-in-flight"
	case !brDef:
		return "routes-in-flight"
	}
	return "bridge-ready"
}
