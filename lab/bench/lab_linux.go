package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// VMs of the bench lab.
const (
	vmBridge       = "b1" // azure-vnet bridge mode, and the reference plugins
	vmBridgePeer   = "b2" // bridge mode, the other end of cross-VM traffic
	vmTransparent  = "t1" // azure-vnet transparent mode
	vmTransparentP = "t2"
	vmRaw          = "r1" // no CNI at all: the fabric's own limit
	vmRawPeer      = "r2"
	vmAgent        = "a1" // azure-vnet bridge mode served by vnetd
)

// lab is a fabric built for one run, with everything the run started in
// it, so close can remove it all.
type lab struct {
	spec   fabric.Spec
	f      *fabric.Fabric
	svc    *fabric.Services
	dir    string // scratch: state, caches, logs (tmpfs when available)
	binDir string

	mu    sync.Mutex
	procs []*exec.Cmd // servers started in the lab, killed by PID on close
}

// vmSpecs lays out the VMs: name, primary address, first secondary and
// how many secondaries.
func labSpec(name string, secondaries int) fabric.Spec {
	s := fabric.Spec{Name: name, VNet: []netip.Prefix{benchVNet}, Subnets: []netip.Prefix{benchSubnet}}
	type vmPlan struct {
		name  string
		first netip.Addr
		n     int
	}
	plan := []vmPlan{
		{vmBridge, netip.MustParseAddr("10.0.0.16"), secondaries},
		{vmBridgePeer, netip.MustParseAddr("10.0.1.16"), 4},
		{vmTransparent, netip.MustParseAddr("10.0.1.32"), secondaries},
		{vmTransparentP, netip.MustParseAddr("10.0.2.32"), 4},
		{vmRaw, netip.Addr{}, 0},
		{vmRawPeer, netip.Addr{}, 0},
		{vmAgent, netip.MustParseAddr("10.0.4.16"), secondaries},
	}
	for i, p := range plan {
		v := fabric.VMSpec{
			Name:      p.name,
			MAC:       fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, 0xbe, byte(i + 1)},
			Subnet:    benchSubnet,
			PrimaryIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(4 + i)}),
		}
		ip := p.first
		for k := 0; k < p.n; k++ {
			v.SecondaryIPs = append(v.SecondaryIPs, ip)
			ip = ip.Next()
		}
		s.VMs = append(s.VMs, v)
	}
	return s
}

// newLab builds the fabric and starts its services. The fabric's name is
// unique to the run; scratch files go under workDir.
func newLab(binDir, workDir string, secondaries int) (*lab, error) {
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "vb" + hex.EncodeToString(b[:])
	dir, err := os.MkdirTemp(workDir, "vnetbench-")
	if err != nil {
		return nil, fmt.Errorf("create scratch directory: %w", err)
	}
	l := &lab{spec: labSpec(name, secondaries), dir: dir, binDir: binDir}
	f, err := fabric.Build(l.spec)
	if err != nil {
		return nil, errors.Join(err, l.close())
	}
	l.f = f
	svc, err := f.Serve()
	if err != nil {
		return nil, errors.Join(err, l.close())
	}
	l.svc = svc
	return l, nil
}

// close kills the servers the run started (by PID), stops the services,
// and removes every namespace whose name starts with the fabric's, and the
// scratch directory. Safe to call on a half-built lab.
func (l *lab) close() error {
	var errs []error
	l.mu.Lock()
	for _, c := range l.procs {
		if c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	l.procs = nil
	l.mu.Unlock()
	if l.svc != nil {
		errs = append(errs, l.svc.Close())
	}
	if err := fabric.Destroy(l.spec); err != nil {
		errs = append(errs, err)
	}
	left, err := netns.List(l.spec.Name + "-")
	errs = append(errs, err)
	for _, n := range left {
		errs = append(errs, netns.Delete(n))
	}
	if l.dir != "" {
		errs = append(errs, os.RemoveAll(l.dir))
	}
	return errors.Join(errs...)
}

func (l *lab) vm(name string) fabric.VMSpec {
	v, _ := l.spec.VM(name)
	return v
}

// vmNS is the path of a VM's namespace.
func (l *lab) vmNS(vm string) string { return netns.Path(l.f.VMNetNS(vm)) }

// podNS creates a pod namespace with its loopback up, as a runtime does,
// and returns its name.
func (l *lab) podNS(name string) (string, error) {
	n := l.spec.Name + "-p-" + name
	if err := netns.Create(n); err != nil {
		return "", err
	}
	h, err := netns.Netlink(netns.Path(n))
	if err != nil {
		return "", err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return "", fmt.Errorf("set lo up in netns %s: %w", n, err)
	}
	return n, nil
}

// start runs a server in a namespace; close kills it.
func (l *lab) start(nsName string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = nil, nil
	err := ns.WithNetNSPath(netns.Path(nsName), func(ns.NetNS) error { return cmd.Start() })
	if err != nil {
		return nil, fmt.Errorf("start %s in netns %s: %w", args[0], nsName, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	return cmd, nil
}

// run runs a command in a namespace and returns its combined output.
func run(ctx context.Context, nsName string, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out []byte
	var err error
	nerr := ns.WithNetNSPath(netns.Path(nsName), func(ns.NetNS) error {
		out, err = cmd.CombinedOutput()
		return nil
	})
	if nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return out, fmt.Errorf("%s in netns %s: %w", args[0], nsName, err)
	}
	return out, nil
}

// ourNode is azure-vnet on a VM, with its own state directory and log, and
// per-phase timings on stderr.
func (l *lab) ourNode(vm, mode string) (*node, error) {
	list, err := libcni.ConfListFromBytes(ourConflist(mode))
	if err != nil {
		return nil, err
	}
	d := filepath.Join(l.dir, vm)
	return &node{
		netns:    l.vmNS(vm),
		binDir:   l.binDir,
		cacheDir: filepath.Join(d, "cache-azure"),
		env: []string{
			store.EnvDir + "=" + filepath.Join(d, "state"),
			cniplugin.EnvLogFile + "=" + filepath.Join(d, "azure-vnet.log"),
			"AZURE_VNET_TRACE=1",
		},
		list: list,
	}, nil
}

// agentNode is azure-vnet in bridge mode on a VM whose vnetd serves it:
// the agent runs in the VM's namespace with the node's state directory,
// as the DaemonSet or the systemd unit runs it on a node. It is killed by
// PID when the lab closes.
func (l *lab) agentNode(ctx context.Context, vm string) (*node, *exec.Cmd, error) {
	n, err := l.ourNode(vm, datapath.ModeBridge)
	if err != nil {
		return nil, nil, err
	}
	d := filepath.Join(l.dir, vm)
	state := filepath.Join(d, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(d, "vnetd.log"))
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(l.binDir, "vnetd"), "--state-dir", state, "--http", "")
	cmd.Env = append(os.Environ(), cniplugin.EnvLogFile+"="+filepath.Join(d, "azure-vnet.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := ns.WithNetNSPath(l.vmNS(vm), func(ns.NetNS) error { return cmd.Start() }); err != nil {
		return nil, nil, fmt.Errorf("start vnetd in %s: %w", vm, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := agentapi.GetStatus(state)
		if err == nil && st.Ready {
			return n, cmd, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("vnetd in %s not ready (see %s): %v", vm, logf.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refNode is bridge + host-local on a VM.
func (l *lab) refNode(vm string) (*node, error) {
	d := filepath.Join(l.dir, vm)
	list, err := libcni.ConfListFromBytes(refConflist(filepath.Join(d, "host-local")))
	if err != nil {
		return nil, err
	}
	return &node{netns: l.vmNS(vm), binDir: l.binDir, cacheDir: filepath.Join(d, "cache-reference"), list: list}, nil
}
