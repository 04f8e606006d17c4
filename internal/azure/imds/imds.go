// Package imds speaks the network part of the Azure Instance Metadata
// Service: GET /metadata/instance/network with the "Metadata: true" header.
// It has a client that decodes the answer into the nic model and an HTTP
// handler that serves it (the lab's emulated IMDS).
package imds

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
)

// DefaultBaseURL is IMDS on Azure.
const DefaultBaseURL = "http://169.254.169.254"

// APIVersion is the IMDS API version the client asks for.
const APIVersion = "2021-02-01"

// NetworkPath is the network document's path.
const NetworkPath = "/metadata/instance/network"

const maxDocument = 4 << 20

// DefaultTimeout bounds one query.
const DefaultTimeout = 5 * time.Second

// Network is the IMDS network document.
type Network struct {
	Interface []Interface `json:"interface"`
}

// Interface is one NIC in the IMDS network document. The first interface is
// the VM's primary NIC; the first IPv4 address of an interface is its primary
// address.
type Interface struct {
	MacAddress string `json:"macAddress"`
	IPv4       struct {
		IPAddress []IPAddress `json:"ipAddress"`
		Subnet    []Subnet    `json:"subnet"`
	} `json:"ipv4"`
	IPv6 struct {
		IPAddress []IPAddress `json:"ipAddress"`
	} `json:"ipv6"`
}

// IPAddress is one IP configuration.
type IPAddress struct {
	PrivateIPAddress string `json:"privateIpAddress"`
	PublicIPAddress  string `json:"publicIpAddress"`
}

// Subnet is written by IMDS as a network address and a prefix length, both strings.
type Subnet struct {
	Address string `json:"address"`
	Prefix  string `json:"prefix"`
}

// Parse decodes an IMDS network document.
func Parse(doc []byte) ([]nic.Interface, error) {
	var n Network
	if err := json.Unmarshal(doc, &n); err != nil {
		return nil, fmt.Errorf("decode IMDS network document: %w", err)
	}
	var out []nic.Interface
	for idx, ji := range n.Interface {
		mac, err := nic.ParseAzureMAC(ji.MacAddress)
		if err != nil {
			return nil, fmt.Errorf("decode IMDS network document: interface %d: %w", idx, err)
		}
		i := nic.Interface{MAC: mac, IsPrimary: idx == 0}
		if len(ji.IPv4.Subnet) == 0 && len(ji.IPv4.IPAddress) > 0 {
			return nil, fmt.Errorf("decode IMDS network document: interface %s: addresses but no subnet", ji.MacAddress)
		}
		if len(ji.IPv4.Subnet) > 0 {
			js := ji.IPv4.Subnet[0]
			bits, err := strconv.Atoi(js.Prefix)
			if err != nil {
				return nil, fmt.Errorf("decode IMDS network document: interface %s: subnet prefix %q: %w", ji.MacAddress, js.Prefix, err)
			}
			base, err := netip.ParseAddr(js.Address)
			if err != nil {
				return nil, fmt.Errorf("decode IMDS network document: interface %s: subnet address %q: %w", ji.MacAddress, js.Address, err)
			}
			p, err := base.Prefix(bits)
			if err != nil || bits < 0 || bits > base.BitLen() {
				return nil, fmt.Errorf("decode IMDS network document: interface %s: subnet %s/%s is not a prefix", ji.MacAddress, js.Address, js.Prefix)
			}
			s := nic.Subnet{Prefix: p}
			for k, ja := range ji.IPv4.IPAddress {
				a, err := netip.ParseAddr(ja.PrivateIPAddress)
				if err != nil {
					return nil, fmt.Errorf("decode IMDS network document: interface %s: address %q: %w", ji.MacAddress, ja.PrivateIPAddress, err)
				}
				s.Addresses = append(s.Addresses, nic.Address{IP: a, IsPrimary: k == 0})
			}
			i.Subnets = append(i.Subnets, s)
		}
		out = append(out, i)
	}
	if err := nic.Validate(out); err != nil {
		return nil, fmt.Errorf("decode IMDS network document: %w", err)
	}
	return out, nil
}

// Build turns interfaces into an IMDS network document. public maps a
// private address to its public address, if it has one.
func Build(ifs []nic.Interface, public func(netip.Addr) string) Network {
	var n Network
	// IMDS lists the primary interface first.
	ordered := make([]nic.Interface, 0, len(ifs))
	for _, i := range ifs {
		if i.IsPrimary {
			ordered = append(ordered, i)
		}
	}
	for _, i := range ifs {
		if !i.IsPrimary {
			ordered = append(ordered, i)
		}
	}
	for _, i := range ordered {
		ji := Interface{MacAddress: nic.FormatAzureMAC(i.MAC)}
		ji.IPv6.IPAddress = []IPAddress{}
		ji.IPv4.IPAddress = []IPAddress{}
		ji.IPv4.Subnet = []Subnet{}
		for _, s := range i.Subnets {
			if !s.Prefix.Addr().Is4() {
				continue
			}
			ji.IPv4.Subnet = append(ji.IPv4.Subnet, Subnet{Address: s.Prefix.Addr().String(), Prefix: strconv.Itoa(s.Prefix.Bits())})
			// Primary address first.
			for _, primaryPass := range []bool{true, false} {
				for _, a := range s.Addresses {
					if a.IsPrimary != primaryPass {
						continue
					}
					pub := ""
					if public != nil {
						pub = public(a.IP)
					}
					ji.IPv4.IPAddress = append(ji.IPv4.IPAddress, IPAddress{PrivateIPAddress: a.IP.String(), PublicIPAddress: pub})
				}
			}
		}
		n.Interface = append(n.Interface, ji)
	}
	return n
}

// Client fetches the network document.
type Client struct {
	BaseURL string // DefaultBaseURL when empty
	HTTP    *http.Client
}

// URL is the full network-document URL for a base URL.
func URL(base string) string {
	if base == "" {
		base = DefaultBaseURL
	}
	return strings.TrimRight(base, "/") + NetworkPath + "?api-version=" + APIVersion
}

// Interfaces fetches and decodes the VM's interfaces.
func (c *Client) Interfaces(ctx context.Context) ([]nic.Interface, error) {
	url := URL(c.BaseURL)
	hc := c.HTTP
	if hc == nil {
		// IMDS must never be reached through a proxy.
		hc = &http.Client{Timeout: DefaultTimeout, Transport: &http.Transport{Proxy: nil}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("query IMDS %s: %w", url, err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query IMDS %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("query IMDS %s: read answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query IMDS %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("query IMDS %s: answer larger than %d bytes", url, maxDocument)
	}
	ifs, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("query IMDS %s: %w", url, err)
	}
	return ifs, nil
}
