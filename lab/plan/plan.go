// Package plan turns a cluster definition in the ACS-Engine shape (seed
// 001) into a VNet address plan — which VM gets which primary and secondary
// IP configurations — and validates it against Azure's rules before anything
// is created.
package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Limits from the seed documents.
const (
	DefaultMaxPods = 30
	MaxMaxPods     = 250
	MaxPodsPerVNet = 16000
	MaxNameLen     = 63 // resource group, VNet and subnet names
)

// Network models (seed 002).
const (
	ModelAzureCNI = "azure-cni" // pods take the NIC's secondary IPs (the default)
	ModelOverlay  = "overlay"   // Azure CNI Overlay: a /24 of a private pod CIDR per node
	ModelKubenet  = "kubenet"   // a per-node pod CIDR, a route table on the subnet
)

// Models lists the network models the lab builds.
var Models = []string{ModelAzureCNI, ModelOverlay, ModelKubenet}

// Pod CIDR defaults of the pod-CIDR models, AKS's: 10.244.0.0/16 for the
// cluster, a /24 (room for 250 pods) per node.
var DefaultPodCIDR = netip.MustParsePrefix("10.244.0.0/16")

const NodePodCIDRBits = 24

// MaxKubenetNodes is kubenet's node limit: one route per node in the
// subnet's route table, which holds at most 400 (Azure's limit, and the
// fabric's: fabric.MaxRoutesPerTable).
const MaxKubenetNodes = 400

// OutsideVM names the VM the lab adds, in a subnet of its own, to pod-CIDR
// models: a VM of the VNet that is not in the cluster, to show that pods
// reach it and it does not reach pods.
const OutsideVM = "outside"

// Definition is the part of an ACS-Engine cluster definition (apimodel) the
// network plan needs. Other fields are accepted and ignored.
type Definition struct {
	APIVersion string `json:"apiVersion"`
	Properties struct {
		OrchestratorProfile struct {
			OrchestratorType string           `json:"orchestratorType"`
			KubernetesConfig KubernetesConfig `json:"kubernetesConfig"`
		} `json:"orchestratorProfile"`
		MasterProfile struct {
			Count                    *int   `json:"count"`
			DNSPrefix                string `json:"dnsPrefix"`
			VMSize                   string `json:"vmSize"`
			VnetSubnetID             string `json:"vnetSubnetId"`
			FirstConsecutiveStaticIP string `json:"firstConsecutiveStaticIP"`
			VnetCidr                 string `json:"vnetCidr"`
		} `json:"masterProfile"`
		AgentPoolProfiles []AgentPool `json:"agentPoolProfiles"`
		// APIServerAccessProfile puts the API server in a delegated subnet
		// of the VNet (seed 003), in the shape of AKS's API.
		APIServerAccessProfile *struct {
			EnableVnetIntegration bool   `json:"enableVnetIntegration"`
			SubnetPrefix          string `json:"subnetPrefix"`
		} `json:"apiServerAccessProfile"`
	} `json:"properties"`
}

// KubernetesConfig is orchestratorProfile.kubernetesConfig.
type KubernetesConfig struct {
	ClusterSubnet string `json:"clusterSubnet"`
	// NetworkPlugin is "azure" or "kubenet" (ACS-Engine's and AKS's
	// names); NetworkPluginMode "overlay" with "azure" is Azure CNI
	// Overlay (AKS's name). PodCidr is the pod-CIDR models' cluster CIDR
	// (AKS's podCidr; default 10.244.0.0/16).
	NetworkPlugin     string            `json:"networkPlugin"`
	NetworkPluginMode string            `json:"networkPluginMode"`
	PodCidr           string            `json:"podCidr"`
	NetworkMode       string            `json:"networkMode"`
	KubeletConfig     map[string]string `json:"kubeletConfig"`
}

// AgentPool is one entry of agentPoolProfiles.
type AgentPool struct {
	Name             string `json:"name"`
	Count            int    `json:"count"`
	VMSize           string `json:"vmSize"`
	VnetSubnetID     string `json:"vnetSubnetId"`
	KubernetesConfig *struct {
		KubeletConfig map[string]string `json:"kubeletConfig"`
	} `json:"kubernetesConfig"`
}

// Example is the seed's example cluster: one master and two agents in
// subnet 10.0.0.0/20 of VNet 10.0.0.0/16, the master at 10.0.1.50.
const Example = `{
  "apiVersion": "vlabs",
  "properties": {
    "orchestratorProfile": {
      "orchestratorType": "Kubernetes",
      "kubernetesConfig": { "clusterSubnet": "10.0.0.0/20" }
    },
    "masterProfile": {
      "count": 1,
      "dnsPrefix": "ACSKubeMaster",
      "vmSize": "Standard_A2",
      "vnetSubnetId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vnetcni-lab/providers/Microsoft.Network/virtualNetworks/vnetcni-vnet/subnets/KubeClusterSubnet",
      "firstConsecutiveStaticIP": "10.0.1.50",
      "vnetCidr": "10.0.0.0/16"
    },
    "agentPoolProfiles": [
      {
        "name": "k8sagentpoo1",
        "count": 2,
        "vmSize": "Standard_A2_v2",
        "vnetSubnetId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vnetcni-lab/providers/Microsoft.Network/virtualNetworks/vnetcni-vnet/subnets/KubeClusterSubnet",
        "availabilityProfile": "AvailabilitySet"
      }
    ]
  }
}`

// annotation matches the seed's "--> explanation" remarks after a value.
var annotation = regexp.MustCompile(`\s*-->[^\n]*`)

// ParseDefinition decodes a cluster definition. It also takes the seed's
// example as printed, with "--> remark" annotations and "{…}" placeholders.
func ParseDefinition(b []byte) (*Definition, error) {
	b = annotation.ReplaceAll(b, nil)
	b = bytes.ReplaceAll(b, []byte("{…}"), []byte("{}"))
	d := &Definition{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(d); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("cluster definition: %s: wrong type (%s)", te.Field, te.Value)
		}
		return nil, fmt.Errorf("cluster definition: %w", err)
	}
	return d, nil
}

// Role of a node.
const (
	RoleMaster = "master"
	RoleAgent  = "agent"
)

// Node is one VM and its NIC's IP configurations.
type Node struct {
	Name         string       `json:"name"`
	Role         string       `json:"role"`
	Pool         string       `json:"pool"` // agent pool name, or "master"
	PrimaryIP    netip.Addr   `json:"primaryIP"`
	SecondaryIPs []netip.Addr `json:"secondaryIPs"`
	MaxPods      int          `json:"maxPods"`
	// PodCIDR is the node's pod CIDR in the overlay and kubenet models.
	PodCIDR netip.Prefix `json:"podCIDR,omitzero"`
}

// Plan is the validated address plan of a cluster.
type Plan struct {
	VNet          netip.Prefix `json:"vnet"`
	Subnet        netip.Prefix `json:"subnet"`
	Gateway       netip.Addr   `json:"gateway"`
	ResourceGroup string       `json:"resourceGroup,omitempty"`
	VNetName      string       `json:"vnetName,omitempty"`
	SubnetName    string       `json:"subnetName,omitempty"`
	Mode          string       `json:"mode"`
	// Model is the network model; PodCIDR the cluster's pod CIDR in the
	// overlay and kubenet models, carved into one NodePodCIDRBits block per
	// node; Outside a VM of the VNet outside the cluster (those models
	// only), in OutsideSubnet.
	Model         string       `json:"model"`
	PodCIDR       netip.Prefix `json:"podCIDR,omitzero"`
	Nodes         []Node       `json:"nodes"`
	Outside       *Node        `json:"outside,omitempty"`
	OutsideSubnet netip.Prefix `json:"outsideSubnet,omitzero"`
	// APIServer is set for a Kubernetes cluster: the control plane's
	// delegated subnet, its address and the internal load balancer's VIP.
	APIServer *APIServer `json:"apiServer,omitempty"`
}

// APIServer is the control plane's place in the VNet (seed 003): a
// delegated subnet of at least /28, holding the control plane's address
// and the internal load balancer frontend that nodes reach it by; the
// cluster reserves at least MinAPIServerIPs of it.
type APIServer struct {
	Subnet   netip.Prefix `json:"subnet"`
	NodeIP   netip.Addr   `json:"nodeIP"`
	VIP      netip.Addr   `json:"vip"`
	Reserved []netip.Addr `json:"reserved"`
}

// API server subnet rules from seed 003.
const (
	MinAPIServerSubnetBits = 28 // at least a /28
	MinAPIServerIPs        = 9
)

// FieldError is one violation, naming the definition field.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Options are choices made outside the definition.
type Options struct {
	Mode       string // bridge or transparent; overrides kubernetesConfig.networkMode
	Kubernetes bool   // plan the API server subnet too
	// Model overrides the definition's network model (networkPlugin,
	// networkPluginMode).
	Model string
}

// PodCIDRModel reports whether pods take addresses from per-node pod CIDRs.
func (p *Plan) PodCIDRModel() bool { return p.Model == ModelOverlay || p.Model == ModelKubenet }

var poolNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// Plan validates the definition and assigns addresses: each master gets
// consecutive addresses from firstConsecutiveStaticIP (primary, then its
// max-pods secondaries), as ACS-Engine lays them out; agents take blocks of
// (1 + max-pods) consecutive addresses from the first usable address,
// around the masters'. Every violation is reported, each naming its field.
func (d *Definition) Plan(o Options) (*Plan, error) {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, a...)})
	}
	p := &Plan{}
	props := d.Properties
	kc := props.OrchestratorProfile.KubernetesConfig
	mp := props.MasterProfile

	subnet, err := netip.ParsePrefix(strings.TrimSpace(kc.ClusterSubnet))
	switch {
	case kc.ClusterSubnet == "":
		bad("properties.orchestratorProfile.kubernetesConfig.clusterSubnet", "required")
	case err != nil || !subnet.Addr().Is4():
		bad("properties.orchestratorProfile.kubernetesConfig.clusterSubnet", "%q is not an IPv4 CIDR", kc.ClusterSubnet)
	case subnet.Bits() > 29:
		bad("properties.orchestratorProfile.kubernetesConfig.clusterSubnet", "%s is smaller than Azure's minimum subnet /29", subnet)
	default:
		p.Subnet = subnet.Masked()
		p.Gateway = p.Subnet.Addr().Next()
	}
	p.VNet = p.Subnet
	if mp.VnetCidr != "" {
		v, err := netip.ParsePrefix(strings.TrimSpace(mp.VnetCidr))
		switch {
		case err != nil || !v.Addr().Is4():
			bad("properties.masterProfile.vnetCidr", "%q is not an IPv4 CIDR", mp.VnetCidr)
		case v.Bits() < 8:
			bad("properties.masterProfile.vnetCidr", "%s is larger than Azure allows (/8)", v)
		default:
			p.VNet = v.Masked()
			if p.Subnet.IsValid() && (!p.VNet.Contains(p.Subnet.Addr()) || p.Subnet.Bits() < p.VNet.Bits()) {
				bad("properties.orchestratorProfile.kubernetesConfig.clusterSubnet", "%s is not inside vnetCidr %s", p.Subnet, p.VNet)
			}
		}
	}

	p.Mode = o.Mode
	if p.Mode == "" {
		p.Mode = kc.NetworkMode
	}
	if p.Mode == "" {
		p.Mode = "bridge"
	}
	p.Model = o.Model
	switch {
	case p.Model != "":
	case kc.NetworkPlugin == "kubenet":
		p.Model = ModelKubenet
	case kc.NetworkPluginMode == "overlay":
		p.Model = ModelOverlay
	default:
		p.Model = ModelAzureCNI
	}
	if kc.NetworkPlugin != "" && kc.NetworkPlugin != "azure" && kc.NetworkPlugin != "kubenet" {
		bad("properties.orchestratorProfile.kubernetesConfig.networkPlugin", "%q: the lab runs azure or kubenet", kc.NetworkPlugin)
	}
	if kc.NetworkPluginMode != "" && kc.NetworkPluginMode != "overlay" {
		bad("properties.orchestratorProfile.kubernetesConfig.networkPluginMode", "%q: must be overlay or empty", kc.NetworkPluginMode)
	}
	switch p.Model {
	case ModelAzureCNI:
	case ModelOverlay, ModelKubenet:
		if o.Mode == "" && kc.NetworkMode == "" {
			p.Mode = "transparent"
		}
		p.PodCIDR = DefaultPodCIDR
		if kc.PodCidr != "" {
			v, err := netip.ParsePrefix(strings.TrimSpace(kc.PodCidr))
			if err != nil || !v.Addr().Is4() || v.Bits() > NodePodCIDRBits {
				bad("properties.orchestratorProfile.kubernetesConfig.podCidr", "%q: want an IPv4 CIDR of /%d or larger", kc.PodCidr, NodePodCIDRBits)
			}
			p.PodCIDR = v.Masked()
		}
		if p.VNet.IsValid() && p.PodCIDR.Overlaps(p.VNet) {
			bad("properties.orchestratorProfile.kubernetesConfig.podCidr", "%s overlaps the VNet %s; the pod CIDR is a separate address space", p.PodCIDR, p.VNet)
		}
	default:
		bad("model", "%q: must be one of %s", p.Model, strings.Join(Models, ", "))
	}
	if p.Mode != "bridge" && p.Mode != "transparent" {
		bad("mode", "%q: must be bridge or transparent", p.Mode)
	}

	maxPods := DefaultMaxPods
	if v, ok := kc.KubeletConfig["--max-pods"]; ok {
		maxPods = parseMaxPods("properties.orchestratorProfile.kubernetesConfig.kubeletConfig[\"--max-pods\"]", v, bad)
	}

	if mp.VnetSubnetID != "" {
		rg, vnet, sn, err := parseSubnetID(mp.VnetSubnetID)
		if err != nil {
			bad("properties.masterProfile.vnetSubnetId", "%v", err)
		} else {
			p.ResourceGroup, p.VNetName, p.SubnetName = rg, vnet, sn
			for _, n := range []struct{ what, v string }{{"resource group", rg}, {"virtual network", vnet}, {"subnet", sn}} {
				if len(n.v) > MaxNameLen {
					bad("properties.masterProfile.vnetSubnetId", "%s name %q is longer than %d characters", n.what, n.v, MaxNameLen)
				}
			}
		}
	}

	masters := 1
	if mp.Count != nil {
		masters = *mp.Count
	}
	if masters < 0 || masters > 5 {
		bad("properties.masterProfile.count", "%d: must be between 0 and 5", masters)
		masters = 0
	}
	var first netip.Addr
	if masters > 0 {
		a, err := netip.ParseAddr(strings.TrimSpace(mp.FirstConsecutiveStaticIP))
		switch {
		case mp.FirstConsecutiveStaticIP == "":
			bad("properties.masterProfile.firstConsecutiveStaticIP", "required for the master nodes")
		case err != nil || !a.Is4():
			bad("properties.masterProfile.firstConsecutiveStaticIP", "%q is not an IPv4 address", mp.FirstConsecutiveStaticIP)
		case p.Subnet.IsValid() && !p.Subnet.Contains(a):
			bad("properties.masterProfile.firstConsecutiveStaticIP", "%s is not inside clusterSubnet %s", a, p.Subnet)
		case p.Subnet.IsValid() && Reserved(p.Subnet, a):
			bad("properties.masterProfile.firstConsecutiveStaticIP", "%s is reserved by Azure (first four and last address of %s)", a, p.Subnet)
		default:
			first = a
		}
	}

	type poolReq struct {
		name       string
		count, max int
	}
	var pools []poolReq
	seen := map[string]bool{}
	for i, ap := range props.AgentPoolProfiles {
		f := fmt.Sprintf("properties.agentPoolProfiles[%d]", i)
		if !poolNameRE.MatchString(ap.Name) {
			bad(f+".name", "%q: 1-12 lower-case letters and digits, starting with a letter", ap.Name)
		} else if seen[ap.Name] {
			bad(f+".name", "%q is used twice", ap.Name)
		}
		seen[ap.Name] = true
		if ap.Count < 0 || ap.Count > 100 {
			bad(f+".count", "%d: must be between 0 and 100", ap.Count)
			continue
		}
		if ap.VnetSubnetID != "" && mp.VnetSubnetID != "" && !strings.EqualFold(ap.VnetSubnetID, mp.VnetSubnetID) {
			bad(f+".vnetSubnetId", "differs from masterProfile.vnetSubnetId; the lab deploys one subnet")
		}
		m := maxPods
		if ap.KubernetesConfig != nil {
			if v, ok := ap.KubernetesConfig.KubeletConfig["--max-pods"]; ok {
				m = parseMaxPods(f+".kubernetesConfig.kubeletConfig[\"--max-pods\"]", v, bad)
			}
		}
		pools = append(pools, poolReq{ap.Name, ap.Count, m})
	}
	nodes := masters
	pods := masters * maxPods
	for _, pr := range pools {
		nodes += pr.count
		pods += pr.count * pr.max
	}
	// In the pod-CIDR models the VNet holds only the nodes; the pod CIDR
	// holds a block per node, and kubenet's route table a route per node.
	secondaries := 0
	if !p.PodCIDRModel() {
		secondaries = -1 // each node's max-pods
	} else {
		const podField = "properties.orchestratorProfile.kubernetesConfig.podCidr"
		if p.PodCIDR.IsValid() {
			if blocks := 1 << (NodePodCIDRBits - p.PodCIDR.Bits()); nodes > blocks {
				bad(podField, "%s has %d blocks of /%d; the cluster has %d nodes", p.PodCIDR, blocks, NodePodCIDRBits, nodes)
			}
		}
		if p.Model == ModelKubenet && nodes > MaxKubenetNodes {
			bad("properties.agentPoolProfiles", "%d nodes: kubenet allows at most %d (one route per node in the subnet's route table, which holds at most %d)", nodes, MaxKubenetNodes, MaxKubenetNodes)
		}
		pods = 0
	}
	if p.Subnet.IsValid() && !p.PodCIDRModel() {
		if usable := len(Usable(p.Subnet)); nodes+pods > usable {
			bad("properties.orchestratorProfile.kubernetesConfig.clusterSubnet",
				"%s has %d usable addresses (Azure reserves 5 per subnet); %d nodes with their max-pods secondary IPs need %d", p.Subnet, usable, nodes, nodes+pods)
		}
	}
	if nodes == 0 {
		bad("properties.agentPoolProfiles", "the cluster has no nodes")
	}
	if pods > MaxPodsPerVNet && secondaries < 0 {
		bad("properties.agentPoolProfiles", "%d pods in total; a VNet holds at most %d", pods, MaxPodsPerVNet)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	if o.Kubernetes || (props.APIServerAccessProfile != nil && props.APIServerAccessProfile.EnableVnetIntegration) {
		api, err := planAPIServer(p, props.APIServerAccessProfile)
		if err != nil {
			errs = append(errs, err)
		} else {
			p.APIServer = api
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Lay out addresses.
	used := map[netip.Addr]bool{}
	usable := Usable(p.Subnet)
	if masters > 0 {
		a := first
		for m := 0; m < masters; m++ {
			n := Node{Name: fmt.Sprintf("master-%d", m), Role: RoleMaster, Pool: "master", MaxPods: maxPods}
			for k := 0; k <= nicIPs(secondaries, maxPods); k++ {
				if !p.Subnet.Contains(a) || Reserved(p.Subnet, a) {
					return nil, &FieldError{Field: "properties.masterProfile.firstConsecutiveStaticIP",
						Problem: fmt.Sprintf("%d masters need %d consecutive addresses from %s; they run past the usable end of %s", masters, masters*(maxPods+1), first, p.Subnet)}
				}
				used[a] = true
				if k == 0 {
					n.PrimaryIP = a
				} else {
					n.SecondaryIPs = append(n.SecondaryIPs, a)
				}
				a = a.Next()
			}
			p.Nodes = append(p.Nodes, n)
		}
	}
	next := 0
	agent := 0
	for _, pr := range pools {
		for c := 0; c < pr.count; c++ {
			agent++
			n := Node{Name: fmt.Sprintf("vm-%d", agent), Role: RoleAgent, Pool: pr.name, MaxPods: pr.max}
			for k := 0; k <= nicIPs(secondaries, pr.max); k++ {
				for next < len(usable) && used[usable[next]] {
					next++
				}
				if next >= len(usable) {
					return nil, &FieldError{Field: "properties.orchestratorProfile.kubernetesConfig.clusterSubnet",
						Problem: fmt.Sprintf("%s has no room left for %s's block of %d addresses beside the masters' block at %s", p.Subnet, n.Name, pr.max+1, first)}
				}
				a := usable[next]
				used[a] = true
				if k == 0 {
					n.PrimaryIP = a
				} else {
					n.SecondaryIPs = append(n.SecondaryIPs, a)
				}
			}
			p.Nodes = append(p.Nodes, n)
		}
	}
	if p.PodCIDRModel() {
		if err := p.planPodCIDRs(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// nicIPs is how many secondary IP configurations a node's NIC gets: its
// max-pods, or none in the pod-CIDR models.
func nicIPs(secondaries, maxPods int) int {
	if secondaries < 0 {
		return maxPods
	}
	return secondaries
}

// planPodCIDRs gives each node the next block of the pod CIDR, in order,
// and places the outside VM in the first free /28 of the VNet after the
// cluster's subnets.
func (p *Plan) planPodCIDRs() error {
	block := netip.PrefixFrom(p.PodCIDR.Addr(), NodePodCIDRBits)
	for i := range p.Nodes {
		p.Nodes[i].PodCIDR = block
		block = netip.PrefixFrom(last(block).Next(), NodePodCIDRBits)
	}
	after := p.Subnet
	if p.APIServer != nil {
		after = p.APIServer.Subnet
	}
	sn := nextSubnet(after, MinAPIServerSubnetBits)
	if !sn.IsValid() || !p.VNet.Contains(sn.Addr()) || sn.Bits() < p.VNet.Bits() {
		return &FieldError{Field: "properties.masterProfile.vnetCidr", Problem: fmt.Sprintf("the VNet %s has no room after %s for the VM outside the cluster", p.VNet, after)}
	}
	p.OutsideSubnet = sn
	p.Outside = &Node{Name: OutsideVM, Role: "outside", Pool: "outside", PrimaryIP: Usable(sn)[0]}
	return nil
}

// nextSubnet is the first /bits prefix after p.
func nextSubnet(p netip.Prefix, bits int) netip.Prefix {
	end := last(p).Next()
	if !end.IsValid() {
		return netip.Prefix{}
	}
	cand := netip.PrefixFrom(end, bits).Masked()
	if cand.Addr().Less(end) {
		cand = netip.PrefixFrom(last(cand).Next(), bits)
	}
	return cand
}

func parseMaxPods(field, v string, bad func(string, string, ...any)) int {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	switch {
	case err != nil:
		bad(field, "%q is not a number", v)
		return DefaultMaxPods
	case n < 1 || n > MaxMaxPods:
		bad(field, "%d: must be between 1 and %d", n, MaxMaxPods)
		return DefaultMaxPods
	}
	return n
}

// parseSubnetID splits /subscriptions/S/resourceGroups/RG/providers/
// Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET.
func parseSubnetID(id string) (rg, vnet, subnet string, err error) {
	f := strings.Split(strings.Trim(id, "/"), "/")
	if len(f) != 10 || !strings.EqualFold(f[0], "subscriptions") || !strings.EqualFold(f[2], "resourceGroups") ||
		!strings.EqualFold(f[4], "providers") || !strings.EqualFold(f[5], "Microsoft.Network") ||
		!strings.EqualFold(f[6], "virtualNetworks") || !strings.EqualFold(f[8], "subnets") {
		return "", "", "", fmt.Errorf("%q is not /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>", id)
	}
	for _, s := range []string{f[1], f[3], f[7], f[9]} {
		if s == "" || strings.ContainsAny(s, "<>") {
			return "", "", "", fmt.Errorf("%q has a placeholder or empty segment; fill in the names", id)
		}
	}
	return f[3], f[7], f[9], nil
}

// Reserved reports whether Azure reserves ip in subnet: the network address,
// the gateway, two DNS addresses, and the broadcast address.
func Reserved(subnet netip.Prefix, ip netip.Addr) bool {
	a := subnet.Masked().Addr()
	for i := 0; i < 4; i++ {
		if ip == a {
			return true
		}
		a = a.Next()
	}
	return ip == last(subnet)
}

func last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Usable lists a subnet's addresses Azure hands out, in order.
func Usable(subnet netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := subnet.Masked().Addr(); subnet.Contains(a); a = a.Next() {
		if !Reserved(subnet, a) {
			out = append(out, a)
		}
	}
	return out
}

// Utilisation is how many of the subnet's usable addresses the plan uses.
func (p *Plan) Utilisation() (used, usable int) {
	for _, n := range p.Nodes {
		used += 1 + len(n.SecondaryIPs)
	}
	return used, len(Usable(p.Subnet))
}

const apiField = "properties.apiServerAccessProfile.subnetPrefix"

// planAPIServer validates (or picks: the first /28 of the VNet after the
// cluster subnet) the API server subnet and reserves its addresses.
func planAPIServer(p *Plan, prof *struct {
	EnableVnetIntegration bool   `json:"enableVnetIntegration"`
	SubnetPrefix          string `json:"subnetPrefix"`
}) (*APIServer, error) {
	var sn netip.Prefix
	if prof != nil && prof.SubnetPrefix != "" {
		v, err := netip.ParsePrefix(strings.TrimSpace(prof.SubnetPrefix))
		if err != nil || !v.Addr().Is4() {
			return nil, &FieldError{Field: apiField, Problem: fmt.Sprintf("%q is not an IPv4 CIDR", prof.SubnetPrefix)}
		}
		sn = v.Masked()
	} else {
		// After the cluster subnet, aligned to /28.
		sn = nextSubnet(p.Subnet, MinAPIServerSubnetBits)
	}
	switch {
	case sn.Bits() > MinAPIServerSubnetBits:
		return nil, &FieldError{Field: apiField, Problem: fmt.Sprintf("%s is smaller than /%d; the API server subnet must be at least /%d", sn, MinAPIServerSubnetBits, MinAPIServerSubnetBits)}
	case !p.VNet.Contains(sn.Addr()) || sn.Bits() < p.VNet.Bits():
		return nil, &FieldError{Field: apiField, Problem: fmt.Sprintf("%s is not inside the VNet %s", sn, p.VNet)}
	case sn.Overlaps(p.Subnet):
		return nil, &FieldError{Field: apiField, Problem: fmt.Sprintf("%s overlaps the cluster subnet %s; the delegated subnet holds no other workloads", sn, p.Subnet)}
	}
	u := Usable(sn)
	if len(u) < MinAPIServerIPs {
		return nil, &FieldError{Field: apiField, Problem: fmt.Sprintf("%s has %d usable addresses; the cluster reserves at least %d", sn, len(u), MinAPIServerIPs)}
	}
	return &APIServer{Subnet: sn, NodeIP: u[0], VIP: u[1], Reserved: append([]netip.Addr(nil), u[:MinAPIServerIPs]...)}, nil
}
