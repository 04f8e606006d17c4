package vnetlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/install"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/plan"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// UpOptions configure Up.
type UpOptions struct {
	Name       string
	Definition []byte // a cluster definition; the seed's example when nil
	Mode       string // bridge or transparent; overrides the definition
	Model      string // azure-cni, overlay or kubenet; overrides the definition
	BinDir     string // where the plugins are
	Executable string // the lab binary (Binary), to start the services daemon; default: this process's
	Progress   io.Writer
	// Kubernetes also runs a Kubernetes cluster: control plane in the API
	// server's delegated subnet, a kubelet node per VM.
	Kubernetes bool
	K8sBinDir  string // Kubernetes binaries; k8slab.DefaultBinDir when empty
	// NoAgent leaves the VMs without vnetd: the plugins work standalone.
	NoAgent bool
	// Image boots the VMs with traits of Azure's images (the NIC's
	// secondary IPs on eth0, a FORWARD policy of DROP); clean when zero.
	Image fabric.Image
}

// PlanFor validates a definition and plans it, before anything is created.
func PlanFor(def []byte, mode, model string, kubernetes bool) (*plan.Plan, error) {
	if def == nil {
		def = []byte(plan.Example)
	}
	d, err := plan.ParseDefinition(def)
	if err != nil {
		return nil, err
	}
	p, err := d.Plan(plan.Options{Mode: mode, Model: model, Kubernetes: kubernetes})
	if err != nil {
		return nil, err
	}
	if len(p.Nodes) > 200 {
		return nil, fmt.Errorf("the lab runs at most 200 VMs; the definition has %d", len(p.Nodes))
	}
	return p, nil
}

// Up builds a lab, or repairs a half-built one with the same plan. It
// refuses to change a lab that exists with another plan.
func Up(ctx context.Context, o UpOptions) (*Lab, error) {
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	step := stepper(progress)
	if err := ValidName(o.Name); err != nil {
		return nil, err
	}
	done := step("plan the VNet")
	p, err := PlanFor(o.Definition, o.Mode, o.Model, o.Kubernetes)
	if err != nil {
		return nil, err
	}
	used, usable := p.Utilisation()
	pods := ""
	if p.PodCIDRModel() {
		pods = fmt.Sprintf(", pods in %s", p.PodCIDR)
	}
	done(fmt.Sprintf("%d VMs, subnet %s, %d of %d addresses%s (%s, %s mode)", len(p.Nodes), p.Subnet, used, usable, pods, p.Model, p.Mode))

	done = step("check the plugins")
	if err := checkBinaries(o.BinDir); err != nil {
		return nil, err
	}
	done(o.BinDir)

	unlock, err := lock(o.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	l := &Lab{Name: o.Name, Mode: p.Mode, Plan: p, Spec: fabricSpec(o.Name, p), Created: time.Now().UTC()}
	l.Spec.Image = o.Image
	if old, err := Load(o.Name); err == nil {
		if old.Mode != l.Mode || !reflect.DeepEqual(old.Plan, l.Plan) {
			return nil, fmt.Errorf("lab %q exists with another plan (%s mode, %d VMs); remove it first: vnetctl lab down --name %s", o.Name, old.Mode, len(old.Plan.Nodes), o.Name)
		}
		fmt.Fprintf(progress, "lab %q exists; repairing what is missing\n", o.Name)
		l = old
	} else if !errors.Is(err, ErrNoLab) {
		return nil, err
	}
	if err := os.MkdirAll(l.Dir(), 0o755); err != nil {
		return nil, err
	}
	if o.Kubernetes && l.Kubernetes == nil {
		l.Kubernetes = l.cluster(o.K8sBinDir, o.BinDir)
	}
	// Recorded first, so down knows what to remove if up is interrupted.
	if err := l.save(); err != nil {
		return nil, err
	}

	done = step("build the fabric, VMs and internet")
	f, err := fabric.Build(l.Spec)
	if err != nil {
		return nil, err
	}
	done(fmt.Sprintf("namespaces %s-fab, %s-inet and %d VMs", l.Name, l.Name, len(l.Spec.VMs)))

	if l.Plan.Model == plan.ModelKubenet {
		done = step("program the subnet's route table (kubenet's route controller)")
		if err := l.routeNodes(ctx, f); err != nil {
			return nil, err
		}
		l.Spec = f.Spec()
		if err := l.save(); err != nil {
			return nil, err
		}
		done(fmt.Sprintf("route table %s: %d routes", kubenetRouteTable, len(l.Plan.Nodes)))
	}

	l.Agent = !o.NoAgent
	done = step("install the plugins and conflist on each VM, forwarding on")
	for _, v := range l.Nodes() {
		if err := l.installVM(v.Name, o.BinDir); err != nil {
			return nil, err
		}
	}
	done(fmt.Sprintf("%s/vms/<vm>/{bin,net.d,state}", l.Dir()))

	done = step("start the wireserver, IMDS, DNS and internet host")
	pid, err := l.startDaemon(o.Executable)
	if err != nil {
		return nil, err
	}
	if err := l.waitServices(ctx); err != nil {
		return nil, err
	}
	done(fmt.Sprintf("daemon pid %d", pid))

	if l.Agent {
		done = step("start vnetd on each VM")
		if err := l.save(); err != nil {
			return nil, err
		}
		if l.policyOn() {
			// The agents enforce network policy from the cluster's
			// first pod; they wait for the API server themselves.
			if err := l.Kubernetes.WriteAgentKubeconfigs(); err != nil {
				return nil, err
			}
		}
		if err := l.startAgents(ctx, o.BinDir); err != nil {
			return nil, err
		}
		done(fmt.Sprintf("%d agents, sockets %s/vms/<vm>/state/vnetd.sock", len(l.Nodes()), l.Dir()))
	}

	if o.Kubernetes {
		exe := o.Executable
		if exe == "" {
			if exe, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		if err := l.writeAdminKubeconfig(ctx); err != nil {
			return nil, err
		}
		if err := k8slab.Start(ctx, l.Kubernetes, exe, progress); err != nil {
			return nil, fmt.Errorf("start Kubernetes: %w", err)
		}
	}

	l.Complete = true
	if err := l.save(); err != nil {
		return nil, err
	}
	return l, nil
}

func stepper(w io.Writer) func(string) func(string) {
	n := 0
	return func(what string) func(string) {
		n++
		start := time.Now()
		fmt.Fprintf(w, "[%d] %s ... ", n, what)
		return func(detail string) {
			fmt.Fprintf(w, "done in %s: %s\n", time.Since(start).Round(time.Millisecond), detail)
		}
	}
}

func checkBinaries(dir string) error {
	var missing []string
	for _, b := range install.Binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("plugins missing from %s: %s (build them with: make build, or pass --bin-dir)", dir, strings.Join(missing, ", "))
	}
	return nil
}

// installVM gives a VM its CNI directories: bin with the real plugins,
// net.d with the seed's conflist (mode set for transparent labs), state;
// and, as vnetctl install does on a node, turns on forwarding in the VM
// before its first pod (the VM has no sysctl.d of its own to persist it in).
func (l *Lab) installVM(vm, binDir string) error {
	if err := netns.Do(fabric.Open(l.Spec).VMNetNS(vm), func() error {
		_, err := install.Forwarding("")
		return err
	}); err != nil {
		return fmt.Errorf("install on %s: %w", vm, err)
	}
	d := l.VMDir(vm)
	for _, sub := range []string{"bin", "net.d", "state", "cache"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	for _, b := range install.Binaries {
		link := filepath.Join(d, "bin", b)
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(abs, b), link); err != nil {
			return err
		}
	}
	cl, err := ConflistFor(l.Mode)
	if err != nil {
		return err
	}
	if l.Plan.PodCIDRModel() {
		if cl, err = l.modelConflist(vm); err != nil {
			return err
		}
	}
	if l.policyOn() {
		if cl, err = withNetworkPolicy(cl); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(d, "net.d", conf.FileName), cl, 0o644)
}

// policyOn says whether the lab enforces Kubernetes network policy: a
// Kubernetes lab whose VMs run vnetd. Its conflists have networkPolicy on,
// so a pod never starts without its policies, and each vnetd watches the
// API with the VM's kubeconfig (k8slab.Cluster.AgentKubeconfig).
func (l *Lab) policyOn() bool { return l.Kubernetes != nil && l.Agent }

// withNetworkPolicy turns networkPolicy on in a conflist's azure-vnet.
func withNetworkPolicy(cl []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(cl, &m); err != nil {
		return nil, err
	}
	m["plugins"].([]any)[0].(map[string]any)["networkPolicy"] = true
	b, err := json.MarshalIndent(m, "", "  ")
	return append(b, '\n'), err
}

// ConflistFor is the seed's conflist, unchanged for bridge mode and with
// the mode switched for transparent mode.
func ConflistFor(mode string) ([]byte, error) {
	if mode == "" || mode == "bridge" {
		return conf.Conflist, nil
	}
	var m map[string]any
	if err := json.Unmarshal(conf.Conflist, &m); err != nil {
		return nil, err
	}
	m["plugins"].([]any)[0].(map[string]any)["mode"] = mode
	b, err := json.MarshalIndent(m, "", "  ")
	return append(b, '\n'), err
}

// Runner runs a VM's plugins as its runtime would.
func (l *Lab) Runner(vm string) *cnirunner.Runner {
	d := l.VMDir(vm)
	return &cnirunner.Runner{
		NetNS:    netns.Path(fabric.Open(l.Spec).VMNetNS(vm)),
		BinDirs:  []string{filepath.Join(d, "bin")},
		CacheDir: filepath.Join(d, "cache"),
		Env: []string{
			store.EnvDir + "=" + filepath.Join(d, "state"),
			cniplugin.EnvLogFile + "=" + filepath.Join(d, "azure-vnet.log"),
		},
	}
}

// Conflist reads a VM's network configuration.
func (l *Lab) Conflist(vm string) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromFile(filepath.Join(l.VMDir(vm), "net.d", conf.FileName))
}

// StateDir is a VM's azure-vnet state directory.
func (l *Lab) StateDir(vm string) string { return filepath.Join(l.VMDir(vm), "state") }

func (l *Lab) pidFile() string     { return filepath.Join(l.Dir(), "daemon.pid") }
func (l *Lab) controlSock() string { return filepath.Join(l.Dir(), "control.sock") }

// startDaemon starts the services daemon unless it runs already.
func (l *Lab) startDaemon(exe string) (int, error) {
	if pid, ok := l.daemonPID(); ok {
		return pid, nil
	}
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return 0, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(l.Dir(), "daemon.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "serve", "--name", l.Name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start lab daemon: %w", err)
	}
	// Reap it whenever it ends, if this process lives that long.
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// daemonPID returns the daemon's pid if it is running: the pid file names
// a live process whose command line is this lab's daemon.
func (l *Lab) daemonPID() (int, bool) {
	b, err := os.ReadFile(l.pidFile())
	if err != nil {
		return 0, false
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	// The daemon is "vnetctl-lab serve --name NAME" (startDaemon).
	want := []string{"serve", "--name", l.Name}
	if len(args) < len(want)+1 || !reflect.DeepEqual(args[len(args)-len(want):], want) || !isLabProcess(args, l.Name) {
		return 0, false
	}
	return pid, true
}

// waitServices waits until the daemon answers and a VM reaches the wireserver.
func (l *Lab) waitServices(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	vm := l.Spec.VMs[0].Name
	ns := fabric.Open(l.Spec).VMNetNS(vm)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		code, _, err := probe.HTTPGet(ns, wireserver.DefaultURL, nil, time.Second)
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Errorf("HTTP %d, %v", code, err)
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(l.Dir(), "daemon.log"))
	return fmt.Errorf("the lab's wireserver does not answer %s (%v); daemon log:\n%s", vm, last, bytes.TrimSpace(log))
}

// cluster describes the lab's Kubernetes cluster: the control plane in the
// API server subnet, a node per VM with the VM's CNI directories.
func (l *Lab) cluster(k8sBinDir, toolsDir string) *k8slab.Cluster {
	if k8sBinDir == "" {
		k8sBinDir = k8slab.DefaultBinDir
	}
	abs, _ := filepath.Abs(toolsDir)
	f := fabric.Open(l.Spec)
	a := l.Plan.APIServer
	c := &k8slab.Cluster{
		Lab: l.Name, Dir: filepath.Join(l.Dir(), "k8s"), BinDir: k8sBinDir, ToolsDir: abs,
		ControlPlaneNetNS: netns.Path(f.VMNetNS(ControlPlaneVM)), ControlPlaneIP: a.NodeIP, VIP: a.VIP,
		ServiceCIDR: k8slab.DefaultServiceCIDR, DNSServiceIP: k8slab.DefaultDNSServiceIP, PodSubnet: l.Plan.Subnet,
	}
	for i, v := range l.Nodes() {
		d := l.VMDir(v.Name)
		c.Nodes = append(c.Nodes, k8slab.Node{
			Name: v.Name, NetNS: netns.Path(f.VMNetNS(v.Name)), IP: v.PrimaryIP, MaxPods: l.Plan.Nodes[i].MaxPods,
			CNIBinDir: filepath.Join(d, "bin"), CNIConf: filepath.Join(d, "net.d"),
			StateDir: filepath.Join(d, "state"), LogFile: filepath.Join(d, "azure-vnet.log"),
			PodCIDR: l.Plan.Nodes[i].PodCIDR,
		})
	}
	if l.Plan.PodCIDRModel() {
		c.PodSubnet = l.Plan.PodCIDR
	}
	if o := l.Plan.Outside; o != nil {
		c.Outside = &k8slab.VM{Name: o.Name, NetNS: netns.Path(f.VMNetNS(o.Name)), IP: o.PrimaryIP}
	}
	return c
}

// writeAdminKubeconfig points the operator's kubeconfig at the daemon's
// forwarder on 127.0.0.1, which reaches the API server's VIP from a VM.
func (l *Lab) writeAdminKubeconfig(ctx context.Context) error {
	c := l.Kubernetes
	var port string
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(c.ForwardPortFile())
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			port = string(bytes.TrimSpace(b))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the lab daemon did not open the API server forwarder (%s)", c.ForwardPortFile())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c.WriteAdminKubeconfig("https://127.0.0.1:" + port)
}
