// Package policy compiles Kubernetes NetworkPolicies (networking.k8s.io/v1)
// into the nftables state that enforces them on one node, and keeps that
// state in the kernel with element-level updates.
//
// The model holds what the API says (pods, namespaces, policies); Compile
// turns it into a State: per policy rule a set of peer addresses, a set of
// protocol/port ranges and, for named ports, a set of (destination, protocol,
// port) resolved per destination pod; per combination of policies a chain
// that jumps to each policy's chain and drops what none allows; per local pod
// address one verdict-map element that sends its traffic down that chain.
// Diff turns two States into the operations between them, so a label change
// is a few set elements, never a ruleset rewrite.
//
// The package is pure Go except nft_linux.go, which applies States and
// operations over netlink; nothing here is linked by the CNI plugins.
package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
)

// NamedPort is a container port with a name, as a policy's named port
// refers to it.
type NamedPort struct {
	Name     string
	Protocol corev1.Protocol // TCP when empty
	Port     int32
}

// Pod is what policy needs of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// IPs are the pod's addresses (IPv4 is enforced; others are ignored).
	IPs []netip.Addr
	// HostNetwork pods share the node's address: policies neither select
	// them nor match them as peers by selector (Kubernetes leaves this
	// undefined; matching would open the whole node).
	HostNetwork bool
	// Local pods run on this node: their traffic is filtered here.
	Local bool
	Ports []NamedPort
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Namespace is what policy needs of a namespace: its labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Model is the cluster as policy sees it. It is not safe for concurrent
// use; the Engine serialises access.
type Model struct {
	pods       map[string]*Pod            // ns/name
	byNS       map[string]map[string]*Pod // ns → name → pod
	namespaces map[string]*Namespace
	policies   map[string]*netv1.NetworkPolicy // ns/name
	// bound are addresses the CNI ADD gave a pod before the API knows them.
	bound map[string][]netip.Addr

	// What Compile keeps between runs, and what changed since.
	cache         map[string]*compiled // policy ns/name
	dirtyNS       map[string]bool      // namespaces whose pods changed
	dirtyPolicies map[string]bool
	allDirty      bool
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{
		pods:          map[string]*Pod{},
		byNS:          map[string]map[string]*Pod{},
		namespaces:    map[string]*Namespace{},
		policies:      map[string]*netv1.NetworkPolicy{},
		bound:         map[string][]netip.Addr{},
		dirtyNS:       map[string]bool{},
		dirtyPolicies: map[string]bool{},
	}
}

// invalidateAll makes the next Compile start from nothing.
func (m *Model) invalidateAll() { m.allDirty = true }

// SetPod adds or replaces a pod.
func (m *Model) SetPod(p Pod) {
	cp := p
	cp.IPs = slices.Clone(p.IPs)
	k := cp.Key()
	m.dirtyNS[cp.Namespace] = true
	m.pods[k] = &cp
	ns := m.byNS[cp.Namespace]
	if ns == nil {
		ns = map[string]*Pod{}
		m.byNS[cp.Namespace] = ns
	}
	ns[cp.Name] = &cp
}

// DeletePod removes a pod; its bound addresses go with it.
func (m *Model) DeletePod(namespace, name string) {
	k := namespace + "/" + name
	m.dirtyNS[namespace] = true
	delete(m.pods, k)
	delete(m.bound, k)
	if ns := m.byNS[namespace]; ns != nil {
		delete(ns, name)
		if len(ns) == 0 {
			delete(m.byNS, namespace)
		}
	}
}

// Pod returns a pod by namespace and name.
func (m *Model) Pod(namespace, name string) (Pod, bool) {
	p, ok := m.pods[namespace+"/"+name]
	if !ok {
		return Pod{}, false
	}
	return *p, true
}

// Bind records that this node gave a local pod an address (CNI ADD), so
// the pod is enforced before the API server reports the address.
func (m *Model) Bind(namespace, name string, ip netip.Addr) {
	k := namespace + "/" + name
	m.dirtyNS[namespace] = true
	if !slices.Contains(m.bound[k], ip) {
		m.bound[k] = append(m.bound[k], ip)
	}
}

// Unbind forgets an address given by Bind (CNI DEL).
func (m *Model) Unbind(namespace, name string, ip netip.Addr) {
	k := namespace + "/" + name
	m.dirtyNS[namespace] = true
	m.bound[k] = slices.DeleteFunc(m.bound[k], func(a netip.Addr) bool { return a == ip })
	if len(m.bound[k]) == 0 {
		delete(m.bound, k)
	}
}

// SetNamespace adds or replaces a namespace.
func (m *Model) SetNamespace(n Namespace) {
	if old := m.namespaces[n.Name]; old == nil || !maps.Equal(old.Labels, n.Labels) {
		// Namespace selectors anywhere may match differently.
		m.allDirty = true
	}
	cp := n
	m.namespaces[n.Name] = &cp
}

// DeleteNamespace removes a namespace (its pods are removed by their own
// events).
func (m *Model) DeleteNamespace(name string) {
	if _, ok := m.namespaces[name]; ok {
		m.allDirty = true
	}
	delete(m.namespaces, name)
}

// SetPolicy adds or replaces a NetworkPolicy. The model keeps the pointer:
// callers must not modify the object afterwards (informer objects are
// read-only anyway).
func (m *Model) SetPolicy(p *netv1.NetworkPolicy) {
	m.dirtyPolicies[p.Namespace+"/"+p.Name] = true
	m.policies[p.Namespace+"/"+p.Name] = p
}

// DeletePolicy removes a NetworkPolicy.
func (m *Model) DeletePolicy(namespace, name string) {
	delete(m.policies, namespace+"/"+name)
}

// Policy returns a NetworkPolicy by namespace and name.
func (m *Model) Policy(namespace, name string) (*netv1.NetworkPolicy, bool) {
	p, ok := m.policies[namespace+"/"+name]
	return p, ok
}

// Counts reports the model's size.
func (m *Model) Counts() (pods, namespaces, policies int) {
	return len(m.pods), len(m.namespaces), len(m.policies)
}

// addrs are a pod's IPv4 addresses, API and bound ones, deduplicated.
func (m *Model) addrs(p *Pod) []netip.Addr {
	var bound []netip.Addr
	if len(m.bound) > 0 {
		bound = m.bound[p.Key()]
	}
	if len(bound) == 0 && len(p.IPs) == 1 && p.IPs[0].Is4() {
		return p.IPs // the common case, without allocating
	}
	var out []netip.Addr
	for _, a := range append(slices.Clone(p.IPs), bound...) {
		a = a.Unmap()
		if a.Is4() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// PodByIP finds the pod that has an address (for explain).
func (m *Model) PodByIP(ip netip.Addr) (Pod, bool) {
	for _, p := range m.pods {
		if p.HostNetwork {
			continue
		}
		if slices.Contains(m.addrs(p), ip) {
			return *p, true
		}
	}
	return Pod{}, false
}

// sortedPolicies returns the policies' keys in order, for deterministic
// output.
func (m *Model) sortedPolicyKeys() []string {
	keys := make([]string, 0, len(m.policies))
	for k := range m.policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParseProtoPort parses "80/tcp", "53/udp", "tcp/80" or "80" (TCP).
func ParseProtoPort(s string) (Proto, uint16, error) {
	a, b, ok := strings.Cut(s, "/")
	if !ok {
		b = "tcp"
	}
	if _, err := parseProto(a); err == nil {
		a, b = b, a
	}
	proto, err := parseProto(b)
	if err != nil {
		return 0, 0, fmt.Errorf("parse port %q: %w", s, err)
	}
	var port uint16
	if _, err := fmt.Sscanf(a, "%d", &port); err != nil || port == 0 || fmt.Sprint(port) != a {
		return 0, 0, fmt.Errorf("parse port %q: not a port number in 1-65535", s)
	}
	return proto, port, nil
}

func parseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "sctp":
		return ProtoSCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (tcp, udp, sctp)", s)
}
