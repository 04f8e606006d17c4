package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/datapath"
)

// Run builds a lab, runs every benchmark cfg asks for and removes the lab
// again, whatever happens; cancelling ctx stops the run early.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the benchmarks need root, for network namespaces")
	}
	for _, bin := range []string{"azure-vnet", "vnetd", "bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("find plugin %s in %s (run make build): %w", bin, cfg.BinDir, err)
		}
	}
	largest := slices.Max(cfg.Bursts)
	if cfg.Secondaries < largest || cfg.Secondaries < cfg.Pods {
		return nil, fmt.Errorf("secondaries %d: fewer than the largest burst (%d) or the pods (%d)", cfg.Secondaries, largest, cfg.Pods)
	}
	start := time.Now()
	res = &Results{Version: buildinfo.Version, Command: cfg.Command, Quick: cfg.Quick, Started: start.UTC()}
	res.Machine = describeMachine()
	res.Machine.LoadBefore = loadavg()
	res.Machine.BusyBefore = busy(time.Second)
	res.Params = Params{Pods: cfg.Pods, Bursts: cfg.Bursts, BurstRounds: cfg.BurstRounds, Secondaries: cfg.Secondaries,
		IperfSeconds: cfg.IperfSeconds, LatencySeconds: cfg.LatencySeconds, DatapathRounds: cfg.DatapathRounds, FootprintCalls: footprintCalls(cfg),
		CNIVersion: cniVersion, OurConf: string(ourConflist(datapath.ModeBridge)), RefConf: string(refConflist("<scratch>/b1/host-local"))}

	cfg.logf("building the lab: 7 VMs, %d secondary addresses on each pod VM's NIC", cfg.Secondaries)
	l, err := newLab(cfg.BinDir, cfg.WorkDir, cfg.Secondaries)
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	defer func() {
		cfg.logf("removing the lab %s", l.spec.Name)
		if cerr := l.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove lab: %w", cerr))
		}
	}()
	cfg.logf("lab %s: namespaces %s-*, scratch %s", l.spec.Name, l.spec.Name, l.dir)

	bridge, err := l.ourNode(vmBridge, datapath.ModeBridge)
	if err != nil {
		return nil, err
	}
	ref, err := l.refNode(vmBridge)
	if err != nil {
		return nil, err
	}
	transparent, err := l.ourNode(vmTransparent, datapath.ModeTransparent)
	if err != nil {
		return nil, err
	}
	agent, agentCmd, err := l.agentNode(ctx, vmAgent)
	if err != nil {
		return nil, err
	}
	vs := []variant{{VariantBridge, bridge}, {VariantReference, ref}, {VariantTransparent, transparent}, {VariantAgent, agent}}

	poolSize := max(len(vs)*cfg.Pods, largest)
	cfg.logf("creating %d pod namespaces", poolSize)
	pool, err := l.newPodPool(ctx, poolSize)
	if err != nil {
		return nil, fmt.Errorf("create pod namespaces: %w", err)
	}

	setups, adds, dels, err := sequential(ctx, cfg, pool, vs)
	if err != nil {
		return nil, fmt.Errorf("sequential setup: %w", err)
	}
	for _, v := range Variants {
		res.Setup = append(res.Setup, setups[v])
	}
	for _, s := range res.Setup {
		cfg.logf("sequential %s: ADD p50 %.2f ms p99 %.2f ms, DEL p50 %.2f ms p99 %.2f ms, failures %d",
			s.Variant, s.AddMS.P50, s.AddMS.P99, s.DelMS.P50, s.DelMS.P99, s.Failures)
	}

	fp, err := footprint(ctx, cfg, pool, vs, l.dir, res.Params.FootprintCalls)
	if err != nil {
		return nil, fmt.Errorf("footprint: %w", err)
	}
	for _, v := range Variants {
		f := fp[v]
		f.AddCPUMS, f.DelCPUMS = setups[v].AddCPUMS, setups[v].DelCPUMS
		res.Footprint = append(res.Footprint, f)
	}

	bs, burstAdds, err := bursts(ctx, cfg, pool, vs)
	if err != nil {
		return nil, fmt.Errorf("bursts: %w", err)
	}
	res.Bursts = bs
	res.AgentRSSMB, res.AgentPeakRSSMB = processRSS(agentCmd.Process.Pid)
	cfg.logf("vnetd: RSS %.1f MB, peak %.1f MB", res.AgentRSSMB, res.AgentPeakRSSMB)

	for _, v := range ours {
		res.Profiles = append(res.Profiles,
			profileOf(v, "ADD", "sequential", "azure-vnet", adds[v]),
			profileOf(v, "DEL", "sequential", "azure-vnet", dels[v]),
			profileOf(v, "ADD", fmt.Sprintf("burst %d", largest), "azure-vnet", burstAdds[v]))
	}

	if cfg.DatapathRounds == 0 {
		cfg.logf("datapath: skipped")
		res.Machine.LoadAfter = loadavg()
		res.Machine.BusyAfter = busy(time.Second)
		res.Targets = Targets(res)
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}
	cfg.logf("datapath: attaching pods")
	bridgePeer, err := l.ourNode(vmBridgePeer, datapath.ModeBridge)
	if err != nil {
		return nil, err
	}
	transparentPeer, err := l.ourNode(vmTransparentP, datapath.ModeTransparent)
	if err != nil {
		return nil, err
	}
	paths := []pathSpec{{mode: ModeRaw, kind: KindVMVM, from: l.vmEndpoint(vmRaw), to: l.vmEndpoint(vmRawPeer)}}
	for _, m := range []struct {
		mode, vm, peer string
		n, np          *node
	}{
		{datapath.ModeBridge, vmBridge, vmBridgePeer, bridge, bridgePeer},
		{datapath.ModeTransparent, vmTransparent, vmTransparentP, transparent, transparentPeer},
	} {
		a, b, x, err := l.datapathPods(ctx, m.mode, m.vm, m.peer, m.n, m.np)
		if err != nil {
			return nil, err
		}
		paths = append(paths,
			pathSpec{mode: m.mode, kind: KindVMVM, from: l.vmEndpoint(m.vm), to: l.vmEndpoint(m.peer)},
			pathSpec{mode: m.mode, kind: KindPodPodCross, from: a, to: x},
			pathSpec{mode: m.mode, kind: KindPodPodLocal, from: a, to: b})
	}
	if res.Datapath, err = l.datapath(ctx, cfg, paths); err != nil {
		return nil, fmt.Errorf("datapath: %w", err)
	}

	res.Machine.LoadAfter = loadavg()
	res.Machine.BusyAfter = busy(time.Second)
	res.Targets = Targets(res)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// processRSS is a process's resident size and its peak, in MB.
func processRSS(pid int) (rss, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb float64
		if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &kb); err == nil {
			rss = kb * 1024 / 1e6
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %f kB", &kb); err == nil {
			peak = kb * 1024 / 1e6
		}
	}
	return rss, peak
}

// footprintCalls is how many calls per variant and command the footprint
// phase measures.
func footprintCalls(cfg Config) int {
	if cfg.Quick {
		return min(cfg.Pods, 3)
	}
	return min(cfg.Pods, 20)
}
