package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Endpoint is one side of an explained connection: a pod or an address.
type Endpoint struct {
	Pod  *Pod // nil for an address outside the pods
	Addr netip.Addr
}

func (e Endpoint) String() string {
	if e.Pod != nil {
		return fmt.Sprintf("%s (%s)", e.Pod.Key(), e.Addr)
	}
	return e.Addr.String()
}

// Explanation is the verdict on a connection and why.
type Explanation struct {
	From, To Endpoint
	Proto    Proto
	Port     uint16
	Decision Decision
}

// ResolveEndpoint finds a pod ("namespace/name") or parses an address.
func (m *Model) ResolveEndpoint(s string) (Endpoint, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if p, ok := m.PodByIP(a); ok {
			return Endpoint{Pod: &p, Addr: a}, nil
		}
		return Endpoint{Addr: a}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return Endpoint{}, fmt.Errorf("endpoint %q: want namespace/pod or an IPv4 address", s)
	}
	p, ok := m.pods[ns+"/"+name]
	if !ok {
		return Endpoint{}, fmt.Errorf("endpoint %q: no such pod", s)
	}
	if p.HostNetwork {
		return Endpoint{}, fmt.Errorf("endpoint %q: a host-network pod is the node, which policy never filters", s)
	}
	addrs := m.addrs(p)
	if len(addrs) == 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q: the pod has no IPv4 address yet", s)
	}
	cp := *p
	return Endpoint{Pod: &cp, Addr: addrs[0]}, nil
}

// Explain says what happens to a connection from one endpoint to another
// on a port, and which policies decide it, by compiling the model as if
// every pod ran on this node and running the packet through the result:
// the same compiler and the same table logic the kernel enforces.
func Explain(m *Model, from, to Endpoint, proto Proto, port uint16) Explanation {
	saved := map[string]bool{}
	for k, p := range m.pods {
		saved[k] = p.Local
		p.Local = true
	}
	m.invalidateAll()
	s := Compile(m)
	for k, p := range m.pods {
		p.Local = saved[k]
	}
	m.invalidateAll()
	return Explanation{From: from, To: to, Proto: proto, Port: port,
		Decision: s.Evaluate(Packet{Src: from.Addr, Dst: to.Addr, Proto: proto, Port: port})}
}

// String prints the explanation for people.
func (x Explanation) String() string {
	var b strings.Builder
	verdict := "DENIED"
	if x.Decision.Allowed() {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(&b, "%s -> %s %d/%s: %s\n", x.From, x.To, x.Port, x.Proto, verdict)
	step := func(dir string, e Endpoint, st Step) {
		who := "egress of " + e.String()
		if dir == "ingress" {
			who = "ingress to " + e.String()
		}
		switch {
		case e.Pod == nil:
			fmt.Fprintf(&b, "  %s: not a pod, not filtered here\n", who)
		case !st.Isolated:
			fmt.Fprintf(&b, "  %s: allowed, no policy selects the pod for %s\n", who, dir)
		case st.Allowed:
			var by []string
			for _, r := range st.By {
				by = append(by, fmt.Sprintf("%s %s rule %d", r.Policy, dir, r.Index))
			}
			fmt.Fprintf(&b, "  %s: allowed by %s (selected by %s)\n", who, strings.Join(by, ", "), strings.Join(st.Policies, ", "))
		default:
			fmt.Fprintf(&b, "  %s: denied, selected by %s and no rule of theirs matches\n", who, strings.Join(st.Policies, ", "))
		}
	}
	step("egress", x.From, x.Decision.Egress)
	step("ingress", x.To, x.Decision.Ingress)
	return b.String()
}
