// Package netconf decodes and validates the network configuration that
// azure-vnet and azure-vnet-ipam receive on stdin: defaults, decode,
// validate, canonicalise — all before anything touches the system. Every
// error names the offending field and value.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// Network modes.
const (
	ModeBridge      = "bridge"
	ModeTransparent = "transparent"
)

// IPAM modes: where pod addresses come from, and so the network model
// (seed 002). The default is Azure CNI's: the NIC's secondary IP
// configurations, addresses of the VNet.
const (
	// IPAMModeVNet is the default (""): pods take VNet addresses from the
	// NIC's pool.
	IPAMModeVNet = ""
	// IPAMModeOverlay is Azure CNI Overlay (Azure's own name for it):
	// pods take addresses from the node's block (ipam.podCIDR) of a
	// private cluster CIDR (ipam.clusterCIDR) the VNet routes to nodes.
	IPAMModeOverlay = "v4overlay"
	// IPAMModeKubenet is kubenet: pods take addresses from the node's pod
	// CIDR; the subnet's route table carries them between nodes. Azure's
	// CNI has no name for it (AKS runs the upstream bridge and host-local
	// plugins); this is ours.
	IPAMModeKubenet = "kubenet"
)

// IPAM environments.
const (
	EnvAzure  = "azure"
	EnvIMDS   = "imds"
	EnvFile   = "file"
	EnvMAS    = "mas"
	EnvStatic = "static"
)

// The plugins' types: the conflist's "type" of the main plugin, and the
// only IPAM plugin azure-vnet works with. They are also the binaries' names.
const (
	PluginType = "azure-vnet"
	IPAMType   = "azure-vnet-ipam"
)

// WireserverIP is Azure's host address: DNS, wireserver, health probes.
var WireserverIP = netip.MustParseAddr("168.63.129.16")

// Defaults.
const (
	DefaultRefreshInterval = 60 * time.Second
	DefaultSourceTimeout   = 5 * time.Second
	DefaultMASFile         = "/etc/kubernetes/interfaces.json"
)

// DefaultNonMasquerade is what ip-masq-agent leaves untranslated by default:
// the RFC 1918 ranges. The pool's subnet and 168.63.129.16 are always added.
var DefaultNonMasquerade = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

// Limits on list sizes, so a hostile config cannot make the plugin build
// unbounded kernel state.
const (
	maxCIDRs     = 1024
	maxAddresses = 4096
	maxDNS       = 16
)

// FieldError is a configuration value that is missing, of the wrong type, or
// not acceptable. It maps to CNI error code 7 (invalid network config).
type FieldError struct {
	Field   string
	Value   string
	Problem string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid network config: %s: %s", e.Field, e.Problem)
	}
	return fmt.Sprintf("invalid network config: %s: %q: %s", e.Field, e.Value, e.Problem)
}

// IsFieldError reports whether err is a configuration error.
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// NetConf is azure-vnet's network configuration.
type NetConf struct {
	types.PluginConf

	Mode   string `json:"mode,omitempty"`
	Bridge string `json:"bridge,omitempty"`
	Master string `json:"master,omitempty"`

	// EnableSNAT masquerades pod traffic to destinations outside the
	// non-masquerade set to the node's primary IP. Default true.
	EnableSNAT *bool `json:"enableSnat,omitempty"`
	// NonMasqueradeCIDRs replaces DefaultNonMasquerade (the VNet, peered
	// VNets and on-premises ranges an operator wants left untranslated).
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs,omitempty"`

	// AllowWireserver lets pods reach every port of 168.63.129.16; by
	// default they reach only its DNS port, as the wireserver's HTTP ports
	// serve the VM's own configuration.
	AllowWireserver bool `json:"allowWireserver,omitempty"`
	// BlockIMDS keeps pods from the instance metadata service. Off by
	// default: workloads commonly read IMDS (identity, metadata).
	BlockIMDS bool `json:"blockIMDS,omitempty"`
	// NetworkPolicy says Kubernetes network policy is enforced on this
	// network by vnetd: ADD returns only once the pod's policies are in the
	// kernel, and fails with a retryable error (CNI code 11) when the agent
	// cannot be reached, rather than start a pod unprotected. Off by
	// default (docs/policy.md).
	NetworkPolicy bool `json:"networkPolicy,omitempty"`

	IPAM IPAM `json:"ipam"`

	// RuntimeConfig is what the runtime passes through capabilities; the
	// plugin reads none of it today but must accept it.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`

	// ValidAttachments is set on GC.
	ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`

	// Canonical values, filled by validation.
	NonMasquerade []netip.Prefix `json:"-"`
	Nameservers   []netip.Addr   `json:"-"`
}

// PodCIDRModel reports whether pods take addresses from a per-node pod
// CIDR (overlay, kubenet) rather than from the VNet.
func (c *NetConf) PodCIDRModel() bool { return c.IPAM.PodCIDRModel() }

// SNAT reports whether pod egress to non-VNet destinations is masqueraded.
func (c *NetConf) SNAT() bool { return c.EnableSNAT == nil || *c.EnableSNAT }

// IPAM is the ipam section.
type IPAM struct {
	Type string `json:"type"`
	// Mode chooses the network model: "" (Azure CNI), "v4overlay" or
	// "kubenet".
	Mode string `json:"mode,omitempty"`
	// PodCIDR is the node's block of the cluster's pod CIDR (Kubernetes:
	// the node's spec.podCIDRs), ClusterCIDR the whole pod CIDR of the
	// cluster (kube-controller-manager's --cluster-cidr). Both required in
	// the v4overlay and kubenet modes.
	PodCIDR         string   `json:"podCIDR,omitempty"`
	ClusterCIDR     string   `json:"clusterCIDR,omitempty"`
	Environment     string   `json:"environment,omitempty"`
	WireserverURL   string   `json:"wireserverURL,omitempty"`
	IMDSURL         string   `json:"imdsURL,omitempty"`
	File            string   `json:"file,omitempty"`
	Subnet          string   `json:"subnet,omitempty"`
	PrimaryIP       string   `json:"primaryIP,omitempty"`
	Addresses       []string `json:"addresses,omitempty"`
	RefreshInterval string   `json:"refreshInterval,omitempty"`
	Timeout         string   `json:"timeout,omitempty"`

	// Canonical values.
	NodePodCIDR    netip.Prefix  `json:"-"`
	ClusterPodCIDR netip.Prefix  `json:"-"`
	Refresh        time.Duration `json:"-"`
	SourceTimeout  time.Duration `json:"-"`
	StaticSubnet   netip.Prefix  `json:"-"`
	StaticPrimary  netip.Addr    `json:"-"`
	StaticAddrs    []netip.Addr  `json:"-"`
}

// Parse decodes, defaults and validates azure-vnet's configuration.
func Parse(b []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := decode(b, c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseIPAM decodes, defaults and validates the configuration as the IPAM
// plugin sees it: only the ipam section and the name matter.
func ParseIPAM(b []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := decode(b, c); err != nil {
		return nil, err
	}
	if err := c.IPAM.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decode(b []byte, c *NetConf) error {
	if err := json.Unmarshal(b, c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Since Go 1.24 the path starts with the Go name of an
			// embedded struct ("PluginConf.name"); the user wrote "name".
			field := strings.TrimPrefix(te.Field, "PluginConf.")
			if field == "" {
				field = "(top level)"
			}
			return &FieldError{Field: field, Problem: fmt.Sprintf("wrong type: got a JSON %s, want %s", te.Value, jsonKind(te.Type.Kind().String()))}
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return &FieldError{Field: "(document)", Problem: fmt.Sprintf("not valid JSON at byte %d: %v", se.Offset, err)}
		}
		return &FieldError{Field: "(document)", Problem: err.Error()}
	}
	return nil
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "a list"
	case "struct", "map", "ptr":
		return "an object"
	case "int", "int64", "uint", "uint32", "float64":
		return "a number"
	}
	return k
}

func (c *NetConf) validate() error {
	if c.Name == "" {
		return &FieldError{Field: "name", Problem: "required"}
	}
	switch c.Mode {
	case "":
		c.Mode = ModeBridge
		if c.IPAM.PodCIDRModel() {
			c.Mode = ModeTransparent
		}
	case ModeBridge, ModeTransparent:
	default:
		return &FieldError{Field: "mode", Value: c.Mode, Problem: `must be "bridge" or "transparent"`}
	}
	if c.Bridge != "" {
		if err := validIfName(c.Bridge); err != nil {
			return &FieldError{Field: "bridge", Value: c.Bridge, Problem: err.Error()}
		}
	}
	if c.Master != "" {
		if err := validIfName(c.Master); err != nil {
			return &FieldError{Field: "master", Value: c.Master, Problem: err.Error()}
		}
	}
	if c.Bridge != "" && c.Bridge == c.Master {
		return &FieldError{Field: "bridge", Value: c.Bridge, Problem: "must differ from master"}
	}
	if len(c.NonMasqueradeCIDRs) > maxCIDRs {
		return &FieldError{Field: "nonMasqueradeCIDRs", Problem: fmt.Sprintf("at most %d entries", maxCIDRs)}
	}
	// In the pod-CIDR models everything leaving the cluster's pod CIDR
	// is translated (the VNet included: it cannot route pod addresses
	// back); the cluster CIDR is added in canonicalPodCIDR.
	if c.NonMasqueradeCIDRs == nil && !c.IPAM.PodCIDRModel() {
		c.NonMasquerade = append([]netip.Prefix(nil), DefaultNonMasquerade...)
	}
	for i, s := range c.NonMasqueradeCIDRs {
		p, err := parseV4Prefix(s)
		if err != nil {
			return &FieldError{Field: fmt.Sprintf("nonMasqueradeCIDRs[%d]", i), Value: s, Problem: err.Error()}
		}
		c.NonMasquerade = append(c.NonMasquerade, p)
	}
	if len(c.DNS.Nameservers) > maxDNS {
		return &FieldError{Field: "dns.nameservers", Problem: fmt.Sprintf("at most %d entries", maxDNS)}
	}
	for i, s := range c.DNS.Nameservers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return &FieldError{Field: fmt.Sprintf("dns.nameservers[%d]", i), Value: s, Problem: "not an IP address"}
		}
		c.Nameservers = append(c.Nameservers, a)
	}
	if len(c.DNS.Nameservers) == 0 {
		c.Nameservers = []netip.Addr{WireserverIP}
		c.DNS.Nameservers = []string{WireserverIP.String()}
	}
	if c.IPAM.Type == "" {
		return &FieldError{Field: "ipam.type", Problem: "required (" + IPAMType + ")"}
	}
	if c.IPAM.Type != IPAMType {
		return &FieldError{Field: "ipam.type", Value: c.IPAM.Type, Problem: "azure-vnet works only with " + IPAMType}
	}
	if err := c.IPAM.validate(); err != nil {
		return err
	}
	if c.PodCIDRModel() {
		c.NonMasquerade = append(c.NonMasquerade, c.IPAM.ClusterPodCIDR)
	}
	return nil
}

func (i *IPAM) validate() error {
	if i.Type == "" {
		return &FieldError{Field: "ipam.type", Problem: "required (" + IPAMType + ")"}
	}
	switch i.Mode {
	case IPAMModeVNet:
	case IPAMModeOverlay, IPAMModeKubenet:
		return i.validatePodCIDR()
	default:
		return &FieldError{Field: "ipam.mode", Value: i.Mode, Problem: `must be "" (Azure CNI), "v4overlay" or "kubenet"`}
	}
	switch i.Environment {
	case "":
		i.Environment = EnvAzure
	case EnvAzure, EnvIMDS, EnvFile, EnvMAS, EnvStatic:
	default:
		return &FieldError{Field: "ipam.environment", Value: i.Environment, Problem: `must be one of "azure", "imds", "file", "mas", "static"`}
	}
	for _, u := range []struct{ field, val string }{{"ipam.wireserverURL", i.WireserverURL}, {"ipam.imdsURL", i.IMDSURL}} {
		if u.val == "" {
			continue
		}
		pu, err := url.Parse(u.val)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return &FieldError{Field: u.field, Value: u.val, Problem: "must be an http:// or https:// URL"}
		}
	}
	var err error
	if i.Refresh, err = duration("ipam.refreshInterval", i.RefreshInterval, DefaultRefreshInterval, time.Second, 24*time.Hour); err != nil {
		return err
	}
	if i.SourceTimeout, err = duration("ipam.timeout", i.Timeout, DefaultSourceTimeout, 100*time.Millisecond, 2*time.Minute); err != nil {
		return err
	}
	if (i.Environment == EnvFile || i.Environment == EnvMAS) && i.File == "" {
		i.File = DefaultMASFile
	}
	if i.Environment != EnvStatic {
		return nil
	}
	if i.Subnet == "" {
		return &FieldError{Field: "ipam.subnet", Problem: "required with environment static"}
	}
	if i.StaticSubnet, err = parseV4Prefix(i.Subnet); err != nil {
		return &FieldError{Field: "ipam.subnet", Value: i.Subnet, Problem: err.Error()}
	}
	if i.StaticSubnet.Bits() > 30 {
		return &FieldError{Field: "ipam.subnet", Value: i.Subnet, Problem: "too small for a gateway and hosts (at most /30)"}
	}
	if i.PrimaryIP != "" {
		a, err := netip.ParseAddr(i.PrimaryIP)
		if err != nil || !a.Is4() || !i.StaticSubnet.Contains(a) {
			return &FieldError{Field: "ipam.primaryIP", Value: i.PrimaryIP, Problem: "must be an IPv4 address inside ipam.subnet"}
		}
		i.StaticPrimary = a
	}
	if len(i.Addresses) == 0 {
		return &FieldError{Field: "ipam.addresses", Problem: "required with environment static"}
	}
	if len(i.Addresses) > maxAddresses {
		return &FieldError{Field: "ipam.addresses", Problem: fmt.Sprintf("at most %d entries", maxAddresses)}
	}
	seen := map[netip.Addr]bool{}
	gw := i.StaticSubnet.Addr().Next()
	for k, s := range i.Addresses {
		a, err := netip.ParseAddr(s)
		field := fmt.Sprintf("ipam.addresses[%d]", k)
		switch {
		case err != nil || !a.Is4():
			return &FieldError{Field: field, Value: s, Problem: "not an IPv4 address"}
		case !i.StaticSubnet.Contains(a):
			return &FieldError{Field: field, Value: s, Problem: "outside ipam.subnet " + i.StaticSubnet.String()}
		case a == gw || a == i.StaticSubnet.Addr():
			return &FieldError{Field: field, Value: s, Problem: "is the subnet's network or gateway address"}
		case a == i.StaticPrimary:
			return &FieldError{Field: field, Value: s, Problem: "is the primary address"}
		case seen[a]:
			return &FieldError{Field: field, Value: s, Problem: "listed twice"}
		}
		seen[a] = true
		i.StaticAddrs = append(i.StaticAddrs, a)
	}
	return nil
}

// PodCIDRModel reports whether the mode takes pod addresses from a per-node
// pod CIDR.
func (i *IPAM) PodCIDRModel() bool {
	return i.Mode == IPAMModeOverlay || i.Mode == IPAMModeKubenet
}

// minPodCIDRBits and maxPodCIDRBits bound a node's pod CIDR: room for a
// gateway and a pod at least, and no more addresses than a static pool may
// list (the state file records the pool's addresses).
const (
	minPodCIDRBits = 20
	maxPodCIDRBits = 30
)

func (i *IPAM) validatePodCIDR() error {
	var err error
	if i.PodCIDR == "" {
		return &FieldError{Field: "ipam.podCIDR", Problem: "required with mode " + i.Mode + " (the node's pod CIDR, e.g. 10.244.1.0/24; vnetd fills it from the node's spec.podCIDRs when it can read the API)"}
	}
	if i.NodePodCIDR, err = parseV4Prefix(i.PodCIDR); err != nil {
		return &FieldError{Field: "ipam.podCIDR", Value: i.PodCIDR, Problem: err.Error()}
	}
	if b := i.NodePodCIDR.Bits(); b < minPodCIDRBits || b > maxPodCIDRBits {
		return &FieldError{Field: "ipam.podCIDR", Value: i.PodCIDR, Problem: fmt.Sprintf("must be between /%d and /%d", minPodCIDRBits, maxPodCIDRBits)}
	}
	if i.ClusterCIDR == "" {
		return &FieldError{Field: "ipam.clusterCIDR", Problem: "required with mode " + i.Mode + " (the cluster's pod CIDR, e.g. 10.244.0.0/16)"}
	}
	if i.ClusterPodCIDR, err = parseV4Prefix(i.ClusterCIDR); err != nil {
		return &FieldError{Field: "ipam.clusterCIDR", Value: i.ClusterCIDR, Problem: err.Error()}
	}
	if i.ClusterPodCIDR.Bits() > i.NodePodCIDR.Bits() || !i.ClusterPodCIDR.Contains(i.NodePodCIDR.Addr()) {
		return &FieldError{Field: "ipam.podCIDR", Value: i.PodCIDR, Problem: "not inside ipam.clusterCIDR " + i.ClusterPodCIDR.String()}
	}
	if i.Environment != "" && i.Environment != EnvStatic {
		// Accepted but meaningless: the pool is the pod CIDR.
		i.Environment = ""
	}
	i.Refresh, i.SourceTimeout = DefaultRefreshInterval, DefaultSourceTimeout
	return nil
}

func duration(field, s string, def, lo, hi time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, &FieldError{Field: field, Value: s, Problem: `not a duration (e.g. "60s")`}
	}
	if d < lo || d > hi {
		return 0, &FieldError{Field: field, Value: s, Problem: fmt.Sprintf("must be between %s and %s", lo, hi)}
	}
	return d, nil
}

func parseV4Prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, errors.New("not a CIDR prefix")
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, errors.New("not an IPv4 prefix")
	}
	return p.Masked(), nil
}

func validIfName(s string) error {
	if len(s) > 15 {
		return errors.New("longer than 15 characters")
	}
	if s == "." || s == ".." {
		return errors.New("not a valid interface name")
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}
