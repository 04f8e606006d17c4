// Package incumbent reads the state files of Azure's own azure-vnet and
// azure-vnet-ipam (github.com/Azure/azure-container-networking), so that
// installing these plugins over a node that runs them keeps its pods: their
// attachments are adopted and their addresses never handed out again.
//
// Only the fields needed are decoded. The network file is
// {"Network":{"ExternalInterfaces":{IF:{"Networks":{ID:{"Mode":…,
// "Endpoints":{ID:{"IfName","HostIfName","MacAddress","IPAddresses",
// "ContainerID","PODName","PODNameSpace"}}}}}}}}, with Go's encoding of
// net.HardwareAddr (base64) and net.IPNet ({"IP","Mask"}); the IPAM file is
// {"IPAM":{"AddressSpaces":{ID:{"Pools":{ID:{"Addresses":{IP:{"ID","Addr",
// "InUse"}}}}}}}}.
package incumbent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
)

// Where the incumbent keeps its state.
const (
	DefaultDir  = "/var/run"
	NetworkFile = "azure-vnet.json"
	IPAMFile    = "azure-vnet-ipam.json"
	// EnvDir overrides DefaultDir (tests, unusual installs).
	EnvDir = "AZURE_VNET_INCUMBENT_DIR"
)

// DirFromEnv is $AZURE_VNET_INCUMBENT_DIR or DefaultDir.
func DirFromEnv() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	return DefaultDir
}

// Endpoint is one pod interface the incumbent attached.
type Endpoint struct {
	Network      string // the incumbent's network ID, its conflist name
	Mode         string // bridge or transparent
	ContainerID  string // empty in versions that did not record it
	IfName       string // in the pod
	HostIfName   string // the host veth
	MAC          net.HardwareAddr
	IP           netip.Prefix
	PodName      string
	PodNamespace string
}

// State is what the incumbent's files say.
type State struct {
	Endpoints []Endpoint
	// InUse are the addresses its IPAM hands out, with the ID of who holds
	// each ("" when unknown).
	InUse map[netip.Addr]string
}

// Empty reports whether the incumbent left nothing.
func (s *State) Empty() bool { return len(s.Endpoints) == 0 && len(s.InUse) == 0 }

// Read reads the incumbent's files in dir; missing files read as empty.
func Read(dir string) (*State, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	nb, err := read(NetworkFile)
	if err != nil {
		return nil, err
	}
	ib, err := read(IPAMFile)
	if err != nil {
		return nil, err
	}
	return Parse(nb, ib)
}

type ipNet struct {
	IP   net.IP
	Mask net.IPMask
}

// Parse decodes the network and IPAM files (either may be nil).
func Parse(network, ipam []byte) (*State, error) {
	s := &State{InUse: map[netip.Addr]string{}}
	if len(network) > 0 {
		var f struct {
			Network struct {
				ExternalInterfaces map[string]struct {
					Networks map[string]struct {
						ID        string `json:"Id"`
						Mode      string
						Endpoints map[string]struct {
							IfName       string
							HostIfName   string
							MacAddress   net.HardwareAddr
							IPAddresses  []ipNet
							ContainerID  string
							PODName      string
							PODNameSpace string
						}
					}
				}
			}
		}
		if err := json.Unmarshal(network, &f); err != nil {
			return nil, fmt.Errorf("read %s: %w", NetworkFile, err)
		}
		for _, ext := range f.Network.ExternalInterfaces {
			for id, nw := range ext.Networks {
				if nw.ID != "" {
					id = nw.ID
				}
				for _, ep := range nw.Endpoints {
					e := Endpoint{Network: id, Mode: nw.Mode, ContainerID: ep.ContainerID, IfName: ep.IfName,
						HostIfName: ep.HostIfName, MAC: ep.MacAddress, PodName: ep.PODName, PodNamespace: ep.PODNameSpace}
					for _, a := range ep.IPAddresses {
						ip, ok := netip.AddrFromSlice(a.IP.To4())
						if !ok {
							continue
						}
						ones, bits := a.Mask.Size()
						if bits != 32 {
							ones = 32
						}
						e.IP = netip.PrefixFrom(ip, ones)
						break
					}
					if e.IP.IsValid() {
						s.Endpoints = append(s.Endpoints, e)
					}
				}
			}
		}
		sort.Slice(s.Endpoints, func(i, j int) bool { return s.Endpoints[i].IP.Addr().Less(s.Endpoints[j].IP.Addr()) })
	}
	if len(ipam) > 0 {
		var f struct {
			IPAM struct {
				AddressSpaces map[string]struct {
					Pools map[string]struct {
						Addresses map[string]struct {
							ID    string
							Addr  net.IP
							InUse bool
						}
					}
				}
			}
		}
		if err := json.Unmarshal(ipam, &f); err != nil {
			return nil, fmt.Errorf("read %s: %w", IPAMFile, err)
		}
		for _, as := range f.IPAM.AddressSpaces {
			for _, p := range as.Pools {
				for _, a := range p.Addresses {
					if ip, ok := netip.AddrFromSlice(a.Addr.To4()); ok && a.InUse {
						s.InUse[ip] = a.ID
					}
				}
			}
		}
	}
	return s, nil
}
