package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// EnvAgentBursts sets the bursts per mode of TestAgentKilledDuringBursts.
const EnvAgentBursts = "VNETCNI_AGENT_BURSTS"

// agent is a vnetd the test started in a VM's namespace.
type agent struct {
	cmd    *exec.Cmd
	stderr *syncWriter
	done   chan struct{}
	err    error
}

// startAgent starts vnetd for the node's state directory inside its VM's
// namespace (no HTTP) and waits until its socket answers.
func (n *node) startAgent(t testing.TB, args ...string) *agent {
	t.Helper()
	a := n.spawnAgent(t, args...)
	if a == nil {
		t.FailNow()
	}
	for {
		if _, err := agentapi.Call(agentapi.SocketPath(n.stateDir()), &agentapi.Request{Command: agentapi.StatusCommand}); err == nil {
			return a
		}
		select {
		case <-a.done:
			t.Fatalf("vnetd on %s ended before serving: %v\n%s", n.spec.Name, a.err, a.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (n *node) spawnAgent(t testing.TB, args ...string) *agent {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "vnetd"), append([]string{"--state-dir=" + n.stateDir(), "--http="}, args...)...)
	a := &agent{cmd: cmd, stderr: &syncWriter{w: &bytes.Buffer{}}, done: make(chan struct{})}
	cmd.Stderr = a.stderr
	if err := netns.Do(n.ns, cmd.Start); err != nil {
		// Errorf: the killer goroutine starts agents too.
		t.Errorf("start vnetd on %s: %v", n.spec.Name, err)
		return nil
	}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.kill() })
	return a
}

// served counts the CNI commands the agent finished (its log's "done"
// and "failed" lines).
func (a *agent) served() int {
	log := a.stderr.String()
	return strings.Count(log, "msg=done ") + strings.Count(log, "msg=failed ")
}

// kill sends SIGKILL and waits for the agent to be gone.
func (a *agent) kill() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// TestAgentRefusesSecondInstance: a second vnetd for the same state
// directory exits with status 2 and says why; the first keeps serving.
func TestAgentRefusesSecondInstance(t *testing.T) {
	l := newLab(t, labOpts{vms: 1, secondaries: 2, mode: datapath.ModeBridge})
	n := l.vms[0]
	n.startAgent(t)
	second := n.spawnAgent(t)
	if second == nil {
		t.FailNow()
	}
	<-second.done
	var ee *exec.ExitError
	if !errors.As(second.err, &ee) || ee.ExitCode() != 2 || !strings.Contains(second.stderr.String(), "another vnetd already serves this node") {
		t.Fatalf("second vnetd: %v, stderr %q; want exit status 2 saying another vnetd serves the node", second.err, second.stderr)
	}
	if _, err := agentapi.Call(agentapi.SocketPath(n.stateDir()), &agentapi.Request{Command: agentapi.StatusCommand}); err != nil {
		t.Errorf("first vnetd after the second was refused: %v", err)
	}
	p := n.addPod(t, "p1")
	if o := n.del(t, p.id); !o.ok() {
		t.Errorf("DEL through the first agent: %s", o)
	}
}

// TestAgentKilledDuringBursts starts 250 ADDs at once on a node served by
// vnetd, with DELs racing some of them and DELs right after others, while
// a killer SIGKILLs the agent at random instants and starts a new one
// (sometimes at once, sometimes after a gap in which the plugins run
// standalone). Each kill is a trial. Every call must succeed or fail with
// "try again later" (11), and the next call must heal it; afterwards the
// node must hold exactly the surviving pods: no address leaked or given
// twice, no link leaked, and the survivors reach the other VM.
func TestAgentKilledDuringBursts(t *testing.T) {
	rng := rand.New(rand.NewSource(seed(t)))
	bursts := 1
	if v := os.Getenv(EnvAgentBursts); v != "" {
		var err error
		if bursts, err = strconv.Atoi(v); err != nil || bursts < 1 {
			t.Fatalf("%s=%q: want a positive number", EnvAgentBursts, v)
		}
	}
	kills := 0
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			for b := 0; b < bursts && !t.Failed(); b++ {
				kills += agentBurst(t, mode, rng)
			}
		})
	}
	t.Logf("%d agent kills (trials) in all", kills)
}

func agentBurst(t *testing.T, mode string, rng *rand.Rand) int {
	l := newLab(t, labOpts{vms: 2, perVM: []int{300, 2}, mode: mode})
	n := l.vms[0]
	peer := l.vms[1].addPod(t, "peer")
	cur := n.startAgent(t, "--resync=1s")
	agents := []*agent{cur} // every agent of the burst, to count what they served

	pods := make([]*pod, burstSize)
	for i := range pods {
		pods[i] = n.newPod(t, fmt.Sprintf("a%03d", i))
	}
	// Roles: a DEL racing the ADD (delDuring), a DEL as soon as the ADD
	// returns (delAfter); the rest live.
	delays := make([]time.Duration, burstSize)
	for i := range delays {
		delays[i] = time.Duration(rng.Int63n(int64(500 * time.Millisecond)))
	}
	killAt := make([]time.Duration, 0, 256)
	gaps := make([]time.Duration, 0, 256)
	for i := 0; i < cap(killAt); i++ {
		killAt = append(killAt, time.Duration(50+rng.Int63n(700))*time.Millisecond)
		gap := time.Duration(0)
		if rng.Intn(3) == 0 {
			gap = time.Duration(rng.Int63n(int64(300 * time.Millisecond)))
		}
		gaps = append(gaps, gap)
	}

	type result struct{ add, del outcome }
	res := make([]result, burstSize)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res[i].add = n.add(t, p)
			if i >= delDuring && i < delDuring+delAfter {
				res[i].del = n.del(t, p.id)
			}
		}()
		if i < delDuring {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				time.Sleep(delays[i])
				res[i].del = n.del(t, p.id)
			}()
		}
	}
	// The killer: SIGKILL at random instants until the burst is over.
	var stop atomic.Bool
	killed := make(chan int)
	go func() {
		k := 0
		for !stop.Load() {
			time.Sleep(killAt[k%len(killAt)])
			if stop.Load() {
				break
			}
			cur.kill()
			time.Sleep(gaps[k%len(gaps)])
			next := n.spawnAgent(t, "--resync=1s")
			if next == nil {
				break
			}
			cur = next
			agents = append(agents, next)
			k++
		}
		killed <- k
	}()
	close(start)
	wg.Wait()
	stop.Store(true)
	k := <-killed
	// Counted now, before the retries below (which the last agent serves).
	served := 0
	for _, ag := range agents {
		served += ag.served()
	}
	// Not asserted: how many commands an agent finishes before its kill
	// depends on the machine's load (see docs/agent.md); the kills land
	// on agents holding accepted connections, whose plugins must fall
	// back.

	// What a runtime does next: retry what failed (only "try again later"
	// may fail), and delete again what was deleted while being added.
	var live []*pod
	retried := 0
	for i, p := range pods {
		r := res[i]
		for what, o := range map[string]outcome{"ADD": r.add, "DEL": r.del} {
			if what == "DEL" && i >= delDuring+delAfter {
				continue
			}
			if !o.ok() && (o.cniErr == nil || o.cniErr.Code != agentapi.CodeTryAgainLater) {
				t.Errorf("%s %s with the agent being killed: %s; want success or error 11", what, p.id, o)
			}
		}
		switch {
		case i < delDuring+delAfter:
			if !r.del.ok() || i < delDuring {
				retried += n.mustDel(t, p.id)
			}
		default:
			if !r.add.ok() {
				retried++
				if o := n.add(t, p); !o.ok() {
					t.Errorf("ADD %s again after %s: %s", p.id, r.add, o)
					continue
				}
			}
			live = append(live, p)
		}
	}
	// The agent serving now must not have died on its own.
	select {
	case <-cur.done:
		t.Errorf("the last vnetd ended on its own: %v\n%s", cur.err, lastLines(cur.stderr.String(), 20))
	default:
	}
	v := n.snapshot(t)
	for _, p := range n.expect(v, live) {
		t.Error(p)
	}
	if len(v.tmpFiles) > 0 || len(v.damaged) > 0 {
		t.Errorf("left temporary files %v and damaged copies %v", v.tmpFiles, v.damaged)
	}
	var pairs [][2]*pod
	for i, p := range live {
		if i%10 == 0 {
			pairs = append(pairs, [2]*pod{peer, p}, [2]*pod{p, peer})
		}
	}
	for _, f := range pingAll(pairs) {
		t.Errorf("after the burst: %s", f)
	}
	t.Logf("%s: %d agent kills during a %d-pod burst (%d of its %d ADDs and DELs finished by an agent, the rest by the plugins after the agent died or while none ran); %d calls retried; %d pods live, %d pings",
		mode, k, burstSize, served, burstSize+delDuring+delAfter, retried, len(live), len(pairs))
	return k
}

// damage is one way an operator or another program breaks a node's
// datapath behind the plugins' back.
type damage struct {
	name  string
	kind  string   // what the agent logs repairing it (datapath.Kind*)
	modes []string // the modes it applies to; both when empty
	do    func(t *testing.T, n *node, p *pod)
}

// nftCmd runs the nft binary in the VM's namespace, as an operator would.
func nftCmd(t *testing.T, n *node, args ...string) string {
	t.Helper()
	cmd := exec.Command("nft", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Do(n.ns, cmd.Run); err != nil {
		t.Fatalf("nft %s in %s: %v: %s", strings.Join(args, " "), n.ns, err, out.String())
	}
	return out.String()
}

// ourChains lists "family table chain" of the plugin's nftables chains.
func ourChains(t *testing.T, n *node) []string {
	t.Helper()
	var chains []string
	for _, line := range strings.Split(nftCmd(t, n, "list", "chains"), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			chains = append(chains, f[1]+" "+f[2])
		case len(f) >= 2 && f[0] == "chain" && len(chains) > 0:
			last := chains[len(chains)-1]
			if k := strings.Count(last, " "); k >= 2 { // a chain: start from its table
				last = last[:strings.LastIndex(last, " ")]
			}
			chains = append(chains, last+" "+f[1])
		}
	}
	var out []string
	for _, c := range chains {
		if f := strings.Fields(c); len(f) == 3 && strings.HasPrefix(f[1], "azure-vnet") {
			out = append(out, c)
		}
	}
	return out
}

var damages = []damage{
	{name: "nft flush ruleset", kind: datapath.KindTables, do: func(t *testing.T, n *node, _ *pod) { nftCmd(t, n, "flush", "ruleset") }},
	{name: "a flushed chain", kind: datapath.KindRules, do: func(t *testing.T, n *node, _ *pod) {
		chains := ourChains(t, n)
		if len(chains) == 0 {
			t.Fatalf("no azure-vnet chains in %s", n.ns)
		}
		for _, c := range chains {
			nftCmd(t, n, append([]string{"flush", "chain"}, strings.Fields(c)...)...)
		}
		t.Logf("flushed chains %q", chains)
	}},
	{name: "bridge enslavement removed", kind: datapath.KindBridge, modes: []string{datapath.ModeBridge}, do: func(t *testing.T, n *node, _ *pod) {
		h := n.netlink(t)
		defer h.Close()
		eth0, err := h.LinkByName("eth0")
		if err == nil {
			err = h.LinkSetNoMaster(eth0)
		}
		if err != nil {
			t.Fatalf("ip link set eth0 nomaster: %v", err)
		}
	}},
	{name: "FDB entry deleted", kind: datapath.KindFDB, modes: []string{datapath.ModeBridge}, do: func(t *testing.T, n *node, p *pod) {
		h := n.netlink(t)
		defer h.Close()
		host, err := h.LinkByName(p.host)
		if err != nil {
			t.Fatal(err)
		}
		neighs, err := h.NeighList(host.Attrs().Index, syscall.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for _, ne := range neighs {
			if ne.HardwareAddr.String() == p.mac.String() && ne.State&netlink.NUD_NOARP != 0 {
				del := &netlink.Neigh{LinkIndex: host.Attrs().Index, Family: syscall.AF_BRIDGE, Flags: netlink.NTF_MASTER, State: ne.State, HardwareAddr: ne.HardwareAddr}
				if err := h.NeighDel(del); err != nil {
					t.Fatalf("bridge fdb del %s dev %s: %v", p.mac, p.host, err)
				}
				deleted++
			}
		}
		if deleted == 0 {
			t.Fatalf("no FDB entry for %s on %s", p.mac, p.host)
		}
	}},
	{name: "pod route deleted", kind: datapath.KindRoute, modes: []string{datapath.ModeTransparent}, do: func(t *testing.T, n *node, p *pod) {
		h := n.netlink(t)
		defer h.Close()
		routes, err := h.RouteList(nil, syscall.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.Equal(p.ip.AsSlice()) {
				if err := h.RouteDel(&r); err != nil {
					t.Fatalf("ip route del %s: %v", r.Dst, err)
				}
				deleted++
			}
		}
		if deleted == 0 {
			t.Fatalf("no route to %s", p.ip)
		}
	}},
	{name: "veth down", kind: datapath.KindLink, do: func(t *testing.T, n *node, p *pod) {
		h := n.netlink(t)
		defer h.Close()
		host, err := h.LinkByName(p.host)
		if err == nil {
			err = h.LinkSetDown(host)
		}
		if err != nil {
			t.Fatalf("ip link set %s down: %v", p.host, err)
		}
	}},
}

// TestAgentRepairs breaks each kind of object the agent reconciles, in
// both modes, and waits for the pods' traffic (to a pod on the other VM
// both ways, and to the lab's internet host, SNATed to the VM's public
// address) to come back without any CNI call.
func TestAgentRepairs(t *testing.T) {
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, labOpts{vms: 2, secondaries: 4, mode: mode})
			n := l.vms[0]
			a := n.startAgent(t)
			pods := []*pod{n.addPod(t, "p1"), n.addPod(t, "p2")}
			peer := l.vms[1].addPod(t, "peer")
			if err := traffic(n, pods, peer); err != nil {
				t.Fatalf("before any damage: %v", err)
			}
			for _, d := range damages {
				if len(d.modes) > 0 && d.modes[0] != mode {
					continue
				}
				before := repairsOf(a, d.kind)
				// The agent is stopped while the damage is done and probed,
				// so the log says what the damage broke (the FDB entry, for
				// one, only pins the pod's port: traffic may flow without).
				if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				d.do(t, n, pods[0])
				broken := traffic(n, pods, peer)
				if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				if broken != nil {
					probs := strings.Split(broken.Error(), "\n")
					t.Logf("%s: with the agent stopped, %d probes failed, e.g. %s", d.name, len(probs), probs[0])
				} else {
					t.Logf("%s: with the agent stopped, traffic still flowed", d.name)
				}
				// Generous: the machine is shared and loaded; the agent
				// repairs on the event (or the 10 s resync at worst).
				// First the agent's repair, so that a probe that ran
				// before the damage took effect proves nothing.
				deadline := time.Now().Add(60 * time.Second)
				for repairsOf(a, d.kind) == before && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if repairsOf(a, d.kind) == before {
					t.Errorf("%s: the agent logged no %s repair\nagent log:\n%s", d.name, d.kind, lastLines(a.stderr.String(), 15))
					continue
				}
				var err error
				tries := 0
				for {
					tries++
					if err = traffic(n, pods, peer); err == nil || time.Now().After(deadline) {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					t.Errorf("%s: traffic did not come back: %v\nagent log:\n%s", d.name, err, lastLines(a.stderr.String(), 15))
				} else {
					t.Logf("%s: traffic back (%d probe rounds)", d.name, tries)
				}
			}
			var repaired []string
			for _, line := range strings.Split(a.stderr.String(), "\n") {
				if i := strings.Index(line, "kind="); i >= 0 && strings.Contains(line, "msg=repaired") {
					repaired = append(repaired, strings.Fields(line[i:])[0])
				}
			}
			t.Logf("%s: agent repairs: %s", mode, strings.Join(repaired, " "))
			select {
			case <-a.done:
				t.Errorf("vnetd ended: %v", a.err)
			default:
			}
		})
	}
}

// repairsOf counts the agent's logged repairs of a kind.
func repairsOf(a *agent, kind string) int {
	k := 0
	for _, line := range strings.Split(a.stderr.String(), "\n") {
		if strings.Contains(line, "msg=repaired") && strings.Contains(line, " kind="+kind+" ") {
			k++
		}
	}
	return k
}

// traffic checks that every pod reaches peer and back, and the internet
// host, which must see the VM's public address.
func traffic(n *node, pods []*pod, peer *pod) error {
	var pairs [][2]*pod
	for _, p := range pods {
		pairs = append(pairs, [2]*pod{p, peer}, [2]*pod{peer, p})
	}
	var errs []error
	for _, f := range pingAll(pairs) {
		errs = append(errs, errors.New(f))
	}
	for _, p := range pods {
		code, body, err := probe.HTTPGet(p.ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeTimeout)
		switch {
		case err != nil || code != 200:
			errs = append(errs, fmt.Errorf("%s to the internet host: %d %v", p.id, code, err))
		case string(body) != n.spec.PublicIP.String():
			errs = append(errs, fmt.Errorf("internet host saw %s as %s, want %s", p.id, body, n.spec.PublicIP))
		}
	}
	return errors.Join(errs...)
}
