// Package vnetlab runs an emulated Azure virtual network on one Linux machine:
// a fabric namespace with Azure's SDN rules, one namespace per VM whose eth0
// is its NIC, a wireserver and IMDS answering each VM about its own NIC, an
// internet host behind the fabric's outbound NAT, and pods attached by the
// real azure-vnet plugins through libcni, as a runtime would.
//
// A lab lives in /var/run/vnetcni-lab/<name>: lab.json (the plan, the fabric
// spec, the pods), one directory per VM with its CNI bin, conf, state and
// cache directories, and the services daemon's pid, log and control socket.
package vnetlab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/plan"
)

// RunRoot holds every lab's directory.
const RunRoot = "/var/run/vnetcni-lab"

// DefaultName is the lab's name when none is given.
const DefaultName = "lab"

// Binary is the lab's executable (lab/cmd/vnetctl-lab): "vnetctl lab …"
// runs it, and the lab starts its services daemon and the Kubernetes
// supervisors with it.
const Binary = "vnetctl-lab"

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
var podNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)

// ValidName checks a lab name: it prefixes every namespace, and has no "-"
// so no lab's prefix is a prefix of another's.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: 1-8 lower-case letters and digits, starting with a letter", name)
	}
	return nil
}

// Dir is a lab's run directory.
func Dir(name string) string { return filepath.Join(RunRoot, name) }

// Lab is a lab's recorded description.
type Lab struct {
	Name    string      `json:"name"`
	Mode    string      `json:"mode"`
	Plan    *plan.Plan  `json:"plan"`
	Spec    fabric.Spec `json:"spec"`
	Pods    []Pod       `json:"pods"`
	Created time.Time   `json:"created"`
	// Complete is set once up finished; a lab without it was interrupted.
	Complete bool `json:"complete"`
	// Kubernetes is the lab's cluster, when it runs one.
	Kubernetes *k8slab.Cluster `json:"kubernetes,omitempty"`
	// Agent is set when every VM runs vnetd (the default).
	Agent bool `json:"agent,omitempty"`
}

// ControlPlaneVM names the fabric VM that holds a Kubernetes lab's control
// plane in the API server's delegated subnet. It is not a node: no plugins,
// no pods.
const ControlPlaneVM = "cp"

// Nodes lists the VMs that carry pods (all but the control plane's and the
// VM outside the cluster).
func (l *Lab) Nodes() []fabric.VMSpec {
	var out []fabric.VMSpec
	for _, v := range l.Spec.VMs {
		if (v.Name != ControlPlaneVM || l.Plan.APIServer == nil) && (v.Name != plan.OutsideVM || l.Plan.Outside == nil) {
			out = append(out, v)
		}
	}
	return out
}

// Pod is a pod attached in the lab.
type Pod struct {
	VM          string                  `json:"vm"`
	Name        string                  `json:"name"`
	NetNS       string                  `json:"netns"`
	ContainerID string                  `json:"containerID"`
	IP          netip.Addr              `json:"ip"`
	Ports       []cnirunner.PortMapping `json:"ports,omitempty"`
	// Runtime made the pod: empty for libcni, or RuntimeContainerd.
	Runtime string `json:"runtime,omitempty"`
}

// Dir is the lab's run directory.
func (l *Lab) Dir() string { return Dir(l.Name) }

// VMDir is a VM's directory.
func (l *Lab) VMDir(vm string) string { return filepath.Join(l.Dir(), "vms", vm) }

// PodNetNS names a pod's namespace.
func PodNetNS(lab, vm, pod string) string { return lab + "-" + vm + "-" + pod }

// ErrNoLab says a lab does not exist.
var ErrNoLab = errors.New("no such lab")

// Load reads a lab's description.
func Load(name string) (*Lab, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(Dir(name), "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w %q (start one with: vnetctl lab up --name %s)", ErrNoLab, name, name)
	}
	if err != nil {
		return nil, err
	}
	l := &Lab{}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("read lab %s: %w", name, err)
	}
	return l, nil
}

// save writes lab.json atomically.
func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.Dir(), "lab.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.Dir(), "lab.json"))
}

// update runs fn on the current description under the lab's lock and saves.
func update(name string, fn func(*Lab) error) (*Lab, error) {
	unlock, err := lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	l, err := Load(name)
	if err != nil {
		return nil, err
	}
	if err := fn(l); err != nil {
		return nil, err
	}
	return l, l.save()
}

func lock(name string) (func(), error) {
	if err := os.MkdirAll(Dir(name), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(Dir(name), "lab.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// VMSpec returns a VM of the lab.
func (l *Lab) VMSpec(vm string) (fabric.VMSpec, error) {
	v, ok := l.Spec.VM(vm)
	if !ok {
		var names []string
		for _, x := range l.Spec.VMs {
			names = append(names, x.Name)
		}
		return v, fmt.Errorf("lab %s has no VM %q (it has %v)", l.Name, vm, names)
	}
	return v, nil
}

// fabricSpec turns a plan into the fabric's spec: one VM per node, its NIC
// carrying the node's primary and secondary IP configurations.
func fabricSpec(name string, p *plan.Plan) fabric.Spec {
	s := fabric.Spec{Name: name, VNet: []netip.Prefix{p.VNet}, Subnets: []netip.Prefix{p.Subnet}}
	for i, n := range p.Nodes {
		s.VMs = append(s.VMs, fabric.VMSpec{
			Name:         n.Name,
			MAC:          fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, byte((i + 1) >> 8), byte(i + 1)},
			Subnet:       p.Subnet,
			PrimaryIP:    n.PrimaryIP,
			SecondaryIPs: append([]netip.Addr(nil), n.SecondaryIPs...),
			PublicIP:     netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}),
		})
	}
	if p.PodCIDRModel() {
		// Overlay: the fabric routes each node's block to it. kubenet:
		// the nodes' NICs forward (IP forwarding on), and the route
		// controller fills the subnet's route table after Build.
		for i := range p.Nodes {
			if p.Model == plan.ModelOverlay {
				s.VMs[i].PodCIDR = p.Nodes[i].PodCIDR
			} else {
				s.VMs[i].IPForwarding = true
			}
		}
	}
	if a := p.APIServer; a != nil {
		// Seed 003: the API server in a delegated subnet behind an internal
		// load balancer; the subnet's NSG lets the cluster subnet reach TCP
		// 443 and 4443, and the Azure Load Balancer its probe port 9988.
		s.Subnets = append(s.Subnets, a.Subnet)
		s.VMs = append(s.VMs, fabric.VMSpec{Name: ControlPlaneVM, MAC: fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, 0xff, 0x01},
			Subnet: a.Subnet, PrimaryIP: a.NodeIP})
		s.LoadBalancers = []fabric.LoadBalancer{{Name: "apiserver", VIP: a.VIP, Ports: []uint16{443, 4443}, Backends: []netip.Addr{a.NodeIP}}}
		s.NSGs = []fabric.NSG{{Subnet: a.Subnet, Allow: []fabric.NSGRule{
			{Source: p.Subnet, Ports: []uint16{443, 4443}},
			{Source: fabric.AzureLoadBalancerSource, Ports: []uint16{9988}},
		}}}
	}
	if o := p.Outside; o != nil {
		s.Subnets = append(s.Subnets, p.OutsideSubnet)
		s.VMs = append(s.VMs, fabric.VMSpec{Name: o.Name, MAC: fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, 0xfe, 0x01},
			Subnet: p.OutsideSubnet, PrimaryIP: o.PrimaryIP, PublicIP: netip.AddrFrom4([4]byte{198, 51, 100, 250})})
	}
	return s
}
