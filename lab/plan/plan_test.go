package plan

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestExample(t *testing.T) {
	d, err := ParseDefinition([]byte(Example))
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.Plan(Options{})
	if err != nil {
		t.Fatalf("plan of the seed's example: %v", err)
	}
	if p.VNet.String() != "10.0.0.0/16" || p.Subnet.String() != "10.0.0.0/20" || p.Gateway.String() != "10.0.0.1" || p.Mode != "bridge" {
		t.Errorf("plan = VNet %s subnet %s gateway %s mode %s; want 10.0.0.0/16 10.0.0.0/20 10.0.0.1 bridge", p.VNet, p.Subnet, p.Gateway, p.Mode)
	}
	if len(p.Nodes) != 3 {
		t.Fatalf("%d nodes, want 1 master + 2 agents", len(p.Nodes))
	}
	m := p.Nodes[0]
	if m.Role != RoleMaster || m.PrimaryIP.String() != "10.0.1.50" || len(m.SecondaryIPs) != 30 || m.SecondaryIPs[0].String() != "10.0.1.51" {
		t.Errorf("master = %+v; want primary 10.0.1.50 with 30 secondaries from 10.0.1.51", m)
	}
	seen := map[netip.Addr]string{}
	for _, n := range p.Nodes {
		for _, a := range append([]netip.Addr{n.PrimaryIP}, n.SecondaryIPs...) {
			if other, dup := seen[a]; dup {
				t.Errorf("%s given to %s and %s", a, other, n.Name)
			}
			seen[a] = n.Name
			if Reserved(p.Subnet, a) || !p.Subnet.Contains(a) {
				t.Errorf("%s (%s) is reserved or outside the subnet", a, n.Name)
			}
		}
	}
	if used, usable := p.Utilisation(); used != 93 || usable != 4091 {
		t.Errorf("utilisation %d/%d, want 93/4091", used, usable)
	}
}

// The seed prints its example with "-->" remarks and a "{…}" placeholder;
// it must parse as printed.
func TestSeedAsPrinted(t *testing.T) {
	printed := `{
  "apiVersion": "vlabs",
  "properties": {
    "orchestratorProfile": {
      "orchestratorType": "Kubernetes",
      "kubernetesConfig": {
        "clusterSubnet": "10.0.0.0/20" --> Subnet allocated for the cluster
      }
    },
    "masterProfile": {
      "count": 1,
      "firstConsecutiveStaticIP": "10.0.1.50", --> IP address allocated to the Master node
"vnetCidr": "10.0.0.0/16" --> Virtual network address space
    },
    "agentPoolProfiles": [ { "name": "k8sagentpoo1", "count": 2 } ],
    "linuxProfile": { "ssh": { "publicKeys": [ {…} ] } }
  }
}`
	d, err := ParseDefinition([]byte(printed))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if _, err := d.Plan(Options{}); err != nil {
		t.Fatalf("plan: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	base := func() map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(Example), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	props := func(m map[string]any) map[string]any { return m["properties"].(map[string]any) }
	kc := func(m map[string]any) map[string]any {
		return props(m)["orchestratorProfile"].(map[string]any)["kubernetesConfig"].(map[string]any)
	}
	master := func(m map[string]any) map[string]any { return props(m)["masterProfile"].(map[string]any) }
	pool := func(m map[string]any) map[string]any {
		return props(m)["agentPoolProfiles"].([]any)[0].(map[string]any)
	}
	for _, tc := range []struct {
		name   string
		edit   func(m map[string]any)
		mode   string
		field  string
		substr string
	}{
		{"no cluster subnet", func(m map[string]any) { delete(kc(m), "clusterSubnet") }, "", "clusterSubnet", "required"},
		{"bad cluster subnet", func(m map[string]any) { kc(m)["clusterSubnet"] = "10.0.0.0/33" }, "", "clusterSubnet", "not an IPv4 CIDR"},
		{"IPv6 cluster subnet", func(m map[string]any) { kc(m)["clusterSubnet"] = "fd00::/64" }, "", "clusterSubnet", "not an IPv4 CIDR"},
		{"tiny subnet", func(m map[string]any) { kc(m)["clusterSubnet"] = "10.0.0.0/30" }, "", "clusterSubnet", "minimum subnet /29"},
		{"subnet outside VNet", func(m map[string]any) { kc(m)["clusterSubnet"] = "10.1.0.0/20" }, "", "clusterSubnet", "not inside vnetCidr 10.0.0.0/16"},
		{"subnet larger than VNet", func(m map[string]any) { kc(m)["clusterSubnet"] = "10.0.0.0/15" }, "", "clusterSubnet", "not inside vnetCidr"},
		{"bad vnet cidr", func(m map[string]any) { master(m)["vnetCidr"] = "banana" }, "", "vnetCidr", "not an IPv4 CIDR"},
		{"master ip outside subnet", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.16.5" }, "", "firstConsecutiveStaticIP", "not inside clusterSubnet"},
		{"master ip reserved (gateway)", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.0.1" }, "", "firstConsecutiveStaticIP", "reserved by Azure"},
		{"master ip reserved (network)", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.0.0" }, "", "firstConsecutiveStaticIP", "reserved by Azure"},
		{"master ip reserved (DNS)", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.0.3" }, "", "firstConsecutiveStaticIP", "reserved by Azure"},
		{"master ip reserved (broadcast)", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.15.255" }, "", "firstConsecutiveStaticIP", "reserved by Azure"},
		{"master block runs off the subnet", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "10.0.15.240" }, "", "firstConsecutiveStaticIP", "run past the usable end"},
		{"master ip missing", func(m map[string]any) { delete(master(m), "firstConsecutiveStaticIP") }, "", "firstConsecutiveStaticIP", "required"},
		{"master ip garbage", func(m map[string]any) { master(m)["firstConsecutiveStaticIP"] = "ten" }, "", "firstConsecutiveStaticIP", "not an IPv4 address"},
		{"too many masters", func(m map[string]any) { master(m)["count"] = 7 }, "", "masterProfile.count", "between 0 and 5"},
		{"max pods above 250", func(m map[string]any) { kc(m)["kubeletConfig"] = map[string]any{"--max-pods": "251"} }, "", "--max-pods", "between 1 and 250"},
		{"max pods zero", func(m map[string]any) { kc(m)["kubeletConfig"] = map[string]any{"--max-pods": "0"} }, "", "--max-pods", "between 1 and 250"},
		{"max pods not a number", func(m map[string]any) { kc(m)["kubeletConfig"] = map[string]any{"--max-pods": "lots"} }, "", "--max-pods", "not a number"},
		{"subnet too small for the pods", func(m map[string]any) {
			kc(m)["clusterSubnet"] = "10.0.1.0/26"
			master(m)["firstConsecutiveStaticIP"] = "10.0.1.10"
		}, "", "clusterSubnet", "need 93"},
		{"more than 16000 pods", func(m map[string]any) {
			kc(m)["clusterSubnet"] = "10.0.0.0/16"
			kc(m)["kubeletConfig"] = map[string]any{"--max-pods": "250"}
			pool(m)["count"] = 70
		}, "", "agentPoolProfiles", "at most 16000"},
		{"resource group name too long", func(m map[string]any) {
			master(m)["vnetSubnetId"] = "/subscriptions/s/resourceGroups/" + strings.Repeat("r", 64) + "/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
			delete(pool(m), "vnetSubnetId")
		}, "", "vnetSubnetId", "longer than 63"},
		{"vnet name too long", func(m map[string]any) {
			master(m)["vnetSubnetId"] = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/" + strings.Repeat("v", 64) + "/subnets/s"
			delete(pool(m), "vnetSubnetId")
		}, "", "vnetSubnetId", "virtual network name"},
		{"subnet id with placeholders", func(m map[string]any) {
			master(m)["vnetSubnetId"] = "/subscriptions/<subscription ID>/resourceGroups/<Resource Group Name>/providers/Microsoft.Network/virtualNetworks/<Vnet Name>/subnets/KubeClusterSubnet"
		}, "", "vnetSubnetId", "placeholder"},
		{"malformed subnet id", func(m map[string]any) { master(m)["vnetSubnetId"] = "/subscriptions/x" }, "", "vnetSubnetId", "is not /subscriptions"},
		{"agent in another subnet", func(m map[string]any) {
			pool(m)["vnetSubnetId"] = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/other"
		}, "", "agentPoolProfiles[0].vnetSubnetId", "differs"},
		{"bad pool name", func(m map[string]any) { pool(m)["name"] = "Agent_Pool" }, "", "agentPoolProfiles[0].name", "lower-case"},
		{"negative count", func(m map[string]any) { pool(m)["count"] = -1 }, "", "agentPoolProfiles[0].count", "between 0 and 100"},
		{"no nodes", func(m map[string]any) { master(m)["count"] = 0; pool(m)["count"] = 0 }, "", "agentPoolProfiles", "no nodes"},
		{"unknown mode", func(map[string]any) {}, "vepa", "mode", "bridge or transparent"},
		{"other network plugin", func(m map[string]any) { kc(m)["networkPlugin"] = "calico" }, "", "networkPlugin", "azure or kubenet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.edit(m)
			b, _ := json.Marshal(m)
			d, err := ParseDefinition(b)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			p, err := d.Plan(Options{Mode: tc.mode})
			if err == nil {
				t.Fatalf("plan accepted, want an error about %s; nodes %d", tc.field, len(p.Nodes))
			}
			if !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q; want it to name %q and say %q", err, tc.field, tc.substr)
			}
		})
	}
}

func TestWrongType(t *testing.T) {
	_, err := ParseDefinition([]byte(`{"properties":{"masterProfile":{"count":"one"}}}`))
	if err == nil || !strings.Contains(err.Error(), "count") {
		t.Errorf("err = %v, want a wrong-type error naming count", err)
	}
}

func TestTransparentFromDefinition(t *testing.T) {
	d, _ := ParseDefinition([]byte(strings.Replace(Example, `"clusterSubnet": "10.0.0.0/20"`, `"clusterSubnet": "10.0.0.0/20", "networkMode": "transparent"`, 1)))
	p, err := d.Plan(Options{})
	if err != nil || p.Mode != "transparent" {
		t.Errorf("mode = %v, %v; want transparent from networkMode", p, err)
	}
	p, err = d.Plan(Options{Mode: "bridge"})
	if err != nil || p.Mode != "bridge" {
		t.Errorf("the --mode option must override the definition: %v, %v", p, err)
	}
}

func TestAPIServerSubnet(t *testing.T) {
	d, _ := ParseDefinition([]byte(Example))
	p, err := d.Plan(Options{Kubernetes: true})
	if err != nil {
		t.Fatal(err)
	}
	a := p.APIServer
	if a == nil || a.Subnet.String() != "10.0.16.0/28" || a.NodeIP.String() != "10.0.16.4" || a.VIP.String() != "10.0.16.5" || len(a.Reserved) != MinAPIServerIPs {
		t.Fatalf("API server plan %+v; want 10.0.16.0/28 with node 10.0.16.4, VIP 10.0.16.5 and 9 reserved", a)
	}
	if p2, _ := d.Plan(Options{}); p2.APIServer != nil {
		t.Errorf("a plan without Kubernetes has an API server subnet")
	}
	for _, tc := range []struct{ prefix, want string }{
		{"10.0.16.0/29", "smaller than /28"},
		{"10.1.0.0/28", "not inside the VNet"},
		{"10.0.0.0/28", "overlaps the cluster subnet"},
		{"bogus", "not an IPv4 CIDR"},
	} {
		def := strings.Replace(Example, `"agentPoolProfiles"`, `"apiServerAccessProfile": {"enableVnetIntegration": true, "subnetPrefix": "`+tc.prefix+`"}, "agentPoolProfiles"`, 1)
		d, err := ParseDefinition([]byte(def))
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Plan(Options{})
		if err == nil || !strings.Contains(err.Error(), "apiServerAccessProfile.subnetPrefix") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("API subnet %s: %v; want an error naming subnetPrefix saying %q", tc.prefix, err, tc.want)
		}
	}
	// The seed 003 layout: VNet 172.19.0.0/16, API subnet 172.19.0.0/28, cluster subnet 172.19.1.0/24.
	def := `{"properties": {"orchestratorProfile": {"kubernetesConfig": {"clusterSubnet": "172.19.1.0/24"}},
	  "masterProfile": {"count": 0, "vnetCidr": "172.19.0.0/16"},
	  "apiServerAccessProfile": {"enableVnetIntegration": true, "subnetPrefix": "172.19.0.0/28"},
	  "agentPoolProfiles": [{"name": "pool", "count": 2, "kubernetesConfig": {"kubeletConfig": {"--max-pods": "10"}}}]}}`
	d, err = ParseDefinition([]byte(def))
	if err != nil {
		t.Fatal(err)
	}
	p, err = d.Plan(Options{})
	if err != nil || p.APIServer == nil || p.APIServer.VIP.String() != "172.19.0.5" {
		t.Errorf("seed 003 layout: %+v, %v", p, err)
	}
}

func TestModels(t *testing.T) {
	d, err := ParseDefinition([]byte(Example))
	if err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{ModelOverlay, ModelKubenet} {
		p, err := d.Plan(Options{Model: model, Kubernetes: true})
		if err != nil {
			t.Fatalf("Plan(%s): %v", model, err)
		}
		if p.Mode != "transparent" || p.PodCIDR != DefaultPodCIDR {
			t.Errorf("Plan(%s): mode %s, pod CIDR %s; want transparent, %s", model, p.Mode, p.PodCIDR, DefaultPodCIDR)
		}
		want := []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}
		for i, n := range p.Nodes {
			if len(n.SecondaryIPs) != 0 || n.PodCIDR.String() != want[i] {
				t.Errorf("Plan(%s): node %s has %d secondary IPs and pod CIDR %s; want none and %s", model, n.Name, len(n.SecondaryIPs), n.PodCIDR, want[i])
			}
		}
		// After the API server's /28 (10.0.16.0/28).
		if p.Outside == nil || p.OutsideSubnet.String() != "10.0.16.16/28" || p.Outside.PrimaryIP.String() != "10.0.16.20" {
			t.Errorf("Plan(%s): outside VM %+v in %s; want 10.0.16.20 in 10.0.16.16/28", model, p.Outside, p.OutsideSubnet)
		}
	}
	if p, err := d.Plan(Options{Model: ModelKubenet, Mode: "bridge"}); err != nil || p.Mode != "bridge" {
		t.Errorf("Plan(kubenet, bridge) = %v, %v; want bridge mode", p, err)
	}
	if _, err := d.Plan(Options{Model: "flannel"}); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("Plan(flannel) = %v, want an error naming the model", err)
	}
}
