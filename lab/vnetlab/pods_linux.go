package vnetlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/netns"
)

// loopbackConf is what runtimes run before the pod network: lo up.
var loopbackConf = []byte(`{"cniVersion":"0.3.1","name":"cni-loopback","type":"loopback"}`)

// checkNewPod returns why pod cannot be added to vm: an unknown VM, a bad
// name, or a pod of that name already there.
func (l *Lab) checkNewPod(vm, pod string) error {
	if _, err := l.VMSpec(vm); err != nil {
		return err
	}
	if !podNameRE.MatchString(pod) {
		return fmt.Errorf("pod name %q: 1-20 lower-case letters, digits and '-'", pod)
	}
	for _, p := range l.Pods {
		if p.VM == vm && p.Name == pod {
			return fmt.Errorf("pod %s/%s exists (%s)", vm, pod, p.IP)
		}
	}
	return nil
}

// AddPod creates a pod namespace on a VM and attaches it through libcni, as
// a runtime would: loopback first, then the VM's conflist.
func AddPod(ctx context.Context, name, vm, pod string, ports []cnirunner.PortMapping) (Pod, error) {
	l, err := Load(name)
	if err != nil {
		return Pod{}, err
	}
	if err := l.checkNewPod(vm, pod); err != nil {
		return Pod{}, err
	}
	ns := PodNetNS(name, vm, pod)
	if netns.Exists(ns) {
		// Left by an interrupted add: start afresh.
		_ = netns.Delete(ns)
	}
	if err := netns.Create(ns); err != nil {
		return Pod{}, err
	}
	p := Pod{VM: vm, Name: pod, NetNS: ns, ContainerID: "lab-" + vm + "-" + pod, Ports: ports}
	r := l.Runner(vm)
	list, err := l.Conflist(vm)
	if err != nil {
		_ = netns.Delete(ns)
		return Pod{}, err
	}
	cp := p.cni()
	lo, err := libcni.ConfFromBytes(loopbackConf)
	if err != nil {
		return Pod{}, err
	}
	if _, err := r.CNI().AddNetwork(ctx, lo, cp.RuntimeConf()); err != nil {
		_ = netns.Delete(ns)
		return Pod{}, fmt.Errorf("loopback for %s/%s: %w", vm, pod, err)
	}
	res, err := r.Add(ctx, list, cp)
	if err != nil {
		_ = r.CNI().DelNetwork(ctx, lo, cp.RuntimeConf())
		_ = netns.Delete(ns)
		return Pod{}, fmt.Errorf("add pod %s on %s: %w", pod, vm, err)
	}
	cr, err := current.NewResultFromResult(res)
	if err != nil || len(cr.IPs) == 0 {
		return Pod{}, fmt.Errorf("add pod %s on %s: result without an address: %v", pod, vm, err)
	}
	p.IP, _ = netip.AddrFromSlice(cr.IPs[0].Address.IP.To4())
	if _, err := update(name, func(l *Lab) error {
		l.Pods = append(l.Pods, p)
		return nil
	}); err != nil {
		return Pod{}, err
	}
	return p, nil
}

func (p Pod) cni() cnirunner.Pod {
	return cnirunner.Pod{ContainerID: p.ContainerID, NetNS: netns.Path(p.NetNS), IfName: "eth0",
		Namespace: "default", Name: p.Name, PortMappings: p.Ports}
}

// DelPod detaches a pod through libcni and removes its namespace. A pod
// that is already gone is not an error.
func DelPod(ctx context.Context, name, vm, pod string) error {
	l, err := Load(name)
	if err != nil {
		return err
	}
	var found *Pod
	for i := range l.Pods {
		if l.Pods[i].VM == vm && l.Pods[i].Name == pod {
			found = &l.Pods[i]
		}
	}
	p := Pod{VM: vm, Name: pod, NetNS: PodNetNS(name, vm, pod), ContainerID: "lab-" + vm + "-" + pod}
	if found != nil {
		p = *found
	}
	if p.Runtime == RuntimeContainerd {
		return delRuntimePod(ctx, l, p)
	}
	var errs []error
	if _, err := l.VMSpec(vm); err == nil {
		r := l.Runner(vm)
		list, err := l.Conflist(vm)
		if err != nil {
			return err
		}
		if err := r.Del(ctx, list, p.cni()); err != nil {
			errs = append(errs, fmt.Errorf("delete pod %s on %s: %w", pod, vm, err))
		}
	}
	if err := netns.Delete(p.NetNS); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_, err = update(name, func(l *Lab) error {
		out := l.Pods[:0]
		for _, x := range l.Pods {
			if !(x.VM == vm && x.Name == pod) {
				out = append(out, x)
			}
		}
		l.Pods = out
		return nil
	})
	return err
}
