package reliability

import (
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/datapath"
)

const burstSize = 250

// TestBurst starts 250 ADDs at once on a cold node (no network set up, no
// cached pool) whose NIC has 300 secondary addresses, and mixes in what
// runtimes and operators do under pressure: a second ADD for the same
// container, a DEL that arrives while the container's ADD still runs, and
// DELs of containers whose ADD has just returned while the others are
// still being added. Nothing may fail for locking, no address may be given
// twice, the node must hold exactly the surviving pods without any GC,
// and every survivor must answer a ping from the other VM.
func TestBurst(t *testing.T) {
	rng := rand.New(rand.NewSource(seed(t)))
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) { burst(t, mode, rng) })
	}
}

// Roles of the burst's containers, by index.
const (
	dupAdds   = 20 // c000-c019: a second, concurrent ADD
	delDuring = 20 // c020-c039: a DEL while the ADD runs
	delAfter  = 30 // c040-c069: DEL as soon as ADD returns
)

type burstResult struct {
	add, dup, del, del2 outcome
	hasDup, hasDel      bool
}

func burst(t *testing.T, mode string, rng *rand.Rand) {
	l := newLab(t, labOpts{vms: 2, perVM: []int{300, 2}, mode: mode})
	n := l.vms[0]
	peer := l.vms[1].addPod(t, "peer")
	queries := l.countingWireserver(t)

	pods := make([]*pod, burstSize)
	for i := range pods {
		pods[i] = n.newPod(t, fmt.Sprintf("c%03d", i))
	}
	delays := make([]time.Duration, burstSize)
	for i := range delays {
		delays[i] = time.Duration(rng.Int63n(int64(60 * time.Millisecond)))
	}
	res := make([]burstResult, burstSize)
	addCall := func(p *pod) call {
		return call{cmd: "ADD", id: p.id, netns: p.path(), args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + p.id}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	begin := time.Now()
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res[i].add = n.run(t, addCall(p))
			if i >= dupAdds+delDuring && i < dupAdds+delDuring+delAfter {
				res[i].hasDel = true
				res[i].del = n.del(t, p.id)
			}
		}()
		switch {
		case i < dupAdds:
			res[i].hasDup = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				time.Sleep(delays[i])
				res[i].dup = n.run(t, addCall(p))
			}()
		case i < dupAdds+delDuring:
			res[i].hasDel = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				time.Sleep(delays[i])
				res[i].del = n.del(t, p.id)
			}()
		}
	}
	close(start)
	wg.Wait()
	wall := time.Since(begin)

	// What a runtime does next: a sandbox whose DEL raced its ADD is
	// deleted again once the ADD has returned.
	var live []*pod
	var durs []time.Duration
	lockFailures, failures := 0, 0
	fail := func(what string, p *pod, o outcome) {
		failures++
		if strings.Contains(o.stdout+o.stderr, "lock") {
			lockFailures++
		}
		t.Errorf("%s %s: %s", what, p.id, o)
	}
	for i, p := range pods {
		r := &res[i]
		durs = append(durs, r.add.dur)
		switch {
		case i < dupAdds:
			if !r.add.ok() {
				fail("ADD", p, r.add)
			}
			if !r.dup.ok() {
				fail("duplicate ADD", p, r.dup)
			}
			if r.add.ok() && r.dup.ok() {
				var a, b pod
				_ = a.setResult([]byte(r.add.stdout))
				_ = b.setResult([]byte(r.dup.stdout))
				if a.ip != b.ip {
					t.Errorf("ADD and duplicate ADD of %s got %s and %s", p.id, a.ip, b.ip)
				}
				// The later result describes the attachment.
				if err := p.setResult([]byte(later(r.add, r.dup).stdout)); err != nil {
					t.Fatal(err)
				}
				live = append(live, p)
			}
		case i < dupAdds+delDuring:
			if !r.del.ok() {
				fail("DEL during ADD", p, r.del)
			}
			if !r.add.ok() && r.add.cniErr != nil && strings.Contains(r.add.cniErr.Msg, "lock") {
				fail("ADD raced by DEL", p, r.add)
			}
			r.del2 = n.del(t, p.id)
			if !r.del2.ok() {
				fail("second DEL", p, r.del2)
			}
		case i < dupAdds+delDuring+delAfter:
			if !r.add.ok() {
				fail("ADD", p, r.add)
			}
			if !r.del.ok() {
				fail("DEL", p, r.del)
			}
		default:
			if !r.add.ok() {
				fail("ADD", p, r.add)
				continue
			}
			if err := p.setResult([]byte(r.add.stdout)); err != nil {
				t.Fatal(err)
			}
			live = append(live, p)
		}
	}

	// Exactly the survivors, before any GC.
	seen := map[netip.Addr]string{}
	dups := 0
	for _, p := range live {
		if other, ok := seen[p.ip]; ok {
			dups++
			t.Errorf("address %s given to %s and %s", p.ip, other, p.id)
		}
		seen[p.ip] = p.id
	}
	probs := n.expect(n.snapshot(t), live)
	for _, p := range probs {
		t.Error("before GC:", p)
	}
	n.gc(t, idsOf(live))
	for _, p := range n.expect(n.snapshot(t), live) {
		t.Error("after GC:", p)
	}
	var pairs [][2]*pod
	for _, p := range live {
		pairs = append(pairs, [2]*pod{peer, p})
	}
	unreachable := pingAll(pairs)
	for _, f := range unreachable {
		t.Error(f)
	}
	slices.Sort(durs)
	t.Logf("%s: %d ADDs at once (+%d duplicate ADDs, %d DELs during ADD, %d DELs right after) in %v; "+
		"ADD latency p50 %v p99 %v max %v; %d failures (%d for locking); %d survivors, %d duplicate addresses, "+
		"%d state/kernel problems, %d unreachable; wireserver queried %d times",
		mode, burstSize, dupAdds, delDuring, delAfter, wall.Round(time.Millisecond),
		durs[len(durs)/2].Round(time.Millisecond), durs[len(durs)*99/100].Round(time.Millisecond), durs[len(durs)-1].Round(time.Millisecond),
		failures, lockFailures, len(live), dups, len(probs), len(unreachable), queries())
}

// later is the outcome that finished last.
func later(a, b outcome) outcome {
	if b.end.After(a.end) {
		return b
	}
	return a
}

func idsOf(pods []*pod) []string {
	var ids []string
	for _, p := range pods {
		ids = append(ids, p.id)
	}
	return ids
}
