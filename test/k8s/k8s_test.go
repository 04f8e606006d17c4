// Package k8s runs a real Kubernetes cluster on the lab's emulated VNet with
// the azure-vnet plugins, in each mode: `make e2e-k8s`.
package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/testbin"
	"github.com/vnetcni/vnetcni/lab/vnetlab"
)

// EnvK8sBinDir names the Kubernetes binaries (scripts/k8s-binaries.sh);
// without it, and without binaries in the default cache, the tests skip.
const EnvK8sBinDir = "VNETCNI_K8S_BIN_DIR"

var binDir, k8sBinDir string

func TestMain(m *testing.M) {
	k8sBinDir = os.Getenv(EnvK8sBinDir)
	if k8sBinDir == "" {
		k8sBinDir = k8slab.DefaultBinDir
	}
	if _, err := os.Stat(filepath.Join(k8sBinDir, "kubelet")); err != nil && os.Getenv("VNETCNI_E2E_K8S") == "1" {
		fmt.Printf("k8s: no Kubernetes binaries in %s (make k8s-binaries builds them)\n", k8sBinDir)
		os.Exit(1)
	}
	testbin.Main(m, testbin.Suite{Name: "k8s", Gate: "VNETCNI_E2E_K8S", Hint: "make e2e-k8s, which builds the Kubernetes binaries"}, &binDir)
}

// twoNodes: two agent VMs, six pods each, subnet 10.2.0.0/24.
const twoNodes = `{"properties": {
  "orchestratorProfile": {"kubernetesConfig": {"clusterSubnet": "10.2.0.0/24", "kubeletConfig": {"--max-pods": "6"}}},
  "masterProfile": {"count": 0, "vnetCidr": "10.2.0.0/16"},
  "agentPoolProfiles": [{"name": "pool", "count": 2}]}}`

// TestCluster runs the cluster in each mode of Azure CNI, and in the
// overlay model in transparent mode (Azure's form of it) and the kubenet
// model in bridge mode (upstream kubenet's cbr0 form).
func TestCluster(t *testing.T) {
	for _, tc := range []struct{ name, mode, model string }{
		{"bridge", "bridge", ""},
		{"transparent", "transparent", ""},
		{"overlay", "transparent", "overlay"},
		{"kubenet", "bridge", "kubenet"},
	} {
		t.Run(tc.name, func(t *testing.T) { testCluster(t, tc.mode, tc.model) })
	}
}

func testCluster(t *testing.T, mode, model string) {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "k" + hex.EncodeToString(b)
	ctx := context.Background()
	start := time.Now()
	t.Cleanup(func() { _ = vnetlab.Down(name) })
	l, err := vnetlab.Up(ctx, vnetlab.UpOptions{Name: name, Definition: []byte(twoNodes), Mode: mode, Model: model, BinDir: binDir,
		Executable: filepath.Join(binDir, vnetlab.Binary), Kubernetes: true, K8sBinDir: k8sBinDir, Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("lab up --kubernetes: %v", err)
	}
	t.Logf("cluster Ready in %s", time.Since(start).Round(time.Second))
	c := l.Kubernetes

	// The operator's view: nodes Ready with their VM's address.
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.addresses[?(@.type==\"InternalIP\")].address} {end}")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range l.Nodes() {
		if !strings.Contains(out, v.Name+"="+v.PrimaryIP.String()) {
			t.Errorf("nodes %q: want %s with InternalIP %s", out, v.Name, v.PrimaryIP)
		}
	}

	// The examples work as shipped.
	if _, err := c.Kubectl(ctx, "apply", "-f", "../../examples/"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "rollout", "status", "deployment/echo", "--timeout=180s"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		logs, _ := c.Kubectl(ctx, "logs", "client")
		if strings.Contains(logs, ": 200 in ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the example client never got an answer from the echo Service:\n%s", logs)
		}
		time.Sleep(2 * time.Second)
	}
	if _, err := c.Kubectl(ctx, "delete", "-f", "../../examples/", "--wait=true", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}

	m, err := vnetlab.CheckKubernetes(ctx, name)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, r := range m.Rows {
		if !r.OK {
			t.Errorf("%s %s → %s: expected %s, observed %s", r.Check, r.From, r.To, r.Expected, r.Observed)
		}
	}
	if m.Passed < 10 {
		t.Errorf("only %d checks ran", m.Passed)
	}

	if err := vnetlab.Down(name); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left, _ := netns.List(name + "-"); len(left) > 0 {
		t.Errorf("down left namespaces %v", left)
	}
	for _, v := range l.Nodes() {
		for _, cg := range []string{k8slab.NodeCgroup(name, v.Name), k8slab.PodCgroup(name, v.Name)} {
			if pids := k8slab.CgroupPIDs(cg); len(pids) > 0 {
				t.Errorf("down left processes %v in cgroup %s", pids, cg)
			}
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", cg)); err == nil {
				t.Errorf("down left cgroup %s", cg)
			}
		}
	}
	if _, err := os.Stat(vnetlab.Dir(name)); err == nil {
		t.Errorf("down left %s", vnetlab.Dir(name))
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
