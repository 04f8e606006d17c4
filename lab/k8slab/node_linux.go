package k8slab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// kernelTunables are the sysctls kubelet insists on (it rewrites them, or
// with protectKernelDefaults refuses to start). They are not per network
// namespace: a kubelet on a shared machine must not change them. The node
// supervisor runs in a private mount namespace and shows kubelet files with
// the values it wants instead.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// maskKernelTunables bind-mounts files holding kubelet's values over the
// kernel's, in the calling process's (private) mount namespace.
func maskKernelTunables(dir string) error {
	if err := unix.Mount("", "/proc", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make /proc private: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for k, v := range kernelTunables {
		f := filepath.Join(dir, strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		if err := unix.Mount(f, filepath.Join("/proc/sys", k), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/sys/%s: %w", k, err)
		}
	}
	return nil
}

// NodeCgroup is the cgroup (in every hierarchy) holding a node supervisor
// and everything it starts but the pods: containerd, its shims, kubelet,
// kube-proxy. PodCgroup is kubelet's cgroup root for the pods.
func NodeCgroup(lab, node string) string { return "/vnetcni-" + lab + "-" + node + "-node" }
func PodCgroup(lab, node string) string  { return "/vnetcni-" + lab + "-" + node + "-pods" }

// RunNode runs a lab VM's Kubernetes node — containerd with its CRI plugin
// and the VM's azure-vnet plugins, kubelet, kube-proxy (nftables mode) —
// until ctx ends or one of them exits. It must be started in the VM's
// network namespace and a private mount namespace (see StartNode). On the
// way out it removes every pod sandbox through the CRI, so the plugins run
// DEL and the VM's pool is whole again.
func RunNode(ctx context.Context, c *Cluster, name string) error {
	var n *Node
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			n = &c.Nodes[i]
		}
	}
	if n == nil {
		return fmt.Errorf("no node %q in the cluster", name)
	}
	dir := c.nodeDir(name)
	for _, d := range []string{dir, filepath.Join(dir, "kubelet"), filepath.Join(dir, "pod-logs"), filepath.Join(dir, "containerd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := joinCgroup(NodeCgroup(c.Lab, name)); err != nil {
		return err
	}
	// kubelet wants its cgroup root to exist.
	if err := makeCgroup(PodCgroup(c.Lab, name)); err != nil {
		return err
	}
	if err := maskKernelTunables(filepath.Join(dir, "sysctl")); err != nil {
		return err
	}
	p := c.pki()
	ids, err := p.ReadTokens()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", c.VIP, APIServerPort)
	if err := p.Kubeconfig(filepath.Join(dir, "kubelet.kubeconfig"), server, ids["system:node:"+name]); err != nil {
		return err
	}
	if err := p.Kubeconfig(filepath.Join(dir, "kube-proxy.kubeconfig"), server, ids["system:kube-proxy"]); err != nil {
		return err
	}
	log := func(what string) string { return filepath.Join(dir, what+".log") }
	var cs children
	defer func() {
		cs.stop(10 * time.Second)
		killCgroup(NodeCgroup(c.Lab, name))
	}()

	// containerd, with the VM's CNI directories and plugin environment.
	cdir := filepath.Join(dir, "containerd")
	rn := runtimes.Node{Name: c.Lab + "-" + name, NetNS: n.NetNS, CNIBinDir: n.CNIBinDir, CNIConfDir: n.CNIConf,
		Env: []string{store.EnvDir + "=" + n.StateDir, "AZURE_VNET_LOG_FILE=" + n.LogFile}}
	cfg := filepath.Join(cdir, "config.toml")
	snap := runtimes.Snapshotter(cdir)
	if err := os.WriteFile(cfg, []byte(runtimes.ContainerdConfig(cdir, rn, snap, true)), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(cdir, "containerd.sock")
	ctrd, err := cs.start("containerd", log("containerd"), rn.Env, "containerd", "--config", cfg)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "containerd", ctrd, 60*time.Second, func() error {
		cl, err := cri.Dial(sock)
		if err != nil {
			return err
		}
		defer cl.Close()
		_, err = cl.Version(ctx)
		return err
	}); err != nil {
		return err
	}
	defer removeSandboxes(sock)
	for _, img := range []string{"pause.tar", "echo.tar", "coredns.tar"} {
		cmd := exec.CommandContext(ctx, "ctr", "--address", sock, "--namespace", runtimes.Namespace, "images", "import",
			"--snapshotter", snap, c.path("images", img))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("import %s: %v: %s", img, err, out)
		}
	}

	kcfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kcfg, []byte(kubeletConfig(c, n, sock, dir)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 168.63.129.16\n"), 0o644); err != nil {
		return err
	}
	kubelet, err := cs.start("kubelet", log("kubelet"), nil, c.bin("kubelet"),
		"--config="+kcfg, "--kubeconfig="+filepath.Join(dir, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(dir, "kubelet"), "--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+name, "--node-ip="+n.IP.String(), "--v=1")
	if err != nil {
		return err
	}
	pcfg := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(pcfg, []byte(kubeProxyConfig(name, filepath.Join(dir, "kube-proxy.kubeconfig"), c)), 0o644); err != nil {
		return err
	}
	if _, err := cs.start("kube-proxy", log("kube-proxy"), nil, c.bin("kube-proxy"), "--config="+pcfg, "--v=1"); err != nil {
		return err
	}
	if err := waitFor(ctx, "kubelet", kubelet, 120*time.Second, httpOK("http://127.0.0.1:10248/healthz")); err != nil {
		return err
	}
	fmt.Printf("node %s running: containerd, kubelet, kube-proxy\n", name)
	select {
	case <-ctx.Done():
		return nil
	case ch := <-cs.exited():
		return fmt.Errorf("%s exited: %v (log %s)", ch.name, ch.err, log(ch.name))
	}
}

// MaxPodsSlack is how many more pods kubelet admits than the NIC has
// secondary addresses: room for host-network pods, which use the node's
// own address. Filling a node with pod-network pods therefore runs the pool
// dry, and the next one shows the plugin's "no free address" error.
const MaxPodsSlack = 2

func kubeletConfig(c *Cluster, n *Node, sock, dir string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
maxPods: %d
podLogsDir: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
protectKernelDefaults: false
makeIPTablesUtilChains: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
serializeImagePulls: false
`, PodCgroup(c.Lab, n.Name), sock, c.DNSServiceIP, filepath.Join(dir, "resolv.conf"), n.MaxPods+MaxPodsSlack, filepath.Join(dir, "pod-logs"))
}

func kubeProxyConfig(name, kubeconfig string, c *Cluster) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: %s
clientConnection: {kubeconfig: %s}
clusterCIDR: %s
detectLocalMode: ClusterCIDR
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, name, kubeconfig, c.PodSubnet)
}

// removeSandboxes stops and removes every pod sandbox through the CRI, so
// the plugins run DEL for each.
func removeSandboxes(sock string) {
	cl, err := cri.Dial(sock)
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids, err := cl.ListPodSandboxes(ctx)
	if err != nil {
		return
	}
	for _, id := range ids {
		_ = cl.StopPodSandbox(ctx, id)
		_ = cl.RemovePodSandbox(ctx, id)
	}
}

// cgroupRoots lists the mounted cgroup hierarchies.
func cgroupRoots() []string {
	roots := []string{runtimes.CgroupRoot}
	ents, _ := os.ReadDir(runtimes.CgroupRoot)
	for _, e := range ents {
		if e.IsDir() {
			roots = append(roots, filepath.Join(runtimes.CgroupRoot, e.Name()))
		}
	}
	var out []string
	for _, r := range roots {
		if _, err := os.Stat(filepath.Join(r, "cgroup.procs")); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// makeCgroup creates cgroup cg in every hierarchy.
func makeCgroup(cg string) error {
	var errs []error
	for _, r := range cgroupRoots() {
		d := filepath.Join(r, cg)
		if err := os.MkdirAll(d, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		// A cgroup v1 cpuset takes no task until it has CPUs and memory
		// nodes: inherit the parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if cur, err := os.ReadFile(filepath.Join(d, f)); err == nil && len(strings.TrimSpace(string(cur))) == 0 {
				if v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f)); err == nil {
					_ = os.WriteFile(filepath.Join(d, f), v, 0o644)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// joinCgroup moves the calling process into cgroup cg of every hierarchy.
func joinCgroup(cg string) error {
	if err := makeCgroup(cg); err != nil {
		return err
	}
	var errs []error
	for _, r := range cgroupRoots() {
		d := filepath.Join(r, cg)
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("join %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// CgroupPIDs lists the processes in cgroup cg (and below) of any hierarchy.
func CgroupPIDs(cg string) []int {
	seen := map[int]bool{}
	for _, r := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(r, cg), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var out []int
	for pid := range seen {
		if pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

// killCgroup SIGKILLs every process left in cgroup cg but the caller.
func killCgroup(cg string) {
	for _, pid := range CgroupPIDs(cg) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
