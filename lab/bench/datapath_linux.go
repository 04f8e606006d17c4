package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Ports of the servers the datapath benchmark starts.
const (
	iperfPort    = "5201"
	sockperfPort = "11111"
)

// endpoint is a network namespace (by name) and the address to reach it on.
type endpoint struct {
	ns   string
	ip   netip.Addr
	desc string
}

// pathSpec is a client and a server endpoint.
type pathSpec struct {
	mode, kind string
	from, to   endpoint
}

// datapathPods attaches the pods the datapath benchmark uses with our
// plugin: two on the first VM of a mode, one on its peer.
func (l *lab) datapathPods(ctx context.Context, mode, vm, peer string, n, np *node) (a, b, x endpoint, err error) {
	add := func(nd *node, vmName, pod string, i int) (endpoint, error) {
		name, err := l.podNS("dp-" + vmName + "-" + pod)
		if err != nil {
			return endpoint{}, err
		}
		res, c := nd.add(ctx, runtimeConf(mode, "dp", i, netns.Path(name)))
		if c.Err != nil {
			return endpoint{}, fmt.Errorf("ADD datapath pod %s on %s: %w", pod, vmName, c.Err)
		}
		ip := resultIP(res)
		return endpoint{ns: name, ip: ip, desc: fmt.Sprintf("pod %s on %s (%s)", pod, vmName, ip)}, nil
	}
	if a, err = add(n, vm, "a", 0); err != nil {
		return
	}
	if b, err = add(n, vm, "b", 1); err != nil {
		return
	}
	x, err = add(np, peer, "x", 2)
	return
}

func (l *lab) vmEndpoint(vm string) endpoint {
	v := l.vm(vm)
	return endpoint{ns: l.f.VMNetNS(vm), ip: v.PrimaryIP, desc: fmt.Sprintf("VM %s (%s)", vm, v.PrimaryIP)}
}

// datapath measures every path in rounds, the paths' order rotating from
// round to round so the raw fabric and the pod paths alternate.
func (l *lab) datapath(ctx context.Context, cfg Config, paths []pathSpec) ([]*Path, error) {
	started := map[string]bool{}
	for _, p := range paths {
		key := p.to.ns + "/" + p.to.ip.String()
		if started[key] {
			continue
		}
		started[key] = true
		if _, err := l.start(p.to.ns, "iperf3", "-s", "-B", p.to.ip.String(), "-p", iperfPort); err != nil {
			return nil, err
		}
		if _, err := l.start(p.to.ns, "sockperf", "sr", "--tcp", "-i", p.to.ip.String(), "-p", sockperfPort); err != nil {
			return nil, err
		}
	}
	out := make([]*Path, len(paths))
	for i, p := range paths {
		out[i] = &Path{Mode: p.mode, Kind: p.kind, From: p.from.desc, To: p.to.desc}
	}
	for r := 0; r < cfg.DatapathRounds; r++ {
		for _, i := range rotate(indexes(len(paths)), r) {
			p, res := paths[i], out[i]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			g1, err1 := iperf(ctx, p, 1, cfg.IperfSeconds)
			g4, err4 := iperf(ctx, p, 4, cfg.IperfSeconds)
			avg, p99, errRR := sockperf(ctx, p, cfg.LatencySeconds)
			for _, err := range []error{err1, err4, errRR} {
				if err != nil {
					res.Errors = append(res.Errors, err.Error())
				}
			}
			res.Gbps1 = append(res.Gbps1, g1)
			res.Gbps4 = append(res.Gbps4, g4)
			res.RTTus = append(res.RTTus, avg)
			res.RTT99 = append(res.RTT99, p99)
			cfg.logf("datapath %s %s round %d: %.2f Gbit/s (1 stream), %.2f Gbit/s (4 streams), RTT %.1f µs (p99 %.1f)",
				p.mode, p.kind, r+1, g1, g4, avg, p99)
		}
	}
	return out, nil
}

// retry runs a client until its server answers: a server just started
// may not listen yet, and iperf3 takes a moment between tests.
func retry(ctx context.Context, fn func() ([]byte, error)) ([]byte, error) {
	var out []byte
	var err error
	for i := 0; i < 50; i++ {
		out, err = fn()
		if err == nil || ctx.Err() != nil {
			return out, err
		}
		s := string(out)
		if !strings.Contains(s, "refused") && !strings.Contains(s, "busy") && !strings.Contains(s, "ECONNREFUSED") {
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out, err
}

// iperf runs an iperf3 TCP test and returns the receiver's throughput in
// Gbit/s. Equivalent to: ip netns exec FROM iperf3 -c TO -P N -t T -J.
func iperf(ctx context.Context, p pathSpec, streams, seconds int) (float64, error) {
	out, err := retry(ctx, func() ([]byte, error) {
		return run(ctx, p.from.ns, time.Duration(seconds+20)*time.Second, "iperf3", "-c", p.to.ip.String(), "-p", iperfPort,
			"-P", strconv.Itoa(streams), "-t", strconv.Itoa(seconds), "-J")
	})
	if err != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s, %d streams: %w: %s", p.from.desc, p.to.desc, streams, err, tail(out))
	}
	return parseIperf(out)
}

// sockperf runs a TCP ping-pong of 64-byte messages and returns the
// average and 99th percentile round-trip time in microseconds.
// Equivalent to: ip netns exec FROM sockperf ping-pong --tcp -i TO -m 64 --full-rtt.
func sockperf(ctx context.Context, p pathSpec, seconds int) (avg, p99 float64, err error) {
	out, err := retry(ctx, func() ([]byte, error) {
		return run(ctx, p.from.ns, time.Duration(seconds+20)*time.Second, "sockperf", "ping-pong", "--tcp",
			"-i", p.to.ip.String(), "-p", sockperfPort, "-t", strconv.Itoa(seconds), "-m", "64", "--full-rtt")
	})
	if err != nil {
		return 0, 0, fmt.Errorf("sockperf %s -> %s: %w: %s", p.from.desc, p.to.desc, err, tail(out))
	}
	return parseSockperf(out)
}
