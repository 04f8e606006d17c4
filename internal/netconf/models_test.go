package netconf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPodCIDRModels(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		// wanted on success
		mode          string
		nonMasquerade []string
		// wanted on failure: the field named
		field string
	}{
		{name: "overlay, Azure's fields",
			conf: `{"name":"azure","mode":"transparent","executionMode":"v4swift","ipam":{"type":"azure-vnet-ipam","mode":"v4overlay","podCIDR":"10.244.1.0/24","clusterCIDR":"10.244.0.0/16"}}`,
			mode: ModeTransparent, nonMasquerade: []string{"10.244.0.0/16"}},
		{name: "kubenet, mode defaults to transparent",
			conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.244.2.0/24","clusterCIDR":"10.244.0.0/16"}}`,
			mode: ModeTransparent, nonMasquerade: []string{"10.244.0.0/16"}},
		{name: "operator's ranges kept",
			conf: `{"name":"k","nonMasqueradeCIDRs":["192.168.0.0/16"],"ipam":{"type":"azure-vnet-ipam","mode":"v4overlay","podCIDR":"10.244.2.0/24","clusterCIDR":"10.244.0.0/16"}}`,
			mode: ModeTransparent, nonMasquerade: []string{"192.168.0.0/16", "10.244.0.0/16"}},
		{name: "unknown mode", conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"v6overlay"}}`, field: "ipam.mode"},
		{name: "no pod CIDR", conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"v4overlay","clusterCIDR":"10.244.0.0/16"}}`, field: "ipam.podCIDR"},
		{name: "no cluster CIDR", conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.244.2.0/24"}}`, field: "ipam.clusterCIDR"},
		{name: "pod CIDR outside", conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.245.2.0/24","clusterCIDR":"10.244.0.0/16"}}`, field: "ipam.podCIDR"},
		{name: "pod CIDR too small", conf: `{"name":"k","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.244.2.0/31","clusterCIDR":"10.244.0.0/16"}}`, field: "ipam.podCIDR"},
		{name: "bridge mode: the pods' router bridge",
			conf: `{"name":"k","mode":"bridge","ipam":{"type":"azure-vnet-ipam","mode":"kubenet","podCIDR":"10.244.2.0/24","clusterCIDR":"10.244.0.0/16"}}`,
			mode: ModeBridge, nonMasquerade: []string{"10.244.0.0/16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.conf))
			if tc.field != "" {
				if err == nil || !IsFieldError(err) || !strings.Contains(err.Error(), tc.field+":") {
					t.Fatalf("Parse(%s) = %v, want a FieldError naming %s", tc.conf, err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%s): %v", tc.conf, err)
			}
			var want []netip.Prefix
			for _, s := range tc.nonMasquerade {
				want = append(want, netip.MustParsePrefix(s))
			}
			if c.Mode != tc.mode || !c.PodCIDRModel() {
				t.Errorf("Parse(%s): mode %q, pod-CIDR model %t; want %q, true", tc.conf, c.Mode, c.PodCIDRModel(), tc.mode)
			}
			if diff := cmp.Diff(want, c.NonMasquerade, equateNetip); diff != "" {
				t.Errorf("Parse(%s): nonMasquerade (-want +got):\n%s", tc.conf, diff)
			}
		})
	}
}
