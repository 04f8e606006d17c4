package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// variant is one plugin configuration on one VM.
type variant struct {
	key  string
	node *node
}

// podPool is a set of pod namespaces made before anything is timed and
// reused by every variant: a DEL leaves its namespace empty. Namespaces
// are removed at the end of the run, so the kernel's asynchronous
// namespace teardown never competes with a measurement.
type podPool struct {
	names []string
}

func (l *lab) newPodPool(ctx context.Context, n int) (*podPool, error) {
	p := &podPool{}
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name, err := l.podNS(fmt.Sprintf("%03d", i))
		if err != nil {
			return nil, err
		}
		p.names = append(p.names, name)
	}
	return p, nil
}

func (p *podPool) path(i int) string { return netns.Path(p.names[i]) }

func runtimeConf(v, tag string, i int, nsPath string) *libcni.RuntimeConf {
	id := fmt.Sprintf("bench-%s-%s-%03d", v, tag, i)
	name := fmt.Sprintf("%s-%03d", tag, i)
	return &libcni.RuntimeConf{
		ContainerID: id, NetNS: nsPath, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", id}},
	}
}

func resultIP(res types.Result) netip.Addr {
	if res == nil {
		return netip.Addr{}
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	return ip
}

// sequential ADDs pods one at a time, interleaving the variants pod by pod
// (A B C A B C ...), then DELs them the same way. Each variant first gets
// one warm-up ADD and DEL, which also sets up its node's network.
func sequential(ctx context.Context, cfg Config, pool *podPool, vs []variant) (map[string]*Setup, map[string][]outcome, map[string][]outcome, error) {
	out := map[string]*Setup{}
	adds := map[string][]outcome{}
	dels := map[string][]outcome{}
	for _, v := range vs {
		s := &Setup{Variant: v.key}
		out[v.key] = s
		rt := runtimeConf(v.key, "warm", 0, pool.path(0))
		_, c := v.node.add(ctx, rt)
		if c.Err != nil {
			return nil, nil, nil, fmt.Errorf("%s: warm-up ADD: %w", v.key, c.Err)
		}
		s.FirstAddMS = ms(c.Wall)
		if c := v.node.del(ctx, rt); c.Err != nil {
			return nil, nil, nil, fmt.Errorf("%s: warm-up DEL: %w", v.key, c.Err)
		}
	}
	cfg.logf("sequential: %d pods per variant, ADD then DEL, interleaved", cfg.Pods)
	// Pod i of the k-th variant uses namespace k*Pods+i.
	for i := 0; i < cfg.Pods; i++ {
		for _, k := range rotate(indexes(len(vs)), i) {
			if err := ctx.Err(); err != nil {
				return nil, nil, nil, err
			}
			v := vs[k]
			res, c := v.node.add(ctx, runtimeConf(v.key, "seq", i, pool.path(k*cfg.Pods+i)))
			o := outcome{call: c}
			if c.Err == nil {
				o.ip = resultIP(res)
			}
			adds[v.key] = append(adds[v.key], o)
		}
	}
	for i := 0; i < cfg.Pods; i++ {
		for _, k := range rotate(indexes(len(vs)), i) {
			if err := ctx.Err(); err != nil {
				return nil, nil, nil, err
			}
			v := vs[k]
			c := v.node.del(ctx, runtimeConf(v.key, "seq", i, pool.path(k*cfg.Pods+i)))
			dels[v.key] = append(dels[v.key], outcome{call: c})
		}
	}
	for _, v := range vs {
		summariseSetup(out[v.key], adds[v.key], dels[v.key])
	}
	return out, adds, dels, nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func summariseSetup(s *Setup, adds, dels []outcome) {
	var ips []netip.Addr
	s.AddMS, s.AddExecMS, _, s.AddCPUMS = callStats(adds)
	s.DelMS, s.DelExecMS, _, s.DelCPUMS = callStats(dels)
	s.AddFaults, s.DelFaults = faultStats(adds), faultStats(dels)
	s.AddSamplesMS, s.DelSamplesMS = samples(adds), samples(dels)
	for _, o := range append(append([]outcome(nil), adds...), dels...) {
		if o.Err != nil {
			s.Failures++
			if len(s.FirstErrors) < 3 {
				s.FirstErrors = append(s.FirstErrors, o.Err.Error())
			}
		}
	}
	for _, o := range adds {
		if o.ip.IsValid() {
			ips = append(ips, o.ip)
		}
	}
	s.Duplicates = Duplicates(ips)
}

// samples are the libcni wall times of successful calls, in milliseconds.
func samples(os []outcome) []float64 {
	var out []float64
	for _, o := range os {
		if o.Err == nil {
			out = append(out, ms(o.Wall))
		}
	}
	return out
}

// faultStats summarises the page faults of successful calls' processes.
func faultStats(os []outcome) Dist {
	var v []float64
	for _, o := range os {
		if o.Err != nil {
			continue
		}
		n := int64(0)
		for _, x := range o.Execs {
			n += x.MinFlt
		}
		v = append(v, float64(n))
	}
	return SummariseMS(v)
}

// callStats summarises successful calls: libcni wall time, the plugin
// processes' wall time, their peak RSS and CPU time.
func callStats(os []outcome) (wall, execWall, rss, cpu Dist) {
	var w, ew, r, c []float64
	for _, o := range os {
		if o.Err != nil {
			continue
		}
		w = append(w, ms(o.Wall))
		var e, cp time.Duration
		var peak int64
		for _, x := range o.Execs {
			e += x.Wall
			cp += x.CPU()
			peak = max(peak, x.MaxRSSKB)
		}
		ew = append(ew, ms(e))
		c = append(c, ms(cp))
		r = append(r, float64(peak)*1024/1e6)
	}
	return SummariseMS(w), SummariseMS(ew), SummariseMS(r), SummariseMS(c)
}

// bursts ADDs size pods at once on one VM, waits for all, then DELs them
// at once; per size, rounds times per variant, the variants' order rotating
// from round to round.
func bursts(ctx context.Context, cfg Config, pool *podPool, vs []variant) ([]*Burst, map[string][]outcome, error) {
	var out []*Burst
	largest := map[string][]outcome{} // ADDs of the largest burst, for the profile
	for si, size := range cfg.Bursts {
		byVariant := map[string]*Burst{}
		var adds, dels = map[string][]outcome{}, map[string][]outcome{}
		for _, v := range vs {
			b := &Burst{Variant: v.key, Size: size}
			byVariant[v.key] = b
			out = append(out, b)
		}
		for r := 0; r < cfg.BurstRounds; r++ {
			for _, v := range rotate(vs, si+r) {
				if err := ctx.Err(); err != nil {
					return nil, nil, err
				}
				tag := fmt.Sprintf("b%d-%d", size, r)
				ra, addWall := concurrently(size, func(i int) outcome {
					res, c := v.node.add(ctx, runtimeConf(v.key, tag, i, pool.path(i)))
					o := outcome{call: c}
					if c.Err == nil {
						o.ip = resultIP(res)
					}
					return o
				})
				rd, delWall := concurrently(size, func(i int) outcome {
					return outcome{call: v.node.del(ctx, runtimeConf(v.key, tag, i, pool.path(i)))}
				})
				round := BurstRound{AddWallMS: ms(addWall), DelWallMS: ms(delWall)}
				var ips []netip.Addr
				b := byVariant[v.key]
				for _, o := range ra {
					if o.Err != nil {
						round.AddFailures++
						if len(b.FirstErrors) < 3 {
							b.FirstErrors = append(b.FirstErrors, "ADD: "+o.Err.Error())
						}
					} else {
						ips = append(ips, o.ip)
					}
				}
				for _, o := range rd {
					if o.Err != nil {
						round.DelFailures++
						if len(b.FirstErrors) < 3 {
							b.FirstErrors = append(b.FirstErrors, "DEL: "+o.Err.Error())
						}
					}
				}
				round.Duplicates = Duplicates(ips)
				b.Rounds = append(b.Rounds, round)
				adds[v.key] = append(adds[v.key], ra...)
				dels[v.key] = append(dels[v.key], rd...)
				cfg.logf("burst %d %s round %d: ADD all %.0f ms, DEL all %.0f ms, failures %d+%d, duplicates %d",
					size, v.key, r+1, round.AddWallMS, round.DelWallMS, round.AddFailures, round.DelFailures, round.Duplicates)
			}
		}
		for _, v := range vs {
			b := byVariant[v.key]
			var aw, dw []float64
			for _, r := range b.Rounds {
				aw = append(aw, r.AddWallMS)
				dw = append(dw, r.DelWallMS)
				b.Failures += r.AddFailures + r.DelFailures
				b.Duplicates += r.Duplicates
			}
			b.AddWallMS, b.DelWallMS = SummariseMS(aw), SummariseMS(dw)
			b.AddMS, _, _, _ = callStats(adds[v.key])
			b.DelMS, _, _, _ = callStats(dels[v.key])
			b.AddSamplesMS, b.DelSamplesMS = samples(adds[v.key]), samples(dels[v.key])
			if si == len(cfg.Bursts)-1 {
				largest[v.key] = adds[v.key]
			}
		}
	}
	return out, largest, nil
}

// concurrently runs fn(0..n-1) in n goroutines released together and
// returns the results and the time from the release to the last return.
func concurrently(n int, fn func(i int) outcome) ([]outcome, time.Duration) {
	out := make([]outcome, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			out[i] = fn(i)
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return out, time.Since(t0)
}

// footprint ADDs n pods per variant one at a time (interleaved), then DELs
// them, each plugin under GNU time, and returns the peak RSS per call.
func footprint(ctx context.Context, cfg Config, pool *podPool, vs []variant, timeDir string, n int) (map[string]*Footprint, error) {
	out := map[string]*Footprint{}
	adds, dels := map[string][]outcome{}, map[string][]outcome{}
	nodes := map[string]*node{}
	for _, v := range vs {
		nd := *v.node
		nd.timeDir = timeDir
		nodes[v.key] = &nd
	}
	for _, verb := range []string{"ADD", "DEL"} {
		for i := 0; i < n; i++ {
			for _, k := range rotate(indexes(len(vs)), i) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				v := vs[k]
				rt := runtimeConf(v.key, "rss", i, pool.path(k*n+i))
				if verb == "ADD" {
					_, c := nodes[v.key].add(ctx, rt)
					adds[v.key] = append(adds[v.key], outcome{call: c})
				} else {
					dels[v.key] = append(dels[v.key], outcome{call: nodes[v.key].del(ctx, rt)})
				}
			}
		}
	}
	for _, v := range vs {
		_, _, a, _ := callStats(adds[v.key])
		_, _, d, _ := callStats(dels[v.key])
		out[v.key] = &Footprint{Variant: v.key, AddRSSMB: a, DelRSSMB: d}
		for _, o := range append(adds[v.key], dels[v.key]...) {
			if o.Err != nil {
				return nil, fmt.Errorf("%s: %w", v.key, o.Err)
			}
		}
	}
	cfg.logf("footprint: peak RSS of %d ADDs and DELs per variant under %s", n, gnuTime)
	return out, nil
}
