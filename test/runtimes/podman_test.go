package runtimes

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/runtimes"
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

	if _, err := pm.Run(ctx, "rm", "--force", "--time", "0", id); err != nil {
		t.Fatal(err)
	}
	calls := pluginCalls(t, vmA, id)
	if len(calls) < 2 || calls[0].cmd != "ADD" || calls[len(calls)-1].cmd != "DEL" {
		t.Errorf("plugin calls for podman container %s: %+v; want ADD ... DEL", id, calls)
	}
	assertBack(t, vmA, before, id)
	report(t, "podman", fmt.Sprintf("podman %s (CNI backend, network azure): container %s (%s) <-> lab pod %s (%s); podman rm released it; nothing left",
		version, ip, vmA, peer.IP, vmB))
}
