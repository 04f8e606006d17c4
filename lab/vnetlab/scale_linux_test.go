package vnetlab

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/plan"
)

// TestScale simulates kubenet at its 400 nodes and overlay at 5,000: every
// node's route is in the fabric's tables, and kubenet's 401st node is
// refused by the route table's limit, naming the node.
func TestScale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ctx := context.Background()
	name := testName()
	k, err := Scale(ctx, name, plan.ModelKubenet, plan.MaxKubenetNodes)
	if err != nil {
		t.Fatalf("Scale(kubenet, 400): %v", err)
	}
	if k.TableRoutes != fabric.MaxRoutesPerTable {
		t.Errorf("Scale(kubenet, 400): %d routes in the route table's kernel table, want %d", k.TableRoutes, fabric.MaxRoutesPerTable)
	}
	if !strings.Contains(k.OneMore, "vm-401") || !strings.Contains(k.OneMore, "at most 400") {
		t.Errorf("Scale(kubenet, 400): the 401st node got %q, want a refusal naming vm-401 and the limit", k.OneMore)
	}
	o, err := Scale(ctx, name, plan.ModelOverlay, 5000)
	if err != nil {
		t.Fatalf("Scale(overlay, 5000): %v", err)
	}
	// A /32 per node and a route per node's block.
	if o.MainRoutes < 2*5000 {
		t.Errorf("Scale(overlay, 5000): %d routes in the main table, want at least %d", o.MainRoutes, 2*5000)
	}
	t.Logf("kubenet 400: plan %s, program %s; overlay 5000: plan %s, program %s", k.Plan, k.Program, o.Plan, o.Program)
}
