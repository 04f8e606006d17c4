package k8slab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vnetcni/vnetcni/lab/daemon"
	"github.com/vnetcni/vnetcni/lab/ociimage"
	"github.com/vnetcni/vnetcni/lab/probe"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// Save writes the cluster's description to <dir>/cluster.json.
func (c *Cluster) Save() error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.path("cluster.json"), b, 0o644)
}

// Load reads a cluster's description.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, fmt.Errorf("read the lab's Kubernetes cluster: %w", err)
	}
	c := &Cluster{}
	return c, json.Unmarshal(b, c)
}

// Start brings the cluster up: certificates and tokens, local images, the
// control plane supervisor in its namespace, a node supervisor per VM, and
// kube-dns; it waits for the API server through the VIP, every node Ready
// and CoreDNS available. exe is the lab binary (vnetctl-lab), which the supervisors run as.
func Start(ctx context.Context, c *Cluster, exe string, progress io.Writer) error {
	step := func(what string) func(error) error {
		start := time.Now()
		fmt.Fprintf(progress, "[k8s] %s ... ", what)
		return func(err error) error {
			if err != nil {
				fmt.Fprintln(progress, "failed")
				return err
			}
			fmt.Fprintf(progress, "done in %s\n", time.Since(start).Round(time.Millisecond))
			return nil
		}
	}
	if err := c.CheckBinaries(); err != nil {
		return err
	}
	if err := c.Save(); err != nil {
		return err
	}
	done := step("certificates and tokens")
	if err := done(func() error { _, err := c.EnsurePKI(); return err }()); err != nil {
		return err
	}
	done = step("images (pause, echo, coredns)")
	if err := done(c.buildImages()); err != nil {
		return err
	}
	done = step("control plane in the API server subnet")
	if err := done(c.startControlPlane(ctx, exe)); err != nil {
		return err
	}
	done = step("RBAC for vnetd's network policy (ClusterRole vnetcni:vnetd)")
	if err := done(c.applyAgentRBAC(ctx)); err != nil {
		return err
	}
	done = step(fmt.Sprintf("%d nodes (containerd, kubelet, kube-proxy)", len(c.Nodes)))
	if err := done(c.startNodes(ctx, exe)); err != nil {
		return err
	}
	if c.podCIDRs() {
		done = step("nodes' spec.podCIDRs (the lab's node IPAM)")
		if err := done(c.assignPodCIDRs(ctx)); err != nil {
			return err
		}
	}
	done = step("kube-dns (CoreDNS)")
	return done(c.deployDNS(ctx))
}

// podCIDRs reports whether the nodes have pod CIDRs (overlay, kubenet).
func (c *Cluster) podCIDRs() bool { return len(c.Nodes) > 0 && c.Nodes[0].PodCIDR.IsValid() }

// assignPodCIDRs records each node's pod CIDR in its spec.podCIDRs, as
// kube-controller-manager's node IPAM (--allocate-node-cidrs) would, but
// with the blocks the lab planned: the conflists and the fabric's routes
// already carry them, and allocation in registration order would not
// match. A pod CIDR is set once; a node that has one keeps it.
func (c *Cluster) assignPodCIDRs(ctx context.Context) error {
	for _, n := range c.Nodes {
		out, err := c.Kubectl(ctx, "get", "node", n.Name, "-o", "jsonpath={.spec.podCIDR}")
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(out); got != "" {
			if got != n.PodCIDR.String() {
				return fmt.Errorf("node %s has pod CIDR %s, the lab planned %s", n.Name, got, n.PodCIDR)
			}
			continue
		}
		patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR, n.PodCIDR)
		if _, err := c.Kubectl(ctx, "patch", "node", n.Name, "--type=merge", "-p", patch); err != nil {
			return fmt.Errorf("set node %s's pod CIDR: %w", n.Name, err)
		}
	}
	return nil
}

// EnsurePKI creates the cluster's CA, the API server's certificate (for the
// VIP, the control plane's address, 127.0.0.1 and the kubernetes Service)
// and the components' tokens, once.
func (c *Cluster) EnsurePKI() (map[string]Identity, error) {
	var nodes []string
	for _, n := range c.Nodes {
		nodes = append(nodes, n.Name)
	}
	ips := []netip.Addr{c.VIP, c.ControlPlaneIP, netip.MustParseAddr("127.0.0.1"), KubernetesServiceIP}
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	return c.pki().Create(ips, dns, nodes)
}

// WriteAdminKubeconfig writes the operators' kubeconfig for a server URL.
func (c *Cluster) WriteAdminKubeconfig(server string) error {
	ids, err := c.EnsurePKI()
	if err != nil {
		return err
	}
	return c.pki().Kubeconfig(c.AdminKubeconfig(), server, ids["admin"])
}

// WriteAgentKubeconfigs writes each node's vnetd kubeconfig (before the
// agents start: they wait for the API server themselves).
func (c *Cluster) WriteAgentKubeconfigs() error {
	ids, err := c.EnsurePKI()
	if err != nil {
		return err
	}
	id, ok := ids[AgentUser]
	if !ok {
		return fmt.Errorf("the cluster's tokens (%s) have no %s: a lab made before vnetd enforced policy; remove it and make it anew", c.pki().Tokens(), AgentUser)
	}
	server := fmt.Sprintf("https://%s:%d", c.VIP, APIServerPort)
	for _, n := range c.Nodes {
		if err := os.MkdirAll(c.nodeDir(n.Name), 0o755); err != nil {
			return err
		}
		if err := c.pki().Kubeconfig(c.AgentKubeconfig(n.Name), server, id); err != nil {
			return err
		}
	}
	return nil
}

// applyAgentRBAC lets the agents read what network policy needs.
func (c *Cluster) applyAgentRBAC(ctx context.Context) error {
	m, err := manifests.ReadFile("vnetd-rbac.yaml")
	if err != nil {
		return err
	}
	_, err = c.KubectlStdin(ctx, m, "apply", "-f", "-")
	return err
}

func (c *Cluster) buildImages() error {
	dir := c.path("images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := runtimes.WritePauseImage(filepath.Join(c.ToolsDir, runtimes.PauseBinaryName), filepath.Join(dir, "pause.tar")); err != nil {
		return err
	}
	for _, im := range []struct{ file, ref, bin, path string }{
		{"echo.tar", EchoImage, filepath.Join(c.ToolsDir, "vnetcni-echo"), "vnetcni-echo"},
		{"coredns.tar", CoreDNSImage, c.bin("coredns"), "coredns"},
	} {
		b, err := os.ReadFile(im.bin)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.ref, err)
		}
		f, err := os.Create(filepath.Join(dir, im.file))
		if err != nil {
			return err
		}
		img := ociimage.Image{Name: im.ref, Entrypoint: []string{"/" + im.path}, Env: []string{"PATH=/"},
			Files: []ociimage.File{{Path: im.path, Mode: 0o755, Data: b}}}
		_, err = img.Write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("image %s: %w", im.ref, err)
		}
	}
	return nil
}

// supervisor is a long-lived process of the cluster: the control plane or a
// node, recorded by PID file and known by its lab or VM name.
type supervisor struct {
	daemon.Daemon
	log string
}

func (c *Cluster) controlPlaneSupervisor() supervisor {
	return supervisor{daemon.Daemon{Name: "controlplane", PIDFile: c.path("controlplane.pid"), Marker: c.Lab}, c.path("controlplane.log")}
}

func (c *Cluster) nodeSupervisor(name string) supervisor {
	return supervisor{daemon.Daemon{Name: "node " + name, PIDFile: c.path("node-" + name + ".pid"), Marker: name}, c.path("node-" + name + ".log")}
}

// start runs bin with args in the namespace at netns, unless the supervisor
// already runs.
func (s supervisor) start(netns string, bin string, args ...string) error {
	if _, ok := s.Running(); ok {
		return nil
	}
	_, err := s.Start(netns, nil, s.log, bin, args...)
	return err
}

func (c *Cluster) startControlPlane(ctx context.Context, exe string) error {
	s := c.controlPlaneSupervisor()
	if err := s.start(c.ControlPlaneNetNS, exe, "k8s", "controlplane", "--name", c.Lab); err != nil {
		return err
	}
	// Ready when a node reaches the API server through the VIP.
	from := c.Nodes[0].NetNS
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return probe.DialTCP(from, ap, 2*time.Second)
	}
	url := fmt.Sprintf("https://%s:%d/readyz", c.VIP, APIServerPort)
	return c.waitSupervised(ctx, s, 180*time.Second, httpsOK(c.pki().CACert(), url, dial))
}

// failedLogs is the end of each of a node's component logs its
// supervisor's log names (the lab's directory is gone after a failed up).
func (c *Cluster) failedLogs(node, supervisorLog string) string {
	var out strings.Builder
	logs, _ := filepath.Glob(filepath.Join(c.nodeDir(node), "*.log"))
	for _, l := range logs {
		if strings.Contains(supervisorLog, l) {
			b, _ := os.ReadFile(l)
			fmt.Fprintf(&out, "%s:\n%s", l, lastLines(string(b), 25))
		}
	}
	return out.String()
}

func (c *Cluster) startNodes(ctx context.Context, exe string) error {
	for _, n := range c.Nodes {
		s := c.nodeSupervisor(n.Name)
		if err := s.start(n.NetNS, "unshare", "--mount", "--propagation", "private", "--",
			exe, "k8s", "node", "--name", c.Lab, "--vm", n.Name); err != nil {
			return err
		}
	}
	var dead error
	err := waitFor(ctx, "nodes Ready", nil, 240*time.Second, func() error {
		for _, n := range c.Nodes {
			if s := c.nodeSupervisor(n.Name); !isRunning(s) {
				b, _ := os.ReadFile(s.log)
				dead = fmt.Errorf("node %s stopped; %s:\n%s%s", n.Name, s.log, lastLines(string(b), 15), c.failedLogs(n.Name, string(b)))
				return nil
			}
		}
		out, err := c.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if err != nil {
			return err
		}
		ready := 0
		for _, f := range strings.Fields(out) {
			if strings.HasSuffix(f, "=True") {
				ready++
			}
		}
		if ready < len(c.Nodes) {
			return fmt.Errorf("%d of %d nodes Ready (%s)", ready, len(c.Nodes), strings.TrimSpace(out))
		}
		return nil
	})
	if dead != nil {
		return dead
	}
	return err
}

func isRunning(s supervisor) bool { _, ok := s.Running(); return ok }

func (c *Cluster) waitSupervised(ctx context.Context, s supervisor, timeout time.Duration, check func() error) error {
	err := waitFor(ctx, s.Name, nil, timeout, func() error {
		if _, ok := s.Running(); !ok {
			return fmt.Errorf("%s exited", s.Name)
		}
		return check()
	})
	if err != nil {
		b, _ := os.ReadFile(s.log)
		return fmt.Errorf("%w; %s:\n%s", err, s.log, lastLines(string(b), 20))
	}
	return nil
}

func (c *Cluster) deployDNS(ctx context.Context) error {
	m, err := c.CoreDNSManifest()
	if err != nil {
		return err
	}
	if _, err := c.KubectlStdin(ctx, m, "apply", "-f", "-"); err != nil {
		return err
	}
	_, err = c.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s")
	return err
}

// Stop ends the node supervisors (which remove their pods through the CRI)
// and the control plane, then anything left in their cgroups.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		_ = c.nodeSupervisor(n.Name).Stop(60 * time.Second)
	}
	_ = c.controlPlaneSupervisor().Stop(20 * time.Second)
	for _, n := range c.Nodes {
		for _, cg := range []string{NodeCgroup(c.Lab, n.Name), PodCgroup(c.Lab, n.Name)} {
			killCgroup(cg)
			_ = removeCgroupTree(cg)
		}
	}
}

// Kubectl runs kubectl with the admin kubeconfig and returns its output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlStdin(ctx, nil, args...)
}

// KubectlStdin runs kubectl with input.
func (c *Cluster) KubectlStdin(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin("kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfig(), "--request-timeout=20s"}, args...)...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// removeCgroupTree removes a cgroup and its children in every hierarchy.
func removeCgroupTree(cg string) error {
	for _, r := range cgroupRoots() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(r, cg), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for k := 0; k < 50; k++ {
				if err := syscall.Rmdir(dirs[i]); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nil
}
