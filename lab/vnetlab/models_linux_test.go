package vnetlab

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/lab/plan"
)

// TestModels brings up the overlay and kubenet models in both modes (two
// nodes, two pods each): pods take their node's pod CIDR, and the
// check matrix — pod↔pod across nodes through the fabric's overlay routes
// or the subnet's route table, SNAT to the node for the VM outside the
// cluster, which cannot reach pods — passes.
func TestModels(t *testing.T) {
	for _, tc := range []struct{ model, mode string }{
		{plan.ModelOverlay, "transparent"}, {plan.ModelOverlay, "bridge"},
		{plan.ModelKubenet, "transparent"}, {plan.ModelKubenet, "bridge"},
	} {
		model, mode := tc.model, tc.mode
		t.Run(model+"/"+mode, func(t *testing.T) {
			name := testName()
			t.Cleanup(func() {
				if err := Down(name); err != nil {
					t.Errorf("down: %v", err)
				}
			})
			ctx := context.Background()
			l, err := Up(ctx, UpOptions{Name: name, Definition: []byte(twoAgents), Model: model, Mode: mode,
				BinDir: binDir, Executable: filepath.Join(binDir, Binary)})
			if err != nil {
				t.Fatalf("up --model %s: %v", model, err)
			}
			if l.Mode != mode || len(l.Nodes()) != 2 || l.Plan.Outside == nil {
				t.Fatalf("up --model %s --mode %s: %s mode, %d nodes, outside VM %v; want %s, 2, one", model, mode, l.Mode, len(l.Nodes()), l.Plan.Outside, mode)
			}
			if model == plan.ModelKubenet {
				if len(l.Spec.RouteTables) != 1 || len(l.Spec.RouteTables[0].Routes) != 2 {
					t.Errorf("kubenet lab's route tables: %+v; want one with a route per node", l.Spec.RouteTables)
				}
			}
			for i, v := range l.Nodes() {
				for k := 1; k <= 2; k++ {
					var ports []cnirunner.PortMapping
					if k == 1 {
						ports = []cnirunner.PortMapping{{HostPort: 30080, ContainerPort: 8080, Protocol: "tcp"}}
					}
					p, err := AddPod(ctx, name, v.Name, fmt.Sprintf("p%d", k), ports)
					if err != nil {
						t.Fatalf("add pod: %v", err)
					}
					if block := l.Plan.Nodes[i].PodCIDR; !block.Contains(p.IP) {
						t.Errorf("pod %s/%s got %s, outside its node's pod CIDR %s", p.VM, p.Name, p.IP, block)
					}
				}
			}
			m, err := Check(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]bool{}
			for _, r := range m.Rows {
				kinds[r.Check] = true
				if !r.OK {
					t.Errorf("%s: check %s %s → %s: expected %s, observed %s", model, r.Check, r.From, r.To, r.Expected, r.Observed)
				}
			}
			for _, k := range []string{"pod↔pod across VMs (TCP)", "pod→VM outside the cluster (source seen)", "VM outside the cluster→pod",
				"pod→internet (source seen)", "pod→wireserver DNS", "hostPort (portmap)"} {
				if !kinds[k] {
					t.Errorf("the %s matrix has no %q row", model, k)
				}
			}
			st, err := GetStatus(name)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range st.VMs {
				if v.Drops.BadMAC != 0 || v.Drops.BadIP != 0 {
					t.Errorf("fabric dropped legitimate traffic of %s: %+v", v.Name, v.Drops)
				}
			}
		})
	}
}
