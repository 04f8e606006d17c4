// Package wireserver speaks the part of the Azure wireserver protocol a CNI
// needs: the NMAgent "getinterfaceinfov1" document that lists a VM's network
// interfaces and their IP configurations. It has both sides: a client that
// fetches and decodes the document, and an HTTP handler that serves it (the
// lab's emulated wireserver).
package wireserver

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
)

// DefaultURL is the wireserver's interface-info endpoint on Azure.
const DefaultURL = "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"

// Path and Query are the parts of DefaultURL a server matches on.
const (
	Path  = "/machine/plugins"
	Query = "comp=nmagent&type=getinterfaceinfov1"
)

// maxDocument bounds how much of an answer is read: a VM has at most a few
// NICs with a few hundred addresses each, far below this.
const maxDocument = 4 << 20

type xmlDocument struct {
	XMLName   xml.Name       `xml:"Interfaces"`
	Interface []xmlInterface `xml:"Interface"`
}

type xmlInterface struct {
	MacAddress string        `xml:"MacAddress,attr"`
	IsPrimary  bool          `xml:"IsPrimary,attr"`
	IPSubnet   []xmlIPSubnet `xml:"IPSubnet"`
}

type xmlIPSubnet struct {
	Prefix    string         `xml:"Prefix,attr"`
	IPAddress []xmlIPAddress `xml:"IPAddress"`
}

type xmlIPAddress struct {
	Address   string `xml:"Address,attr"`
	IsPrimary bool   `xml:"IsPrimary,attr"`
}

// Parse decodes a getinterfaceinfov1 document.
func Parse(doc []byte) ([]nic.Interface, error) {
	var d xmlDocument
	if err := xml.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("decode wireserver interface document: %w", err)
	}
	out := make([]nic.Interface, 0, len(d.Interface))
	for _, xi := range d.Interface {
		mac, err := nic.ParseAzureMAC(xi.MacAddress)
		if err != nil {
			return nil, fmt.Errorf("decode wireserver interface document: %w", err)
		}
		i := nic.Interface{MAC: mac, IsPrimary: xi.IsPrimary}
		for _, xs := range xi.IPSubnet {
			p, err := netip.ParsePrefix(strings.TrimSpace(xs.Prefix))
			if err != nil {
				return nil, fmt.Errorf("decode wireserver interface document: interface %s: subnet %q: %w", xi.MacAddress, xs.Prefix, err)
			}
			s := nic.Subnet{Prefix: p.Masked()}
			for _, xa := range xs.IPAddress {
				a, err := netip.ParseAddr(strings.TrimSpace(xa.Address))
				if err != nil {
					return nil, fmt.Errorf("decode wireserver interface document: interface %s: address %q: %w", xi.MacAddress, xa.Address, err)
				}
				s.Addresses = append(s.Addresses, nic.Address{IP: a, IsPrimary: xa.IsPrimary})
			}
			i.Subnets = append(i.Subnets, s)
		}
		out = append(out, i)
	}
	if err := nic.Validate(out); err != nil {
		return nil, fmt.Errorf("decode wireserver interface document: %w", err)
	}
	return out, nil
}

// Marshal encodes interfaces as a getinterfaceinfov1 document.
func Marshal(ifs []nic.Interface) ([]byte, error) {
	d := xmlDocument{}
	for _, i := range ifs {
		xi := xmlInterface{MacAddress: nic.FormatAzureMAC(i.MAC), IsPrimary: i.IsPrimary}
		for _, s := range i.Subnets {
			xs := xmlIPSubnet{Prefix: s.Prefix.String()}
			for _, a := range s.Addresses {
				xs.IPAddress = append(xs.IPAddress, xmlIPAddress{Address: a.IP.String(), IsPrimary: a.IsPrimary})
			}
			xi.IPSubnet = append(xi.IPSubnet, xs)
		}
		d.Interface = append(d.Interface, xi)
	}
	b, err := xml.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode wireserver interface document: %w", err)
	}
	return append([]byte(xml.Header), b...), nil
}

// Client fetches the interface document.
type Client struct {
	URL  string // DefaultURL when empty
	HTTP *http.Client
}

// DefaultTimeout bounds one wireserver query. The wireserver answers in
// milliseconds; a CNI ADD must not hang on a dead one.
const DefaultTimeout = 5 * time.Second

// Interfaces fetches and decodes the VM's interfaces.
func (c *Client) Interfaces(ctx context.Context) ([]nic.Interface, error) {
	url := c.URL
	if url == "" {
		url = DefaultURL
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("query wireserver %s: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query wireserver %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("query wireserver %s: read answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query wireserver %s: HTTP %d: %s", url, resp.StatusCode, firstLine(body))
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("query wireserver %s: answer larger than %d bytes", url, maxDocument)
	}
	ifs, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("query wireserver %s: %w", url, err)
	}
	return ifs, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
