package k8slab

import (
	"bytes"
	"embed"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"text/template"
)

// Version is the Kubernetes version the lab runs (built by
// scripts/k8s-binaries.sh into DefaultBinDir).
const Version = "v1.37.2"

// DefaultBinDir is where scripts/k8s-binaries.sh puts the binaries.
var DefaultBinDir = "/var/cache/vnetcni/k8s/" + Version

// Binaries the cluster needs.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "coredns"}

// Cluster describes the lab's Kubernetes cluster.
type Cluster struct {
	Lab    string `json:"lab"`
	Dir    string `json:"dir"`    // <lab dir>/k8s
	BinDir string `json:"binDir"` // Kubernetes binaries
	// ToolsDir holds vnetctl, the plugins and the image binaries
	// (vnetcni-pause, vnetcni-echo).
	ToolsDir string `json:"toolsDir"`
	// ControlPlane runs in this namespace, with this address in the
	// delegated subnet; nodes reach it at VIP:443.
	ControlPlaneNetNS string       `json:"controlPlaneNetNS"`
	ControlPlaneIP    netip.Addr   `json:"controlPlaneIP"`
	VIP               netip.Addr   `json:"vip"`
	ServiceCIDR       netip.Prefix `json:"serviceCIDR"`
	DNSServiceIP      netip.Addr   `json:"dnsServiceIP"`
	// PodSubnet is where the pods' addresses are: the VNet subnet (Azure
	// CNI), or the cluster's pod CIDR (overlay, kubenet). It is kube-proxy's
	// cluster CIDR, to tell pod traffic from outside traffic.
	PodSubnet netip.Prefix `json:"podSubnet"`
	Nodes     []Node       `json:"nodes"`
	// Outside is a VM of the VNet outside the cluster (overlay and
	// kubenet labs): pods reach it as their node, it does not reach pods.
	Outside *VM `json:"outside,omitempty"`
}

// VM is a lab VM that is not a node.
type VM struct {
	Name  string     `json:"name"`
	NetNS string     `json:"netns"` // path
	IP    netip.Addr `json:"ip"`
}

// Node is a lab VM running a kubelet.
type Node struct {
	Name      string     `json:"name"`
	NetNS     string     `json:"netns"` // path
	IP        netip.Addr `json:"ip"`
	MaxPods   int        `json:"maxPods"`
	CNIBinDir string     `json:"cniBinDir"`
	CNIConf   string     `json:"cniConfDir"`
	StateDir  string     `json:"stateDir"` // azure-vnet's
	LogFile   string     `json:"logFile"`  // azure-vnet's
	// PodCIDR is the node's pod CIDR (overlay, kubenet): the lab records it
	// in the node's spec.podCIDRs, where a node agent will read it; the
	// plugins get it from the conflist the lab writes.
	PodCIDR netip.Prefix `json:"podCIDR,omitzero"`
}

// APIServerPort is where the API server listens and the load balancer
// forwards (seed 003 allows 443 from the cluster subnet).
const APIServerPort = 443

// Defaults of the cluster's service network.
var (
	DefaultServiceCIDR  = netip.MustParsePrefix("10.96.0.0/16")
	DefaultDNSServiceIP = netip.MustParseAddr("10.96.0.10")
	KubernetesServiceIP = netip.MustParseAddr("10.96.0.1")
)

// Images the nodes import, built locally.
const (
	EchoImage    = "localhost/vnetcni/echo:v1"
	CoreDNSImage = "localhost/vnetcni/coredns:v1"
)

func (c *Cluster) pki() PKI                   { return PKI{Dir: filepath.Join(c.Dir, "pki")} }
func (c *Cluster) path(p ...string) string    { return filepath.Join(append([]string{c.Dir}, p...)...) }
func (c *Cluster) bin(name string) string     { return filepath.Join(c.BinDir, name) }
func (c *Cluster) nodeDir(name string) string { return c.path("nodes", name) }

// AgentKubeconfig is the kubeconfig a VM's vnetd reads the API with, for
// network policy (identity AgentUser, server the VIP).
func (c *Cluster) AgentKubeconfig(node string) string {
	return c.path("nodes", node, "vnetd.kubeconfig")
}

// AgentUser is who the lab's vnetd agents are to the API server; the
// ClusterRole vnetcni:vnetd (vnetd-rbac.yaml) lets them read pods,
// namespaces and networkpolicies.
const AgentUser = "vnetcni:vnetd"

// AdminKubeconfig is the kubeconfig operators use from this machine; it
// points at the lab daemon's forwarder on 127.0.0.1.
func (c *Cluster) AdminKubeconfig() string { return c.path("admin.kubeconfig") }

// ForwardPortFile holds the forwarder's port, written by the lab daemon.
func (c *Cluster) ForwardPortFile() string { return c.path("apiserver.port") }

// CheckBinaries says which Kubernetes binaries are missing.
func (c *Cluster) CheckBinaries() error {
	var missing []string
	for _, b := range Binaries {
		if _, err := os.Stat(c.bin(b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("Kubernetes binaries missing from %s: %v (build them with: scripts/k8s-binaries.sh, 10-25 min cold, seconds when cached)", c.BinDir, missing)
	}
	return nil
}

//go:embed coredns.yaml vnetd-rbac.yaml
var manifests embed.FS

// CoreDNSManifest renders the kube-dns manifest.
func (c *Cluster) CoreDNSManifest() ([]byte, error) {
	b, err := manifests.ReadFile("coredns.yaml")
	if err != nil {
		return nil, err
	}
	t, err := template.New("coredns").Parse(string(b))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := t.Execute(&out, c); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
