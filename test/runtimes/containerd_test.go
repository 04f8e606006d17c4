package runtimes

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// TestContainerdCRI runs a containerd with its CRI plugin in two VMs and
// creates a pod sandbox in each through the CRI API, as kubelet does.
func TestContainerdCRI(t *testing.T) {
	tracked(t, "containerd")
	ctx := testCtx(t, 3*time.Minute)
	type side struct {
		vm     string
		ctd    *runtimes.Containerd
		client *cri.Client
		before kernelState
		id     string
		st     cri.Status
	}
	sides := []*side{{vm: vmA}, {vm: vmB}}
	for _, s := range sides {
		dir := filepath.Join(theLab.VMDir(s.vm), "containerd")
		dumpLogs(t, s.vm, filepath.Join(dir, "containerd.log"))
		ctd, err := runtimes.StartContainerd(ctx, node(s.vm), dir, runtimes.ContainerdOptions{CRI: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ctd.Stop(ctx); err != nil {
				t.Errorf("stop containerd on %s: %v", s.vm, err)
			}
		})
		s.ctd = ctd
		if err := ctd.EnsurePauseImageTar(ctx, pauseTar); err != nil {
			t.Fatal(err)
		}
		if s.client, err = cri.Dial(ctd.Socket()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.client.Close() })
		s.before = vmState(t, s.vm)
	}
	version, err := sides[0].client.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sides {
		sb := cri.Sandbox{Name: fmt.Sprintf("cripod-%d", i), Namespace: "team-cri", UID: "uid-" + randHex(12),
			CgroupParent: s.ctd.Node.CgroupParent("containerd")}
		s.id, err = s.client.RunPodSandbox(ctx, sb)
		if err != nil {
			t.Fatal(err)
		}
		if s.st, err = s.client.PodSandboxStatus(ctx, s.id); err != nil {
			t.Fatal(err)
		}
		if !s.st.Ready || s.st.NetNS == "" {
			t.Fatalf("sandbox %s on %s: ready %v, netns %q; want ready with a netns", s.id, s.vm, s.st.Ready, s.st.NetNS)
		}
		assertInPool(t, s.vm, s.st.IP)
		assertEndpoint(t, s.vm, s.id, sb.Namespace, sb.Name)
	}
	a, b := sides[0], sides[1]
	mustReach(t, a.st.NetNS, a.st.IP, b.st.NetNS, b.st.IP)

	for _, s := range sides {
		if err := s.client.StopPodSandbox(ctx, s.id); err != nil {
			t.Fatal(err)
		}
		if err := s.client.RemovePodSandbox(ctx, s.id); err != nil {
			t.Fatal(err)
		}
		// containerd DELs on stop and again on remove, the second time
		// without the (already removed) namespace; both must succeed.
		calls := pluginCalls(t, s.vm, s.id)
		var dels []string
		for _, c := range calls {
			if c.cmd == "DEL" {
				dels = append(dels, c.netns)
			}
		}
		if len(calls) == 0 || calls[0].cmd != "ADD" || len(dels) < 2 || dels[len(dels)-1] != "" {
			t.Errorf("%s: plugin calls for sandbox %s: %+v; want ADD, then DEL with the netns and DEL with none", s.vm, s.id, calls)
		}
		assertBack(t, s.vm, s.before, s.id)
	}
	report(t, "containerd", fmt.Sprintf("%s (CRI): sandboxes %s (%s) <-> %s (%s) reach each other; stop+remove: %d DELs, the last with no netns; nothing left",
		version, a.st.IP, a.vm, b.st.IP, b.vm, len(pluginCalls(t, a.vm, a.id))-1))
}
