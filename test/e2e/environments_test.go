package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// TestPoolSources: the pool comes from IMDS, a MAS file, a static list or a
// wireserver at another URL as configured, each giving addresses of the
// VM's own NIC.
func TestPoolSources(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source string // what the pool's recorded source says
		ipam   func(m *vm) map[string]any
		check  func(t *testing.T, m *vm, p *pod)
	}{
		{"imds", "IMDS http://169.254.169.254/", func(*vm) map[string]any {
			return map[string]any{"type": "azure-vnet-ipam", "environment": "imds"}
		}, nil},
		{"imds-url", "IMDS http://169.254.169.254:80/", func(*vm) map[string]any {
			return map[string]any{"type": "azure-vnet-ipam", "environment": "imds", "imdsURL": "http://" + fabric.IMDSIP.String() + ":80/"}
		}, nil},
		{"wireserver-url", "wireserver http://168.63.129.16/", func(*vm) map[string]any {
			return map[string]any{"type": "azure-vnet-ipam", "wireserverURL": "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"}
		}, nil},
		{"file", "file ", func(m *vm) map[string]any {
			return map[string]any{"type": "azure-vnet-ipam", "environment": "file", "file": masFile(t, m)}
		}, nil},
		{"static", "static config", func(m *vm) map[string]any {
			return map[string]any{"type": "azure-vnet-ipam", "environment": "static", "subnet": subnet.String(),
				"primaryIP": m.spec.PrimaryIP.String(), "addresses": []string{m.spec.SecondaryIPs[1].String()}}
		}, func(t *testing.T, m *vm, p *pod) {
			if p.ip != m.spec.SecondaryIPs[1] {
				t.Errorf("static pool gave %s, want the only listed %s", p.ip, m.spec.SecondaryIPs[1])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 2, conflist: conflist(t, "1.0.0", datapath.ModeBridge, nil)})
			for _, m := range c.vms {
				// Each VM gets its own config (the file source names its file).
				list := conflist(t, "1.0.0", datapath.ModeBridge, map[string]any{"ipam": tc.ipam(m)})
				l, err := parseList(list)
				if err != nil {
					t.Fatal(err)
				}
				m.list = l
			}
			a := c.vms[0].addPod(t, "a")
			x := c.vms[1].addPod(t, "x")
			for _, p := range []*pod{a, x} {
				if !p.vm.inPool(p.ip) {
					t.Errorf("%s got %s, not a secondary of %s", p.name, p.ip, p.vm.spec.Name)
				}
				if tc.check != nil {
					tc.check(t, p.vm, p)
				}
			}
			mustPing(t, a.ns, x.ip)
			st := c.vms[0].state(t)
			for _, pool := range st.Pools {
				if !strings.HasPrefix(pool.Source, tc.source) {
					t.Errorf("pool source %q, want it to start with %q", pool.Source, tc.source)
				}
			}
		})
	}
}

// masFile writes the VM's interfaces in the MAS shape.
func masFile(t *testing.T, m *vm) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"Interfaces":[{"MacAddress":"` + nic.FormatAzureMAC(net.HardwareAddr(m.spec.MAC)) + `","IsPrimary":true,"IPSubnets":[{"Prefix":"` + subnet.String() + `","IPAddresses":[`)
	b.WriteString(`{"Address":"` + m.spec.PrimaryIP.String() + `","IsPrimary":true}`)
	for _, a := range m.spec.SecondaryIPs {
		b.WriteString(`,{"Address":"` + a.String() + `","IsPrimary":false}`)
	}
	b.WriteString(`]}]}]}`)
	p := filepath.Join(m.dir, "interfaces.json")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
