package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Source reads a VM's interfaces and their IP configurations.
type Source interface {
	Interfaces(ctx context.Context) ([]nic.Interface, error)
	// String names the source in pools and error messages.
	String() string
}

type wireserverSource struct{ c wireserver.Client }

func (s wireserverSource) Interfaces(ctx context.Context) ([]nic.Interface, error) {
	return s.c.Interfaces(ctx)
}

func (s wireserverSource) String() string {
	u := s.c.URL
	if u == "" {
		u = wireserver.DefaultURL
	}
	return "wireserver " + u
}

type imdsSource struct{ c imds.Client }

func (s imdsSource) Interfaces(ctx context.Context) ([]nic.Interface, error) {
	return s.c.Interfaces(ctx)
}

func (s imdsSource) String() string { return "IMDS " + imds.URL(s.c.BaseURL) }

// fileSource reads the MAS document: the wireserver's content as JSON,
// {"Interfaces":[{"MacAddress","IsPrimary","IPSubnets":[{"Prefix","IPAddresses":[{"Address","IsPrimary"}]}]}]}.
type fileSource struct{ path string }

type masDocument struct {
	Interfaces []struct {
		MacAddress string `json:"MacAddress"`
		IsPrimary  bool   `json:"IsPrimary"`
		IPSubnets  []struct {
			Prefix      string `json:"Prefix"`
			IPAddresses []struct {
				Address   string `json:"Address"`
				IsPrimary bool   `json:"IsPrimary"`
			} `json:"IPAddresses"`
		} `json:"IPSubnets"`
	} `json:"Interfaces"`
}

// ParseMAS decodes a MAS-format interface document.
func ParseMAS(b []byte) ([]nic.Interface, error) {
	var d masDocument
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decode MAS interface document: %w", err)
	}
	var out []nic.Interface
	for _, ji := range d.Interfaces {
		mac, err := nic.ParseAzureMAC(ji.MacAddress)
		if err != nil {
			return nil, fmt.Errorf("decode MAS interface document: %w", err)
		}
		i := nic.Interface{MAC: mac, IsPrimary: ji.IsPrimary}
		for _, js := range ji.IPSubnets {
			p, err := netip.ParsePrefix(strings.TrimSpace(js.Prefix))
			if err != nil {
				return nil, fmt.Errorf("decode MAS interface document: interface %s: subnet %q: %w", ji.MacAddress, js.Prefix, err)
			}
			s := nic.Subnet{Prefix: p.Masked()}
			for _, ja := range js.IPAddresses {
				a, err := netip.ParseAddr(strings.TrimSpace(ja.Address))
				if err != nil {
					return nil, fmt.Errorf("decode MAS interface document: interface %s: address %q: %w", ji.MacAddress, ja.Address, err)
				}
				s.Addresses = append(s.Addresses, nic.Address{IP: a, IsPrimary: ja.IsPrimary})
			}
			i.Subnets = append(i.Subnets, s)
		}
		out = append(out, i)
	}
	if err := nic.Validate(out); err != nil {
		return nil, fmt.Errorf("decode MAS interface document: %w", err)
	}
	return out, nil
}

func (s fileSource) Interfaces(context.Context) ([]nic.Interface, error) {
	b, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("read interface file: %w", err)
	}
	ifs, err := ParseMAS(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return ifs, nil
}

func (s fileSource) String() string { return "file " + s.path }

// staticSource serves addresses listed in the config as the secondaries of
// whatever NIC the network uses.
type staticSource struct {
	subnet  netip.Prefix
	primary netip.Addr
	addrs   []netip.Addr
	mac     net.HardwareAddr
}

func (s staticSource) Interfaces(context.Context) ([]nic.Interface, error) {
	sub := nic.Subnet{Prefix: s.subnet}
	if s.primary.IsValid() {
		sub.Addresses = append(sub.Addresses, nic.Address{IP: s.primary, IsPrimary: true})
	}
	for _, a := range s.addrs {
		sub.Addresses = append(sub.Addresses, nic.Address{IP: a})
	}
	return []nic.Interface{{MAC: s.mac, IsPrimary: true, Subnets: []nic.Subnet{sub}}}, nil
}

func (s staticSource) String() string { return "static config" }

// podCIDRSource serves the node's pod CIDR (overlay, kubenet) as the pool:
// every host address but the first, which is the pods' gateway, and the
// last (broadcast).
type podCIDRSource struct {
	cidr netip.Prefix
	mac  net.HardwareAddr
}

func (s podCIDRSource) Interfaces(context.Context) ([]nic.Interface, error) {
	sub := nic.Subnet{Prefix: s.cidr}
	gw := Gateway(s.cidr)
	for a := gw.Next(); s.cidr.Contains(a) && a.Next().IsValid() && s.cidr.Contains(a.Next()); a = a.Next() {
		sub.Addresses = append(sub.Addresses, nic.Address{IP: a})
	}
	return []nic.Interface{{MAC: s.mac, IsPrimary: true, Subnets: []nic.Subnet{sub}}}, nil
}

func (s podCIDRSource) String() string { return "pod CIDR " + s.cidr.String() }

// NewSource builds the source a config names. mac is the master NIC's
// address (used by the static source, which has no NIC of its own).
func NewSource(c *netconf.IPAM, mac net.HardwareAddr) Source {
	if c.PodCIDRModel() {
		return podCIDRSource{cidr: c.NodePodCIDR, mac: mac}
	}
	switch c.Environment {
	case netconf.EnvIMDS:
		return imdsSource{imds.Client{BaseURL: c.IMDSURL, HTTP: httpClient(c.SourceTimeout)}}
	case netconf.EnvFile, netconf.EnvMAS:
		return fileSource{path: c.File}
	case netconf.EnvStatic:
		return staticSource{subnet: c.StaticSubnet, primary: c.StaticPrimary, addrs: c.StaticAddrs, mac: mac}
	default:
		return wireserverSource{wireserver.Client{URL: c.WireserverURL, HTTP: httpClient(c.SourceTimeout)}}
	}
}

// httpClient talks to link-local and host endpoints directly: never through
// a proxy from the environment.
func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
}

// PoolFrom builds the pool of the interface with the given MAC from a
// source's answer. Only the first IPv4 subnet of the interface is used: pods
// are attached in the subnet of the NIC's primary address.
func PoolFrom(ifs []nic.Interface, mac net.HardwareAddr, source string, now time.Time) (*store.Pool, error) {
	i, ok := nic.Find(ifs, mac)
	if !ok {
		var have []string
		for _, x := range ifs {
			have = append(have, nic.FormatAzureMAC(x.MAC))
		}
		return nil, fmt.Errorf("%s lists no interface with MAC %s (it lists %s)", source, nic.FormatAzureMAC(mac), strings.Join(have, ", "))
	}
	primary, subnet, ok := i.PrimaryIP()
	if !ok {
		for _, s := range i.Subnets {
			if s.Prefix.Addr().Is4() {
				subnet = s.Prefix
				break
			}
		}
	}
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return nil, fmt.Errorf("%s: interface %s has no IPv4 subnet", source, nic.FormatAzureMAC(mac))
	}
	p := &store.Pool{
		ID:        nic.FormatAzureMAC(mac),
		Source:    source,
		ReadAt:    now.UTC(),
		Subnet:    subnet,
		Gateway:   Gateway(subnet),
		PrimaryIP: primary,
		Addresses: []netip.Addr{},
	}
	for _, s := range i.Subnets {
		if s.Prefix != subnet {
			continue
		}
		for _, a := range s.Addresses {
			if !a.IsPrimary {
				p.Addresses = append(p.Addresses, a.IP)
			}
		}
	}
	return p, nil
}
