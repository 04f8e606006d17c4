package vnetlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/testbin"
)

var binDir string

func TestMain(m *testing.M) { testbin.Main(m, testbin.Suite{Name: "lab"}, &binDir) }

func testName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)[:7]
}

// twoAgents is a cluster definition with two agent VMs and no master.
const twoAgents = `{"properties": {
  "orchestratorProfile": {"kubernetesConfig": {"clusterSubnet": "10.1.0.0/24", "kubeletConfig": {"--max-pods": "8"}}},
  "masterProfile": {"count": 0, "vnetCidr": "10.1.0.0/16"},
  "agentPoolProfiles": [{"name": "pool", "count": 2}]}}`

func up(t *testing.T, name, def, mode string) *Lab {
	t.Helper()
	t.Cleanup(func() {
		if err := Down(name); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	l, err := Up(context.Background(), UpOptions{Name: name, Definition: []byte(def), Mode: mode,
		BinDir: binDir, Executable: filepath.Join(binDir, Binary)})
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	return l
}

// snapshot is what a lab may leave behind: namespaces with its prefix, the
// root namespace's links, its run directory.
type snapshot struct {
	namespaces []string
	rootLinks  []string
	dirExists  bool
}

func take(t *testing.T, name string) snapshot {
	t.Helper()
	ns, err := netns.List(name + "-")
	if err != nil {
		t.Fatal(err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ln []string
	for _, l := range links {
		ln = append(ln, l.Attrs().Name)
	}
	sort.Strings(ln)
	_, err = os.Stat(Dir(name))
	return snapshot{namespaces: ns, rootLinks: ln, dirExists: err == nil}
}

// TestLab brings up two VMs with five pods each in each mode: the check
// matrix passes, the status shows the pools in use, and down leaves nothing.
func TestLab(t *testing.T) {
	for _, mode := range []string{"bridge", "transparent"} {
		t.Run(mode, func(t *testing.T) {
			name := testName()
			before := take(t, name)
			l := up(t, name, twoAgents, mode)
			if len(l.Spec.VMs) != 2 {
				t.Fatalf("%d VMs, want 2", len(l.Spec.VMs))
			}
			ctx := context.Background()
			for _, v := range l.Spec.VMs {
				for i := 1; i <= 5; i++ {
					var ports []cnirunner.PortMapping
					if i == 1 {
						ports = []cnirunner.PortMapping{{HostPort: 30080, ContainerPort: 8080, Protocol: "tcp"}}
					}
					p, err := AddPod(ctx, name, v.Name, fmt.Sprintf("p%d", i), ports)
					if err != nil {
						t.Fatalf("add pod: %v", err)
					}
					found := false
					for _, a := range v.SecondaryIPs {
						found = found || a == p.IP
					}
					if !found {
						t.Errorf("pod %s/%s got %s, not from %s's NIC", p.VM, p.Name, p.IP, v.Name)
					}
				}
			}
			// Pods that cannot be added are refused before anything is made,
			// through either runtime.
			vm := l.Spec.VMs[0].Name
			for _, bad := range []struct{ vm, pod, want string }{
				{vm, "p1", "exists"},
				{vm, "Bad_Name", "lower-case"},
				{"vm-99", "p9", "vm-99"},
			} {
				if _, err := AddPod(ctx, name, bad.vm, bad.pod, nil); err == nil || !strings.Contains(err.Error(), bad.want) {
					t.Errorf("AddPod(%s, %s) = %v, want an error about %q", bad.vm, bad.pod, err, bad.want)
				}
				if _, err := AddRuntimePod(ctx, name, bad.vm, bad.pod, RuntimeContainerd, "/nonexistent/pause", nil); err == nil || !strings.Contains(err.Error(), bad.want) {
					t.Errorf("AddRuntimePod(%s, %s) = %v, want an error about %q", bad.vm, bad.pod, err, bad.want)
				}
			}
			m, err := Check(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range m.Rows {
				if !r.OK {
					t.Errorf("check %s %s → %s: expected %s, observed %s", r.Check, r.From, r.To, r.Expected, r.Observed)
				}
			}
			kinds := map[string]bool{}
			for _, r := range m.Rows {
				kinds[r.Check] = true
			}
			for _, k := range []string{"pod↔pod same VM", "pod↔pod across VMs", "pod↔pod across VMs (TCP)", "VM→pod", "pod→internet (source seen)",
				"pod→wireserver DNS", "pod→IMDS", "hostPort (portmap)"} {
				if !kinds[k] {
					t.Errorf("the matrix has no %q row", k)
				}
			}
			st, err := GetStatus(name)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range st.VMs {
				if v.PoolUsed != 5 || v.PoolSize != 8 || v.Pods != 5 {
					t.Errorf("status of %s: used %d of %d with %d pods; want 5 of 8 with 5", v.Name, v.PoolUsed, v.PoolSize, v.Pods)
				}
				if v.Drops.BadMAC != 0 || v.Drops.BadIP != 0 {
					t.Errorf("fabric dropped legitimate traffic of %s: %+v", v.Name, v.Drops)
				}
			}
			if err := DelPod(ctx, name, l.Spec.VMs[0].Name, "p1"); err != nil {
				t.Fatalf("del pod: %v", err)
			}
			if err := DelPod(ctx, name, l.Spec.VMs[0].Name, "p1"); err != nil {
				t.Errorf("del pod twice: %v", err)
			}
			if err := Down(name); err != nil {
				t.Fatal(err)
			}
			if err := Down(name); err != nil {
				t.Errorf("down twice: %v", err)
			}
			after := take(t, name)
			if len(after.namespaces) != 0 || after.dirExists {
				t.Errorf("down left namespaces %v, run directory %v", after.namespaces, after.dirExists)
			}
			if strings.Join(before.rootLinks, ",") != strings.Join(after.rootLinks, ",") {
				t.Errorf("the root namespace's links changed: before %v, after %v", before.rootLinks, after.rootLinks)
			}
		})
	}
}

// TestWireserverFault: with the wireserver down, pod creation fails naming
// it; once it is back, the pod comes up.
func TestWireserverFault(t *testing.T) {
	name := testName()
	l := up(t, name, twoAgents, "bridge")
	vm := l.Spec.VMs[0].Name
	if err := Fault(name, "wireserver", "down"); err != nil {
		t.Fatal(err)
	}
	_, err := AddPod(context.Background(), name, vm, "early", nil)
	if err == nil || !strings.Contains(err.Error(), "wireserver") {
		t.Fatalf("add pod with the wireserver down: %v; want an error naming the wireserver", err)
	}
	if netns.Exists(PodNetNS(name, vm, "early")) {
		t.Errorf("the failed pod's namespace was left behind")
	}
	if err := Fault(name, "wireserver", "up"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddPod(context.Background(), name, vm, "early", nil); err != nil {
		t.Fatalf("add pod after the wireserver returned: %v", err)
	}
}

// TestUp: a bad definition creates nothing; up again repairs a damaged lab;
// a different plan for an existing lab is refused.
func TestUp(t *testing.T) {
	name := testName()
	_, err := Up(context.Background(), UpOptions{Name: name, Definition: []byte(`{"properties":{}}`), BinDir: binDir})
	if err == nil || !strings.Contains(err.Error(), "clusterSubnet") {
		t.Errorf("up with an empty definition: %v; want an error naming clusterSubnet", err)
	}
	if s := take(t, name); len(s.namespaces) != 0 || s.dirExists {
		t.Errorf("a rejected definition left %v (dir %v)", s.namespaces, s.dirExists)
	}

	l := up(t, name, twoAgents, "bridge")
	vm := l.Spec.VMs[1].Name
	if err := netns.Delete(name + "-" + vm); err != nil {
		t.Fatal(err)
	}
	if _, err := Up(context.Background(), UpOptions{Name: name, Definition: []byte(twoAgents), Mode: "bridge", BinDir: binDir,
		Executable: filepath.Join(binDir, Binary)}); err != nil {
		t.Fatalf("up on a damaged lab: %v", err)
	}
	if _, err := AddPod(context.Background(), name, vm, "p", nil); err != nil {
		t.Fatalf("add pod on the repaired VM: %v", err)
	}
	m, err := Check(context.Background(), name)
	if err != nil || m.Failed != 0 {
		t.Errorf("check after repair: %v, %d failed", err, m.Failed)
	}
	_, err = Up(context.Background(), UpOptions{Name: name, Definition: []byte(twoAgents), Mode: "transparent", BinDir: binDir})
	if err == nil || !strings.Contains(err.Error(), "another plan") {
		t.Errorf("up with another mode on an existing lab: %v; want a refusal", err)
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"", "Lab", "a-b", "toolongname", "1abc"} {
		if ValidName(n) == nil {
			t.Errorf("ValidName(%q) accepted", n)
		}
	}
	for _, n := range []string{"lab", "a1", "demo2"} {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q): %v", n, err)
		}
	}
}

func TestIsLabProcess(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"/bin/vnetctl-lab", "serve", "--name", "lab"}, true},
		{[]string{"/bin/vnetctl-lab", "k8s", "node", "--name", "lab", "--vm", "vm-1"}, true},
		{[]string{"nsenter", "--net=/run/netns/lab-cp", "--", "/bin/vnetctl-lab", "k8s", "controlplane", "--name", "lab"}, true},
		{[]string{"/bin/vnetctl-lab", "serve", "--name", "lab2"}, false},
		{[]string{"/bin/vnetctl-lab", "up", "--name", "lab"}, false},
		{[]string{"/bin/vnetctl", "lab", "serve", "--name", "lab"}, false}, // vnetctl execs the lab binary: never a daemon itself
		{[]string{"kubelet", "--name", "lab"}, false},
	} {
		if got := isLabProcess(tc.args, "lab"); got != tc.want {
			t.Errorf("isLabProcess(%q, lab) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
