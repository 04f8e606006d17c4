package runtimes

import (
	"fmt"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/lab/vnetlab"
)

// TestLabContainerdPod is `vnetctl lab pods add --runtime containerd`: the
// lab starts the VM's containerd on demand and records the sandbox as a pod;
// `lab pods del` removes it through the CRI; lab down ends containerd
// (TestMain checks no process is left).
func TestLabContainerdPod(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	dumpLogs(t, vmB)
	peer := peerPod(t, ctx, vmA, "labpeer")
	before := vmState(t, vmB)
	p, err := vnetlab.AddRuntimePod(ctx, theLab.Name, vmB, "crilab", vnetlab.RuntimeContainerd, pauseBin, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := vnetlab.Load(theLab.Name)
	if err != nil {
		t.Fatal(err)
	}
	var recorded bool
	for _, x := range l.Pods {
		recorded = recorded || (x.Name == "crilab" && x.Runtime == vnetlab.RuntimeContainerd && x.ContainerID == p.ContainerID)
	}
	if !recorded {
		t.Errorf("lab pods %+v, want crilab recorded as a containerd pod with sandbox %s", l.Pods, p.ContainerID)
	}
	assertInPool(t, vmB, p.IP)
	assertEndpoint(t, vmB, p.ContainerID, "default", "crilab")
	mustReach(t, p.NetNS, p.IP, peer.NetNS, peer.IP)
	if err := vnetlab.DelPod(ctx, theLab.Name, vmB, "crilab"); err != nil {
		t.Fatal(err)
	}
	assertBack(t, vmB, before, p.ContainerID)
	t.Log(fmt.Sprintf("lab pod via containerd: %s on %s", p.IP, vmB))
}
