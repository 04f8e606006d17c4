package fabric

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/lab/azurefake"
)

// Fabric is a handle on an emulated VNet. Its spec is what the services
// answer from; AddSecondaryIPs and RemoveSecondaryIPs change the kernel and
// the spec together. A Fabric is safe for concurrent use.
type Fabric struct {
	opMu sync.Mutex   // serialises changes to the kernel
	mu   sync.RWMutex // guards spec
	spec Spec
	// identity issues IMDS's managed-identity tokens; management is the
	// cloud's API on the internet host (both optional: SetManagement).
	identity   *azurefake.Tokens
	management http.Handler
	// sim is set by Simulate: every VM's port is the one interface SimPort
	// and there are no port filters.
	sim bool
}

// SimPort is the one interface that stands for every VM's port in a
// fabric made by Simulate.
const SimPort = "sim"

// portOf names the fabric interface that reaches a VM's NIC.
func (f *Fabric) portOf(v VMSpec) string {
	if f.sim {
		return SimPort
	}
	return PortName(v.Name)
}

// Open returns a handle on the fabric spec describes, assuming Build made
// it; nothing in the kernel is checked or changed.
func Open(spec Spec) *Fabric {
	return &Fabric{spec: spec.Clone()}
}

// Spec returns a copy of the fabric's current spec, including secondary
// addresses added since Build.
func (f *Fabric) Spec() Spec {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.spec.Clone()
}

func (f *Fabric) setSpec(s Spec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spec = s
}

// Name is the spec's name, the prefix of every namespace of the fabric.
func (f *Fabric) Name() string { return f.spec.Name } // never changes

// FabricNetNS is the name of the fabric's own namespace.
func (f *Fabric) FabricNetNS() string { return fabricNS(f.spec.Name) }

// InternetNetNS is the name of the internet host's namespace.
func (f *Fabric) InternetNetNS() string { return internetNS(f.spec.Name) }

// VMNetNS is the name of a VM's namespace.
func (f *Fabric) VMNetNS(vm string) string { return vmNS(f.spec.Name, vm) }

// PortName is the fabric-side interface of a VM's NIC.
func PortName(vm string) string { return "p-" + vm }

func fabricNS(name string) string     { return name + "-fab" }
func internetNS(name string) string   { return name + "-inet" }
func vmNS(name, vm string) string     { return name + "-" + vm }
func setName(vm string) string        { return vm + "_ips" }
func counterName(vm, c string) string { return vm + "_" + c }

// Counter names: <vm>_bad_mac, <vm>_bad_ip, <vm>_other in the netdev table.
const (
	cntBadMAC     = "bad_mac"
	cntBadIP      = "bad_ip"
	cntOther      = "other"
	cntNoPublicIP = "no_public_ip"
)

// PortCounters counts the frames a VM's port dropped.
type PortCounters struct {
	BadMAC uint64 // source MAC (or ARP sender MAC) not the NIC's
	BadIP  uint64 // IPv4 source or ARP sender IP not an IP configuration of the NIC
	Other  uint64 // neither IPv4 nor ARP
}

// nicOf is the NIC of a VM as the wireserver and IMDS describe it.
func nicOf(v VMSpec) nic.Interface {
	addrs := []nic.Address{{IP: v.PrimaryIP, IsPrimary: true}}
	for _, ip := range v.SecondaryIPs {
		addrs = append(addrs, nic.Address{IP: ip})
	}
	return nic.Interface{
		MAC:       net.HardwareAddr(slices.Clone(v.MAC)),
		IsPrimary: true,
		Subnets:   []nic.Subnet{{Prefix: v.Subnet, Addresses: addrs}},
	}
}

// owner finds the VM holding src among the current spec's addresses.
func (f *Fabric) owner(src netip.Addr) (VMSpec, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.spec.Owner(src)
	if !ok {
		return VMSpec{}, false
	}
	v.SecondaryIPs = slices.Clone(v.SecondaryIPs)
	return v, true
}

// WireserverHandler serves the NMAgent interface document to the VM that
// holds the caller's address.
func (f *Fabric) WireserverHandler() http.Handler {
	return azurefake.Wireserver(func(src netip.Addr) ([]nic.Interface, bool) {
		v, ok := f.owner(src)
		if !ok {
			return nil, false
		}
		return []nic.Interface{nicOf(v)}, true
	})
}

// ManagementHost is the name of the cloud's management API (Azure Resource
// Manager's), served on the internet host when the fabric has one.
const ManagementHost = "management.azure.com"

// SetManagement gives the fabric a management API, served as
// http://management.azure.com/ on the internet host, and a managed identity
// for every VM: IMDS's token endpoint answers each VM with a token of
// tokens naming the VM. Call it before Serve.
func (f *Fabric) SetManagement(h http.Handler, tokens azurefake.Tokens) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.management, f.identity = h, &tokens
}

// IMDSHandler serves the IMDS network document to the VM that holds the
// caller's address; the primary address carries the VM's public address.
// With a management API it also serves the VM's managed-identity tokens.
func (f *Fabric) IMDSHandler() http.Handler {
	f.mu.RLock()
	tokens := f.identity
	f.mu.RUnlock()
	network := f.imdsNetwork()
	if tokens == nil {
		return network
	}
	identity := azurefake.Identity(*tokens, func(r *http.Request) (string, bool) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return "", false
		}
		v, ok := f.owner(ap.Addr().Unmap())
		return v.Name, ok
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.TrimRight(r.URL.Path, "/") == azurefake.IdentityPath {
			identity.ServeHTTP(w, r)
			return
		}
		network.ServeHTTP(w, r)
	})
}

func (f *Fabric) imdsNetwork() http.Handler {
	return azurefake.IMDS(func(src netip.Addr) ([]nic.Interface, func(netip.Addr) string, bool) {
		v, ok := f.owner(src)
		if !ok {
			return nil, nil, false
		}
		public := func(ip netip.Addr) string {
			if ip == v.PrimaryIP && v.PublicIP.IsValid() {
				return v.PublicIP.String()
			}
			return ""
		}
		return []nic.Interface{nicOf(v)}, public, true
	})
}

// managementHandler stands in for the wireserver's management port: it
// exists so tests can show who can and cannot reach it.
func managementHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "wireserver management")
	})
}

func (f *Fabric) hasManagement() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.management != nil
}

// internetHostHandler is the internet host's HTTP server: the management
// API for its name, the caller's address for any other.
func (f *Fabric) internetHostHandler() http.Handler {
	f.mu.RLock()
	mgmt := f.management
	f.mu.RUnlock()
	echo := internetHandler()
	if mgmt == nil {
		return echo
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if strings.EqualFold(host, ManagementHost) {
			mgmt.ServeHTTP(w, r)
			return
		}
		echo.ServeHTTP(w, r)
	})
}

// internetHandler answers with the caller's source address, so a VM can
// see what its traffic was SNATed to.
func internetHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, ap.Addr().Unmap())
	})
}

// resolve is the lab DNS's zone: <vm>.internal.cloudapp.net and
// internet.test. The name is case-insensitive, with or without the final dot.
func (f *Fabric) resolve(name string) (netip.Addr, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == InternetHostName {
		return InternetHostIP, true
	}
	if name == ManagementHost && f.hasManagement() {
		return InternetHostIP, true
	}
	vm, ok := strings.CutSuffix(name, "."+DNSSuffix)
	if !ok {
		return netip.Addr{}, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.spec.VM(vm)
	return v.PrimaryIP, ok
}
