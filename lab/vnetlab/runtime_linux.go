package vnetlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// Runtimes a lab pod can be made with: libcni called directly (the
// default), or a containerd with its CRI plugin running in the pod's VM.
const (
	RuntimeLibcni     = "libcni"
	RuntimeContainerd = "containerd"
)

// containerdDir is where a VM's containerd lives.
func (l *Lab) containerdDir(vm string) string { return filepath.Join(l.VMDir(vm), "containerd") }

// RuntimeNode describes a VM to a container runtime: its namespace, CNI
// directories and the plugins' environment.
func (l *Lab) RuntimeNode(vm string) runtimes.Node {
	r := l.Runner(vm)
	return runtimes.Node{Name: l.Name + "-" + vm, NetNS: r.NetNS,
		CNIBinDir: filepath.Join(l.VMDir(vm), "bin"), CNIConfDir: filepath.Join(l.VMDir(vm), "net.d"), Env: r.Env}
}

// AddRuntimePod creates a pod with the given runtime. For containerd it
// starts the VM's containerd if needed (in the VM's namespace, with the
// VM's CNI directories), imports the sandbox image built from pauseBinary,
// and runs a pod sandbox through the CRI API, as kubelet does.
func AddRuntimePod(ctx context.Context, name, vm, pod, runtime, pauseBinary string, ports []cnirunner.PortMapping) (Pod, error) {
	switch runtime {
	case "", RuntimeLibcni:
		return AddPod(ctx, name, vm, pod, ports)
	case RuntimeContainerd:
	default:
		return Pod{}, fmt.Errorf("runtime %q: want %s or %s", runtime, RuntimeLibcni, RuntimeContainerd)
	}
	l, err := Load(name)
	if err != nil {
		return Pod{}, err
	}
	if err := l.checkNewPod(vm, pod); err != nil {
		return Pod{}, err
	}
	if _, err := os.Stat(pauseBinary); err != nil {
		return Pod{}, fmt.Errorf("the sandbox image needs the pause binary (build it with: make pause): %w", err)
	}
	n := l.RuntimeNode(vm)
	ctd, err := runtimes.StartContainerd(ctx, n, l.containerdDir(vm), runtimes.ContainerdOptions{CRI: true})
	if err != nil {
		return Pod{}, err
	}
	if err := ctd.EnsurePauseImage(ctx, pauseBinary); err != nil {
		return Pod{}, err
	}
	c, err := cri.Dial(ctd.Socket())
	if err != nil {
		return Pod{}, err
	}
	defer c.Close()
	sb := cri.Sandbox{Name: pod, Namespace: "default", UID: randomUID(), CgroupParent: n.CgroupParent("containerd")}
	for _, pm := range ports {
		sb.Ports = append(sb.Ports, cri.Port{Protocol: pm.Protocol, ContainerPort: int32(pm.ContainerPort), HostPort: int32(pm.HostPort), HostIP: pm.HostIP})
	}
	id, err := c.RunPodSandbox(ctx, sb)
	if err != nil {
		return Pod{}, err
	}
	st, err := c.PodSandboxStatus(ctx, id)
	if err != nil || !st.IP.IsValid() || st.NetNS == "" {
		_ = c.StopPodSandbox(ctx, id)
		_ = c.RemovePodSandbox(ctx, id)
		return Pod{}, fmt.Errorf("sandbox %s of pod %s on %s: IP %v, netns %q: %w", id, pod, vm, st.IP, st.NetNS, err)
	}
	p := Pod{VM: vm, Name: pod, NetNS: st.NetNS, ContainerID: id, IP: st.IP, Ports: ports, Runtime: RuntimeContainerd}
	if _, err := update(name, func(l *Lab) error {
		l.Pods = append(l.Pods, p)
		return nil
	}); err != nil {
		return Pod{}, err
	}
	return p, nil
}

// delRuntimePod stops and removes a containerd pod's sandbox (containerd
// runs the CNI DELs) and forgets the pod.
func delRuntimePod(ctx context.Context, l *Lab, p Pod) error {
	ctd := runtimes.ContainerdAt(l.RuntimeNode(p.VM), l.containerdDir(p.VM), true)
	if ctd.PID() == 0 {
		return fmt.Errorf("pod %s/%s: the VM's containerd is not running", p.VM, p.Name)
	}
	c, err := cri.Dial(ctd.Socket())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := errors.Join(c.StopPodSandbox(ctx, p.ContainerID), c.RemovePodSandbox(ctx, p.ContainerID)); err != nil {
		return fmt.Errorf("delete pod %s on %s: %w", p.Name, p.VM, err)
	}
	_, err = update(l.Name, func(l *Lab) error {
		out := l.Pods[:0]
		for _, x := range l.Pods {
			if !(x.VM == p.VM && x.Name == p.Name) {
				out = append(out, x)
			}
		}
		l.Pods = out
		return nil
	})
	return err
}

// stopRuntimes ends the runtimes the lab's VMs run (containerd for
// --runtime pods, and whatever the runtime tests left), removing their
// sandboxes and containers first.
func stopRuntimes(l *Lab) error {
	var errs []error
	for _, v := range l.Spec.VMs {
		errs = append(errs, runtimes.Cleanup(context.Background(), l.RuntimeNode(v.Name), l.VMDir(v.Name)))
	}
	return errors.Join(errs...)
}

func randomUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
