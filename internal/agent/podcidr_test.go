package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNodePodCIDR(t *testing.T) {
	reads := 0
	node := &corev1.Node{Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.3.0/24", "fd00::/64"}}}
	s := &nodePodCIDR{node: "vm-1", get: func(_ context.Context, name string) (*corev1.Node, error) {
		reads++
		if name != "vm-1" {
			return nil, errors.New("wrong node " + name)
		}
		return node, nil
	}}
	podCIDR := func(b []byte) string {
		var c struct {
			IPAM struct {
				PodCIDR string `json:"podCIDR"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		return c.IPAM.PodCIDR
	}
	ctx := context.Background()
	for _, tc := range []struct{ name, conf, want string }{
		{"overlay without podCIDR: the node's", `{"name":"a","ipam":{"type":"azure-vnet-ipam","mode":"v4overlay","clusterCIDR":"10.244.0.0/16"}}`, "10.244.3.0/24"},
		{"kubenet without podCIDR: the node's", `{"name":"a","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","clusterCIDR":"10.244.0.0/16"}}`, "10.244.3.0/24"},
		{"the conflist's own wins", `{"name":"a","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.244.9.0/24"}}`, "10.244.9.0/24"},
		{"Azure CNI: untouched", `{"name":"a","ipam":{"type":"azure-vnet-ipam"}}`, ""},
	} {
		got, err := s.fill(ctx, []byte(tc.conf))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if p := podCIDR(got); p != tc.want {
			t.Errorf("%s: podCIDR %q, want %q", tc.name, p, tc.want)
		}
		if tc.want == "" && string(got) != tc.conf {
			t.Errorf("%s: rewritten to %s", tc.name, got)
		}
	}
	if reads != 1 {
		t.Errorf("node read %d times; the pod CIDR never changes once set, want 1", reads)
	}

	// A node without a pod CIDR yet: retryable, and read again next time.
	node = &corev1.Node{}
	s.cidr = ""
	if _, err := s.fill(ctx, []byte(`{"name":"a","ipam":{"mode":"v4overlay"}}`)); !errors.Is(err, errNoPodCIDR) || !strings.Contains(err.Error(), "vm-1") {
		t.Errorf("node without pod CIDR: %v", err)
	}
	// No API access: configurations pass untouched (the plugin says podCIDR is required).
	none := &nodePodCIDR{node: "vm-1"}
	in := `{"name":"a","ipam":{"mode":"v4overlay"}}`
	if got, err := none.fill(ctx, []byte(in)); err != nil || string(got) != in {
		t.Errorf("no API access: %s, %v", got, err)
	}
}
