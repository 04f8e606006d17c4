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

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
)

// EnvAgentBursts sets the bursts per mode of TestAgentKilledDuringBursts.
const EnvAgentBursts = "VNETCNI_AGENT_BURSTS"

// agent is a vnetd the test started in a VM's namespace.
type agent struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
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
	a := &agent{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = &syncWriter{w: a.stderr}
	if err := netns.Do(n.ns, cmd.Start); err != nil {
		// Errorf: the killer goroutine starts agents too.
		t.Errorf("start vnetd on %s: %v", n.spec.Name, err)
		return nil
	}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.kill() })
	return a
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
			k++
		}
		killed <- k
	}()
	close(start)
	wg.Wait()
	stop.Store(true)
	k := <-killed

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
	t.Logf("%s: %d agent kills during a %d-pod burst; %d calls retried; %d pods live, %d pings", mode, k, burstSize, retried, len(live), len(pairs))
	return k
}
