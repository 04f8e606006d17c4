package runtimes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/internal/netns"
)

// conflist110 is the VM's conflist at CNI version 1.1.0, for GC and STATUS.
func conflist110(t *testing.T, vm string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(theLab.VMDir(vm), "net.d", conf.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"] = "1.1.0"
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cnitoolRun runs `cnitool VERB azure NETNS` inside the VM's namespace with
// the VM's plugins, state and a 1.1.0 conflist.
func cnitoolRun(ctx context.Context, vm, netconfDir, verb, podNS string, args string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+vmNetNS(vm), "--", cnitool, verb, "azure", podNS)
	cmd.Env = append(os.Environ(),
		"NETCONFPATH="+netconfDir,
		"CNI_PATH="+filepath.Join(theLab.VMDir(vm), "bin"),
		"CNI_ARGS="+args,
	)
	cmd.Env = append(cmd.Env, theLab.Runner(vm).Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cnitool %s: %w: %s %s", verb, err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// TestCNITool drives ADD, CHECK, STATUS, DEL and GC with cnitool and
// cniVersion 1.1.0 against a VM.
func TestCNITool(t *testing.T) {
	tracked(t, "cnitool")
	ctx := testCtx(t, 2*time.Minute)
	vm := vmM
	dumpLogs(t, vm)
	netconf := filepath.Join(theLab.VMDir(vm), "cnitool.d")
	if err := os.MkdirAll(netconf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(netconf, conf.FileName), conflist110(t, vm), 0o644); err != nil {
		t.Fatal(err)
	}
	peer := peerPod(t, ctx, vmA, "ctpeer")
	before := vmState(t, vm)

	podNSName := theLab.Name + "-" + vm + "-cnit"
	if err := netns.Create(podNSName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(podNSName) })
	podNS := netns.Path(podNSName)
	args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-cnitool;K8S_POD_NAME=cnit"

	if _, err := cnitoolRun(ctx, vm, netconf, "status", podNS, ""); err != nil {
		t.Fatal(err)
	}
	out, err := cnitoolRun(ctx, vm, netconf, "add", podNS, args)
	if err != nil {
		t.Fatal(err)
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("cnitool add printed %q (%v), want a 1.1.0 result with an address", out, err)
	}
	if res.CNIVersion != "1.1.0" {
		t.Errorf("result cniVersion %q, want 1.1.0", res.CNIVersion)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	assertInPool(t, vm, ip)
	mustReach(t, podNS, ip, peer.NetNS, peer.IP)
	if _, err := cnitoolRun(ctx, vm, netconf, "check", podNS, args); err != nil {
		t.Error(err)
	}
	if _, err := cnitoolRun(ctx, vm, netconf, "del", podNS, args); err != nil {
		t.Fatal(err)
	}
	assertBack(t, vm, before)

	// cnitool's GC passes no GCArgs: libcni DELs every attachment in its
	// cache, then sends GC without cni.dev/valid-attachments, which the
	// plugin takes as "none is valid", as cnitool means it.
	if _, err := cnitoolRun(ctx, vm, netconf, "add", podNS, args); err != nil {
		t.Fatal(err)
	}
	if after := vmState(t, vm); after.allocations != before.allocations+1 {
		t.Fatalf("after a second ADD: %+v, want one allocation more than %+v", after, before)
	}
	gc := "GC"
	if _, err := cnitoolRun(ctx, vm, netconf, "gc", podNS, ""); err != nil {
		t.Fatal(err)
	}
	assertBack(t, vm, before)
	report(t, "cnitool", fmt.Sprintf("cnitool v1.3.1, cniVersion 1.1.0: STATUS, ADD %s (%s) <-> lab pod %s (%s), CHECK, DEL, ADD+%s; nothing left",
		ip, vm, peer.IP, vmA, gc))
}
