package e2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// The traits of VMs as Azure images boot them (issue 12), each against
// both modes: what broke the plugins, and what they do about it now.

// mustReachOut checks a pod's off-node traffic: a pod on another VM and the
// internet, where it must appear as its VM's public address.
func mustReachOut(t *testing.T, p *pod, peer *pod) {
	t.Helper()
	mustPing(t, p.ns, peer.ip)
	mustPing(t, peer.ns, p.ip)
	code, body, err := probe.HTTPGet(p.ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeTimeout)
	if err != nil || code != 200 {
		t.Errorf("pod %s to internet: %d %v", p.name, code, err)
	} else if got := strings.TrimSpace(string(body)); got != p.vm.spec.PublicIP.String() {
		t.Errorf("internet host saw pod %s as %s, want %s", p.name, got, p.vm.spec.PublicIP)
	}
}

// vnetctl runs the node tool against a VM's namespace and state.
func (m *vm) vnetctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "vnetctl"), append(args, "--netns", netns.Path(m.ns), "--state-dir", filepath.Join(m.dir, "state"))...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("vnetctl %v: %v", args, err)
	}
	return string(out), 0
}

// TestFirewallFlush (case 2): `nft flush ruleset` (restarting
// nftables.service) and `nft flush table` break every pod's off-node
// traffic. STATUS and CHECK say so, the next ADD reprograms the rules with
// every recorded pod, and so does `vnetctl doctor --fix`.
func TestFirewallFlush(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			a := vm1.addPod(t, "a")
			x := vm2.addPod(t, "x")
			mustReachOut(t, a, x)
			table := datapath.TableName(vm1.list.Name)
			for i, tc := range []struct {
				name   string
				cmds   [][]string
				repair func(t *testing.T) *pod
			}{
				// The pods outlive their subtest: the doctor's runs see them.
				{"flush-ruleset/add", [][]string{{"flush", "ruleset"}}, func(*testing.T) *pod { return vm1.addPod(t, "b") }},
				{"flush-tables/add", [][]string{{"flush", "table", "ip", table}, {"flush", "table", "bridge", table}},
					func(*testing.T) *pod { return vm1.addPod(t, "c") }},
				{"flush-ruleset/doctor", [][]string{{"flush", "ruleset"}}, func(t *testing.T) *pod {
					if out, code := vm1.vnetctl(t, "doctor", "--fix"); code != 0 {
						t.Errorf("vnetctl doctor --fix: exit %d\n%s", code, out)
					}
					return nil
				}},
				{"flush-tables/doctor", [][]string{{"flush", "table", "ip", table}, {"flush", "table", "bridge", table}}, func(t *testing.T) *pod {
					if out, code := vm1.vnetctl(t, "doctor", "--fix"); code != 0 {
						t.Errorf("vnetctl doctor --fix: exit %d\n%s", code, out)
					}
					return nil
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for _, cmd := range tc.cmds {
						if mode == datapath.ModeTransparent && cmd[len(cmd)-2] == "bridge" {
							cmd = []string{"flush", "table", "arp", table}
						}
						if out, err := runIn(vm1.ns, append([]string{"nft"}, cmd...)...); err != nil {
							t.Fatalf("nft %v: %v %s", cmd, err, out)
						}
					}
					err := vm1.runner.Status(context.Background(), vm1.list)
					var te *types.Error
					if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "damaged") {
						t.Errorf("STATUS after %v: %v, want code 50 saying the rules are damaged", tc.cmds, err)
					}
					if err := vm1.runner.Check(context.Background(), vm1.list, a.cni); err == nil || !strings.Contains(err.Error(), "damaged") {
						t.Errorf("CHECK after %v: %v, want it to report the damaged rules", tc.cmds, err)
					}
					if out, code := vm1.vnetctl(t, "doctor"); code != 1 || !strings.Contains(out, "missing-rules") {
						t.Errorf("vnetctl doctor after %v: exit %d, want 1 reporting missing-rules\n%s", tc.cmds, code, out)
					}
					if i == 0 && mode == datapath.ModeBridge {
						// Without the MAC rewrite the fabric drops the pod's frames.
						mustNotPing(t, a.ns, x.ip)
					}
					b := tc.repair(t)
					if err := vm1.runner.Status(context.Background(), vm1.list); err != nil {
						t.Errorf("STATUS after the repair: %v", err)
					}
					if err := vm1.runner.Check(context.Background(), vm1.list, a.cni); err != nil {
						t.Errorf("CHECK after the repair: %v", err)
					}
					mustReachOut(t, a, x)
					if b != nil {
						mustReachOut(t, b, x)
						mustPing(t, a.ns, b.ip)
					}
				})
			}
		})
	}
}
