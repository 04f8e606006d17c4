package runtimes

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// dockerRun runs scripts/docker-run.sh against a private dockerd, with the
// plugins running in the VM's namespace, and returns its standard output.
func dockerRun(ctx context.Context, k *runtimes.Docker, vm string, args ...string) (string, error) {
	return dockerRunEnv(ctx, k, vm, nil, args...)
}

// dockerRunEnv is dockerRun with extra environment, which wins.
func dockerRunEnv(ctx context.Context, k *runtimes.Docker, vm string, env []string, args ...string) (string, error) {
	d := theLab.VMDir(vm)
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "scripts", "docker-run.sh"), args...)
	cmd.Env = append(os.Environ(),
		"DOCKER="+runtimes.DockerCLI(),
		"DOCKER_HOST="+k.Host(),
		"DOCKER_CONFIG="+filepath.Join(k.Dir, "client"),
		"CNI_PATH="+filepath.Join(d, "bin"),
		"CNI_CONF_DIR="+filepath.Join(d, "net.d"),
		"CNI_CACHE_DIR="+filepath.Join(d, "cache"),
		"VNET_HOST_NETNS="+vmNetNS(vm),
		"VNETCTL="+filepath.Join(binDir, "vnetctl"),
	)
	cmd.Env = append(append(cmd.Env, theLab.Runner(vm).Env...), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker-run.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// TestDocker runs a container with Debian's Docker through
// scripts/docker-run.sh (seed 001's flow) in one VM and reaches a pod on
// another; the script's --remove releases the address before docker rm.
func TestDocker(t *testing.T) {
	tracked(t, "docker")
	ctx := testCtx(t, 3*time.Minute)
	dir := filepath.Join(theLab.VMDir(vmB), "docker")
	dumpLogs(t, vmB, filepath.Join(dir, "dockerd.log"))
	k, err := runtimes.StartDocker(ctx, node(vmB), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Stop(context.Background()); err != nil {
			t.Errorf("stop docker: %v", err)
		}
	})
	version, err := k.Run(ctx, "version", "--format", "{{.Server.Version}}")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Load(ctx, pauseTar); err != nil {
		t.Fatal(err)
	}
	peer := peerPod(t, ctx, vmA, "dkpeer")
	before := vmState(t, vmB)

	name, podNS := "dk-"+randHex(6), "team-docker"
	out, err := dockerRun(ctx, k, vmB, name, podNS, runtimes.PauseImage)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(out)
	if err != nil {
		t.Fatalf("docker-run.sh printed %q, want the container's IP", out)
	}
	info, err := k.Run(ctx, "inspect", "--format", "{{.Id}} {{.State.Pid}}", name)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var pid int
	if _, err := fmt.Sscan(info, &id, &pid); err != nil {
		t.Fatalf("docker inspect %s: %q: %v", name, info, err)
	}
	assertInPool(t, vmB, ip)
	assertEndpoint(t, vmB, id, podNS, name)
	mustReach(t, fmt.Sprintf("/proc/%d/ns/net", pid), ip, peer.NetNS, peer.IP)

	if _, err := dockerRun(ctx, k, vmB, "--remove", name); err != nil {
		t.Fatal(err)
	}
	if left, err := k.Run(ctx, "ps", "--all", "--quiet", "--filter", "name="+name); err != nil || left != "" {
		t.Errorf("docker ps after --remove: %q, %v; want no container", left, err)
	}
	assertBack(t, vmB, before, id)
	report(t, "docker", fmt.Sprintf("Docker %s via docker-run.sh (--network none + CNI ADD): container %s (%s) <-> lab pod %s (%s); --remove released it; nothing left",
		version, ip, vmB, peer.IP, vmA))
}

// TestDockerFirewall: a real dockerd that manages the firewall of its VM
// (iptables, IP forwarding: it sets the FORWARD policy to DROP) and a
// container attached through the plugins: the container reaches a pod of
// another VM and a pod of its own VM, and they reach it (issue 12 case 4).
func TestDockerFirewall(t *testing.T) {
	tracked(t, "docker")
	ctx := testCtx(t, 3*time.Minute)
	dir := filepath.Join(theLab.VMDir(vmA), "docker-firewall")
	dumpLogs(t, vmA, filepath.Join(dir, "dockerd.log"))
	k, err := runtimes.StartDockerWith(ctx, node(vmA), dir, runtimes.DockerOptions{Firewall: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Stop(context.Background()); err != nil {
			t.Errorf("stop docker: %v", err)
		}
	})
	iptables := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + vmNetNS(vmA), "--", "iptables-nft"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-nft %v in %s: %v\n%s", args, vmA, err, out)
		}
		return string(out)
	}
	// dockerd sets the policy to DROP when it turns forwarding on itself.
	// The lab's VMs forward from their install on (a node forwards before
	// its first pod), so this dockerd found forwarding on and kept ACCEPT:
	// set what it sets on a node that booted without forwarding.
	if !strings.Contains(iptables("-S", "FORWARD"), "-P FORWARD DROP") {
		iptables("-P", "FORWARD", "DROP")
	}
	if out := iptables("-S", "FORWARD"); !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "DOCKER") {
		t.Fatalf("FORWARD in %s is not Docker's with a policy of DROP:\n%s", vmA, out)
	}
	if err := k.Load(ctx, pauseTar); err != nil {
		t.Fatal(err)
	}
	far := peerPod(t, ctx, vmB, "dfpeer")
	near := peerPod(t, ctx, vmA, "dfnear")
	name := "dkfw-" + randHex(6)
	ipOut, err := dockerRun(ctx, k, vmA, name, "team-docker", runtimes.PauseImage)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(ipOut)
	if err != nil {
		t.Fatalf("docker-run.sh printed %q, want the container's IP", ipOut)
	}
	pid, err := k.Run(ctx, "inspect", "--format", "{{.State.Pid}}", name)
	if err != nil {
		t.Fatal(err)
	}
	ctrNS := "/proc/" + pid + "/ns/net"
	mustReach(t, ctrNS, ip, far.NetNS, far.IP)
	mustReach(t, ctrNS, ip, near.NetNS, near.IP)
	if _, err := dockerRun(ctx, k, vmA, "--remove", name); err != nil {
		t.Fatal(err)
	}
	report(t, "docker-firewall", fmt.Sprintf("dockerd managing iptables (FORWARD policy DROP) on %s: container %s <-> lab pods %s (%s), %s (%s)",
		vmA, ip, far.IP, vmB, near.IP, vmA))
}
