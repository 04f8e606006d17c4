package runtimes

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// Debian's containernetworking-plugins, the reference.
const refCNIDir = "/usr/lib/cni"

// refConflist is the usual bridge + host-local + portmap network, with the
// host-local store under dir and masquerading on, like azure-vnet's SNAT.
func refConflist(name, dir string) []byte {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       name,
		"plugins": []any{
			map[string]any{"type": "bridge", "bridge": "cnibench0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.99.0.0/24"}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}}, "dataDir": filepath.Join(dir, "host-local")}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		},
	}, "", "  ")
	return append(b, '\n')
}

// refNode is a VM with the reference plugins and network instead of ours.
func refNode(t *testing.T, vm string) runtimes.Node {
	t.Helper()
	dir := filepath.Join(theLab.VMDir(vm), "ref.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-benchbr.conflist"), refConflist("benchbr", theLab.VMDir(vm)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := node(vm)
	n.Name += "-ref"
	n.CNIBinDir, n.CNIConfDir = refCNIDir, dir
	return n
}

// benchOp is one sandbox created and deleted.
type benchOp func(ctx context.Context, i int) error

type benchRow struct {
	runtime, what string
	ours, ref     benchOp
}

// TestBench measures the median sandbox create+delete time per runtime with
// our plugins and with Debian's bridge+host-local, A/B interleaved in one
// run, and writes the table into the file VNETCNI_BENCH names
// (docs/runtimes.md, between its bench markers). No timing is asserted.
func TestBench(t *testing.T) {
	out := os.Getenv("VNETCNI_BENCH")
	if out == "" {
		t.Skip("set VNETCNI_BENCH=<markdown file> to measure (make bench-runtimes)")
	}
	if _, err := os.Stat(filepath.Join(refCNIDir, "bridge")); err != nil {
		t.Fatalf("Debian's containernetworking-plugins are not in %s: run scripts/setup-runtimes.sh", refCNIDir)
	}
	n := 15
	if v, err := strconv.Atoi(os.Getenv("VNETCNI_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	ctx := testCtx(t, 25*time.Minute)
	loadStart := loadAverage()
	before := map[string]kernelState{vmA: vmState(t, vmA), vmB: vmState(t, vmB), vmM: vmState(t, vmM)}
	rows := []benchRow{
		containerdBench(t, ctx),
		podmanBench(t, ctx),
		dockerBench(t, ctx),
		cnitoolBench(t, ctx),
	}
	type result struct {
		row       benchRow
		ours, ref time.Duration
	}
	var results []result
	for _, r := range rows {
		var ours, ref []time.Duration
		// One warm-up each (image unpack, first-ADD network setup), then
		// alternate which goes first so neither always follows the other.
		for i := -1; i < n; i++ {
			first, second := r.ours, r.ref
			if i%2 != 0 {
				first, second = r.ref, r.ours
			}
			d1, err := timed(ctx, first, i)
			if err != nil {
				t.Fatalf("%s: %v", r.runtime, err)
			}
			d2, err := timed(ctx, second, i)
			if err != nil {
				t.Fatalf("%s: %v", r.runtime, err)
			}
			if i < 0 {
				continue
			}
			if i%2 != 0 {
				d1, d2 = d2, d1
			}
			ours, ref = append(ours, d1), append(ref, d2)
		}
		res := result{row: r, ours: median(ours), ref: median(ref)}
		t.Logf("%-10s ours %v, bridge+host-local %v (n=%d)", r.runtime, res.ours, res.ref, n)
		results = append(results, res)
	}
	for vm, b := range before {
		assertBack(t, vm, b)
	}

	var tb strings.Builder
	fmt.Fprintf(&tb, "Measured %s on %s, %d CPUs, kernel %s; n=%d per cell after one warm-up, A/B interleaved; "+
		"1-minute load average %s at the start, %s at the end (other work on the machine inflates every cell alike).\n\n",
		time.Now().UTC().Format("2006-01-02"), hostDescription(), numCPU(), kernel(), n, loadStart, loadAverage())
	fmt.Fprintf(&tb, "| runtime (client) | one sandbox | vnetcni: azure-vnet + azure-vnet-ipam + portmap | Debian 1.1.1: bridge + host-local + portmap | difference |\n")
	fmt.Fprintf(&tb, "|---|---|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&tb, "| %s | %s | %s | %s | %+.0f ms |\n", r.row.runtime, r.row.what, ms(r.ours), ms(r.ref), float64(r.ours-r.ref)/float64(time.Millisecond))
	}
	if err := replaceBetween(out, tb.String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s:\n%s", out, tb.String())
}

func timed(ctx context.Context, op benchOp, i int) (time.Duration, error) {
	start := time.Now()
	err := op(ctx, i)
	return time.Since(start), err
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

const benchBegin, benchEnd = "<!-- bench:begin -->", "<!-- bench:end -->"

// replaceBetween puts text between the bench markers of a markdown file,
// creating the file (or the markers) when missing.
func replaceBetween(path, text string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, benchBegin), strings.Index(s, benchEnd)
	block := benchBegin + "\n" + text + benchEnd
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	} else {
		s = s[:i] + block + s[j+len(benchEnd):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func hostDescription() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	if m := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(b); m != nil {
		return strings.TrimSpace(string(m[1]))
	}
	return "unknown CPU"
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func containerdBench(t *testing.T, ctx context.Context) benchRow {
	t.Helper()
	start := func(n runtimes.Node, dir string) *cri.Client {
		ctd, err := runtimes.StartContainerd(ctx, n, dir, runtimes.ContainerdOptions{CRI: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ctd.Stop(context.Background()); err != nil {
				t.Errorf("stop containerd: %v", err)
			}
		})
		if err := ctd.EnsurePauseImageTar(ctx, pauseTar); err != nil {
			t.Fatal(err)
		}
		c, err := cri.Dial(ctd.Socket())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	op := func(c *cri.Client, parent string) benchOp {
		return func(ctx context.Context, i int) error {
			id, err := c.RunPodSandbox(ctx, cri.Sandbox{Name: fmt.Sprintf("bench-%d", i+1), Namespace: "bench", UID: randHex(16), CgroupParent: parent})
			if err != nil {
				return err
			}
			if err := c.StopPodSandbox(ctx, id); err != nil {
				return err
			}
			return c.RemovePodSandbox(ctx, id)
		}
	}
	ours, ref := node(vmA), refNode(t, vmA)
	co := start(ours, filepath.Join(theLab.VMDir(vmA), "containerd"))
	cr := start(ref, filepath.Join(theLab.VMDir(vmA), "containerd-ref"))
	return benchRow{runtime: "containerd 1.6 (CRI)", what: "RunPodSandbox + StopPodSandbox + RemovePodSandbox",
		ours: op(co, ours.CgroupParent("containerd")), ref: op(cr, ref.CgroupParent("containerd"))}
}

func podmanBench(t *testing.T, ctx context.Context) benchRow {
	t.Helper()
	start := func(n runtimes.Node, dir, network string) benchOp {
		pm, err := runtimes.NewPodman(n, dir, network)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := pm.Cleanup(context.Background()); err != nil {
				t.Errorf("podman cleanup: %v", err)
			}
		})
		if err := pm.Load(ctx, pauseTar); err != nil {
			t.Fatal(err)
		}
		return func(ctx context.Context, i int) error {
			id, err := pm.Run(ctx, "run", "--detach", "--network", network, "--cgroup-parent", pm.CgroupParent(), runtimes.PauseImage)
			if err != nil {
				return err
			}
			_, err = pm.Run(ctx, "rm", "--force", "--time", "0", id)
			return err
		}
	}
	return benchRow{runtime: "podman 4.3 (CNI)", what: "podman run -d + podman rm -f",
		ours: start(node(vmA), filepath.Join(theLab.VMDir(vmA), "podman"), "azure"),
		ref:  start(refNode(t, vmA), filepath.Join(theLab.VMDir(vmA), "podman-ref"), "benchbr")}
}

func dockerBench(t *testing.T, ctx context.Context) benchRow {
	t.Helper()
	k, err := runtimes.StartDocker(ctx, node(vmB), filepath.Join(theLab.VMDir(vmB), "docker"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Stop(context.Background()); err != nil {
			t.Errorf("stop docker: %v", err)
		}
	})
	if err := k.Load(ctx, pauseTar); err != nil {
		t.Fatal(err)
	}
	ref := refNode(t, vmB)
	op := func(env []string) benchOp {
		return func(ctx context.Context, i int) error {
			name := "bench-" + randHex(8)
			if _, err := dockerRunEnv(ctx, k, vmB, env, name, "bench", runtimes.PauseImage); err != nil {
				return err
			}
			_, err := dockerRunEnv(ctx, k, vmB, env, "--remove", name)
			return err
		}
	}
	return benchRow{runtime: "Docker 20.10 (docker-run.sh)", what: "docker run --network none + CNI ADD; CNI DEL + docker rm",
		ours: op(nil),
		ref:  op([]string{"CNI_PATH=" + ref.CNIBinDir, "CNI_CONF_DIR=" + ref.CNIConfDir})}
}

func cnitoolBench(t *testing.T, ctx context.Context) benchRow {
	t.Helper()
	vm := vmM
	ns := theLab.Name + "-" + vm + "-bench"
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	ref := refNode(t, vm)
	op := func(network, confDir, binDir string) benchOp {
		return func(ctx context.Context, i int) error {
			for _, verb := range []string{"add", "del"} {
				cmd := exec.CommandContext(ctx, "nsenter", "--net="+vmNetNS(vm), "--", cnitool, verb, network, netns.Path(ns))
				cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+binDir)
				cmd.Env = append(cmd.Env, theLab.Runner(vm).Env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("cnitool %s %s: %w: %s", verb, network, err, out)
				}
			}
			return nil
		}
	}
	d := theLab.VMDir(vm)
	return benchRow{runtime: "cnitool 1.3.1 (libcni)", what: "cnitool add + cnitool del (one namespace)",
		ours: op("azure", filepath.Join(d, "net.d"), filepath.Join(d, "bin")),
		ref:  op("benchbr", ref.CNIConfDir, ref.CNIBinDir)}
}
