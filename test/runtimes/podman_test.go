package runtimes

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// TestPodman runs a container with Debian's podman (CNI backend) on the
// seed conflist's network "azure" in one VM, and reaches a pod on another.
func TestPodman(t *testing.T) {
	tracked(t, "podman")
	ctx := testCtx(t, 3*time.Minute)
	dir := filepath.Join(theLab.VMDir(vmA), "podman")
	dumpLogs(t, vmA)
	pm, err := runtimes.NewPodman(node(vmA), dir, "azure")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pm.Cleanup(ctx); err != nil {
			t.Errorf("podman cleanup: %v", err)
		}
	})
	version, err := pm.Run(ctx, "version", "--format", "{{.Client.Version}}")
	if err != nil {
		t.Fatal(err)
	}
	if err := pm.Load(ctx, pauseTar); err != nil {
		t.Fatal(err)
	}
	peer := peerPod(t, ctx, vmB, "pmpeer")
	before := vmState(t, vmA)

	name := "pm-" + randHex(6)
	id, err := pm.Run(ctx, "run", "--detach", "--name", name, "--network", "azure", "--cgroup-parent", pm.CgroupParent(), runtimes.PauseImage)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pm.Run(ctx, "inspect", "--format", "{{.NetworkSettings.SandboxKey}} {{(index .NetworkSettings.Networks \"azure\").IPAddress}}", id)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("podman inspect %s: %q, want the sandbox key and the address", name, out)
	}
	sandbox := f[0]
	ip, err := netip.ParseAddr(f[1])
	if err != nil {
		t.Fatalf("podman inspect %s: address %q: %v", name, f[1], err)
	}
	assertInPool(t, vmA, ip)
	mustReach(t, sandbox, ip, peer.NetNS, peer.IP)

	// The container's process dies by itself: then conmon's exit command
	// ("podman container cleanup"), not the podman the test runs, tears the
	// network down, and it must reach the plugin with the VM's state dir.
	_, defaultStateBefore := os.Stat(store.DefaultDir)
	pidOut, err := pm.Run(ctx, "inspect", "--format", "{{.State.Pid}}", id)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(pidOut)
	if err != nil || pid <= 0 {
		t.Fatalf("podman inspect %s: pid %q", name, pidOut)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		calls := pluginCalls(t, vmA, id)
		if len(calls) >= 2 && calls[len(calls)-1].cmd == "DEL" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin calls for podman container %s 30 s after its process died: %+v; want ADD ... DEL (from conmon's cleanup)", id, calls)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(store.DefaultDir); err == nil && defaultStateBefore != nil {
		t.Errorf("the plugin wrote its default state dir %s: a podman call ran it without the VM's environment", store.DefaultDir)
	}
	if _, err := pm.Run(ctx, "rm", "--force", "--time", "0", id); err != nil {
		t.Fatal(err)
	}
	assertBack(t, vmA, before, id)
	report(t, "podman", fmt.Sprintf("podman %s (CNI backend, network azure): container %s (%s) <-> lab pod %s (%s); its exit (conmon's cleanup) released it; nothing left",
		version, ip, vmA, peer.IP, vmB))
}
