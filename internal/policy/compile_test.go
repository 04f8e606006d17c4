package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	netv1 "k8s.io/api/networking/v1"
)

// flow is a connection's first packet: "src dst proto/port", where src and
// dst are pod names ("ns/name") or addresses, and whether it is delivered.
type flow struct {
	desc string // "prod/a -> prod/b 80/tcp"
	want bool
}

// scenario is a cluster and the flows it must allow and deny.
type scenario struct {
	name       string
	namespaces []Namespace
	pods       []Pod
	policies   []*netv1.NetworkPolicy
	flows      []flow
}

func allow(desc string) flow { return flow{desc, true} }
func deny(desc string) flow  { return flow{desc, false} }

// standard is the cluster most scenarios use: namespaces prod (team=a) and
// dev (team=b), pods in each with app labels.
func standard() ([]Namespace, []Pod) {
	return []Namespace{
			{Name: "prod", Labels: lbl("team=a,kubernetes.io/metadata.name=prod")},
			{Name: "dev", Labels: lbl("team=b,kubernetes.io/metadata.name=dev")},
		}, []Pod{
			mkPod("prod", "fe", "10.0.0.10", "app=frontend"),
			mkPod("prod", "be", "10.0.0.11", "app=backend",
				ports(NamedPort{Name: "http", Port: 8080}, NamedPort{Name: "dns", Protocol: "UDP", Port: 5353})),
			mkPod("prod", "db", "10.0.0.12", "app=db,tier=data"),
			mkPod("dev", "fe", "10.0.1.10", "app=frontend", remote),
			mkPod("dev", "be", "10.0.1.11", "app=backend", remote, ports(NamedPort{Name: "http", Port: 9090})),
			mkPod("dev", "tool", "10.0.0.20", "app=tool"),
		}
}

func (sc scenario) model() *Model {
	m := NewModel()
	for _, n := range sc.namespaces {
		m.SetNamespace(n)
	}
	for _, p := range sc.pods {
		m.SetPod(p)
	}
	for _, p := range sc.policies {
		m.SetPolicy(p)
	}
	return m
}

func resolve(m *Model, s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	ns, name, _ := strings.Cut(s, "/")
	p, ok := m.Pod(ns, name)
	if !ok || len(m.addrs(&p)) == 0 {
		return netip.Addr{}, fmt.Errorf("no pod %s with an address", s)
	}
	return m.addrs(&p)[0], nil
}

func parseFlow(m *Model, desc string) (Packet, error) {
	f := strings.Fields(desc)
	if len(f) != 4 || f[1] != "->" {
		return Packet{}, fmt.Errorf("flow %q: want \"src -> dst port/proto\"", desc)
	}
	src, err := resolve(m, f[0])
	if err != nil {
		return Packet{}, err
	}
	dst, err := resolve(m, f[2])
	if err != nil {
		return Packet{}, err
	}
	proto, port, err := ParseProtoPort(f[3])
	if err != nil {
		return Packet{}, err
	}
	return Packet{Src: src, Dst: dst, Proto: proto, Port: port}, nil
}

func check(t *testing.T, m *Model, flows []flow) {
	t.Helper()
	s := Compile(m)
	for _, fl := range flows {
		p, err := parseFlow(m, fl.desc)
		if err != nil {
			t.Fatal(err)
		}
		d := s.Evaluate(p)
		if d.Allowed() != fl.want {
			t.Errorf("%s: allowed = %v, want %v (egress %+v, ingress %+v)", fl.desc, d.Allowed(), fl.want, d.Egress, d.Ingress)
		}
	}
}

func TestSemantics(t *testing.T) {
	ns, pods := standard()
	tcp, udp, sctp := "TCP", "UDP", "SCTP"
	for _, sc := range []scenario{
		{
			name: "no policy: all pods talk freely",
			flows: []flow{
				allow("prod/fe -> prod/be 80/tcp"), allow("dev/fe -> prod/db 5432/tcp"),
				allow("prod/db -> 203.0.113.7 443/tcp"), allow("prod/be -> prod/fe 53/udp"),
			},
		},
		{
			name:     "default deny ingress (podSelector {} and no rules)",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "deny", "", types(netv1.PolicyTypeIngress))},
			flows: []flow{
				deny("prod/fe -> prod/be 80/tcp"), deny("dev/fe -> prod/db 5432/tcp"),
				deny("192.0.2.1 -> prod/fe 80/tcp"),
				allow("prod/fe -> dev/be 80/tcp"),       // egress is not isolated
				allow("prod/be -> 203.0.113.7 443/tcp"), // nor is egress to the world
				allow("dev/fe -> dev/tool 80/tcp"),      // other namespace unaffected
			},
		},
		{
			name:     "allow all ingress (one empty rule)",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "all", "", ingressRule(nil))},
			flows:    []flow{allow("dev/fe -> prod/be 80/tcp"), allow("192.0.2.1 -> prod/db 1/udp")},
		},
		{
			name:     "default deny egress",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "deny", "", types(netv1.PolicyTypeEgress))},
			flows: []flow{
				deny("prod/fe -> prod/be 80/tcp"), deny("prod/be -> dev/be 80/tcp"),
				deny("prod/db -> 203.0.113.7 443/tcp"),
				allow("dev/fe -> prod/be 80/tcp"), // ingress is not isolated
			},
		},
		{
			name: "allow all egress",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "all", "", types(netv1.PolicyTypeEgress),
				egressRule(nil))},
			flows: []flow{allow("prod/fe -> 203.0.113.7 443/tcp"), allow("prod/fe -> prod/be 80/tcp")},
		},
		{
			name: "policyTypes omitted with egress rules: isolates both directions",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "p", "app=backend",
				egressRule(peers(podPeer("app=db")), port(tcp, 5432)))},
			flows: []flow{
				allow("prod/be -> prod/db 5432/tcp"), deny("prod/be -> prod/db 5433/tcp"),
				deny("prod/be -> prod/fe 80/tcp"),
				deny("prod/fe -> prod/be 80/tcp"), // ingress isolated with no ingress rules
			},
		},
		{
			name: "policyTypes [Egress] only: ingress stays open",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "p", "app=backend", types(netv1.PolicyTypeEgress),
				egressRule(peers(podPeer("app=db"))))},
			flows: []flow{allow("prod/fe -> prod/be 80/tcp"), deny("prod/be -> prod/fe 80/tcp"), allow("prod/be -> prod/db 1/udp")},
		},
		{
			name: "policyTypes omitted without egress rules: ingress only",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "p", "app=backend",
				ingressRule(peers(podPeer("app=frontend"))))},
			flows: []flow{allow("prod/be -> 203.0.113.7 443/tcp"), allow("prod/fe -> prod/be 80/tcp"), deny("prod/db -> prod/be 80/tcp")},
		},
		{
			name: "podSelector peer is the policy's own namespace",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(podPeer("app=frontend"))))},
			flows: []flow{
				allow("prod/fe -> prod/be 80/tcp"),
				deny("dev/fe -> prod/be 80/tcp"), // same label, other namespace
				deny("prod/db -> prod/be 80/tcp"),
				allow("prod/fe -> prod/db 80/tcp"), // db not selected
			},
		},
		{
			name: "namespaceSelector peer: every pod of matching namespaces",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(nsPeer("team=b"))))},
			flows: []flow{allow("dev/fe -> prod/be 80/tcp"), allow("dev/tool -> prod/be 80/tcp"), deny("prod/fe -> prod/be 80/tcp")},
		},
		{
			name: "namespaceSelector and podSelector in one peer: AND",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(nsPodPeer("team=b", "app=frontend"))))},
			flows: []flow{allow("dev/fe -> prod/be 80/tcp"), deny("dev/tool -> prod/be 80/tcp"), deny("prod/fe -> prod/be 80/tcp")},
		},
		{
			name: "namespaceSelector and podSelector as two peers: OR",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(nsPeer("team=b"), podPeer("app=frontend"))))},
			flows: []flow{allow("dev/fe -> prod/be 80/tcp"), allow("dev/tool -> prod/be 80/tcp"), allow("prod/fe -> prod/be 80/tcp"), deny("prod/db -> prod/be 80/tcp")},
		},
		{
			name: "empty namespaceSelector: all namespaces; with empty podSelector: all pods",
			policies: []*netv1.NetworkPolicy{
				mkPolicy("prod", "fe", "app=frontend", ingressRule(peers(nsPeer("")))),
				mkPolicy("prod", "db", "app=db", ingressRule(peers(nsPodPeer("", "app=backend")))),
			},
			flows: []flow{
				allow("dev/tool -> prod/fe 80/tcp"), allow("prod/db -> prod/fe 80/tcp"),
				deny("192.0.2.1 -> prod/fe 80/tcp"), // not a pod
				allow("dev/be -> prod/db 5432/tcp"), allow("prod/be -> prod/db 5432/tcp"), deny("dev/fe -> prod/db 5432/tcp"),
			},
		},
		{
			name: "namespaceSelector by kubernetes.io/metadata.name",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(nsPeer("kubernetes.io/metadata.name=dev"))))},
			flows: []flow{allow("dev/fe -> prod/be 80/tcp"), deny("prod/fe -> prod/be 80/tcp")},
		},
		{
			name: "ipBlock with except",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(ipPeer("192.0.2.0/24", "192.0.2.128/25", "192.0.2.8/30"))),
				egressRule(peers(ipPeer("203.0.113.0/24", "203.0.113.99/32"))))},
			flows: []flow{
				allow("192.0.2.1 -> prod/be 80/tcp"), allow("192.0.2.127 -> prod/be 80/tcp"),
				deny("192.0.2.128 -> prod/be 80/tcp"), deny("192.0.2.9 -> prod/be 80/tcp"),
				allow("192.0.2.12 -> prod/be 80/tcp"), deny("198.51.100.1 -> prod/be 80/tcp"),
				allow("prod/be -> 203.0.113.98 443/tcp"), deny("prod/be -> 203.0.113.99 443/tcp"),
				deny("prod/be -> prod/db 443/tcp"),
			},
		},
		{
			name: "ipBlock covering pod addresses matches pods by address",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(ipPeer("10.0.1.0/24"), podPeer("app=frontend"))))},
			flows: []flow{allow("dev/fe -> prod/be 80/tcp"), allow("dev/be -> prod/be 80/tcp"), allow("prod/fe -> prod/be 80/tcp"),
				deny("dev/tool -> prod/be 80/tcp"), deny("prod/db -> prod/be 80/tcp")},
		},
		{
			name: "ports: TCP default, UDP, SCTP, protocol without port, endPort",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(nil, port("", 80), port(udp, 53), port(sctp, 9000), port(udp, 0), portRange(tcp, 30000, 30010)))},
			flows: []flow{
				allow("prod/fe -> prod/be 80/tcp"), deny("prod/fe -> prod/be 80/sctp"),
				allow("prod/fe -> prod/be 53/udp"), deny("prod/fe -> prod/be 53/tcp"),
				allow("prod/fe -> prod/be 9000/sctp"), deny("prod/fe -> prod/be 9001/sctp"),
				allow("prod/fe -> prod/be 12345/udp"), // UDP, any port
				allow("prod/fe -> prod/be 30000/tcp"), allow("prod/fe -> prod/be 30010/tcp"),
				deny("prod/fe -> prod/be 29999/tcp"), deny("prod/fe -> prod/be 30011/tcp"),
			},
		},
		{
			name: "ports and peers in one rule: both must match; two rules: either",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "be", "app=backend",
				ingressRule(peers(podPeer("app=frontend")), port(tcp, 80)),
				ingressRule(peers(nsPeer("team=b")), port(udp, 53)))},
			flows: []flow{
				allow("prod/fe -> prod/be 80/tcp"), deny("prod/fe -> prod/be 53/udp"),
				allow("dev/tool -> prod/be 53/udp"), deny("dev/tool -> prod/be 80/tcp"),
			},
		},
		{
			name: "named port on ingress resolves per destination pod",
			policies: []*netv1.NetworkPolicy{
				mkPolicy("prod", "be", "app=backend", ingressRule(nil, namedPort("", "http"), namedPort(udp, "dns"))),
				mkPolicy("dev", "be", "app=backend", ingressRule(nil, namedPort("", "http"))),
			},
			pods: append(pods[:4:4], mkPod("dev", "be", "10.0.1.11", "app=backend", ports(NamedPort{Name: "http", Port: 9090})), pods[5]),
			flows: []flow{
				allow("prod/fe -> prod/be 8080/tcp"), deny("prod/fe -> prod/be 9090/tcp"),
				allow("prod/fe -> prod/be 5353/udp"), deny("prod/fe -> prod/be 5353/tcp"),
				allow("prod/fe -> dev/be 9090/tcp"), deny("prod/fe -> dev/be 8080/tcp"),
			},
		},
		{
			name: "named port on egress resolves on the destination pod",
			policies: []*netv1.NetworkPolicy{mkPolicy("prod", "fe", "app=frontend", types(netv1.PolicyTypeEgress),
				egressRule(peers(nsPodPeer("", "app=backend")), namedPort(tcp, "http")),
				egressRule(nil, namedPort(udp, "dns")))},
			flows: []flow{
				allow("prod/fe -> prod/be 8080/tcp"), allow("prod/fe -> dev/be 9090/tcp"),
				deny("prod/fe -> dev/be 8080/tcp"), deny("prod/fe -> prod/be 9090/tcp"),
				allow("prod/fe -> prod/be 5353/udp"), // rule 2: any destination with a "dns" port
				deny("prod/fe -> prod/db 8080/tcp"), deny("prod/fe -> 203.0.113.7 8080/tcp"),
			},
		},
		{
			name: "several policies on one pod: union",
			policies: []*netv1.NetworkPolicy{
				mkPolicy("prod", "deny-all", "", types(netv1.PolicyTypeIngress)),
				mkPolicy("prod", "from-fe", "app=backend", ingressRule(peers(podPeer("app=frontend")), port(tcp, 80))),
				mkPolicy("prod", "from-dev", "app=backend", ingressRule(peers(nsPeer("team=b")), port(tcp, 81))),
			},
			flows: []flow{
				allow("prod/fe -> prod/be 80/tcp"), deny("prod/fe -> prod/be 81/tcp"),
				allow("dev/fe -> prod/be 81/tcp"), deny("dev/fe -> prod/be 80/tcp"),
				deny("prod/be -> prod/db 80/tcp"), // db: deny-all only
			},
		},
		{
			name: "ingress and egress both checked between two local pods",
			policies: []*netv1.NetworkPolicy{
				mkPolicy("prod", "fe-out", "app=frontend", types(netv1.PolicyTypeEgress), egressRule(peers(podPeer("app=backend")))),
				mkPolicy("prod", "be-in", "app=backend", ingressRule(peers(podPeer("app=db")))),
			},
			flows: []flow{
				deny("prod/fe -> prod/be 80/tcp"), // egress allows, ingress denies
				allow("prod/db -> prod/be 80/tcp"),
				deny("prod/fe -> prod/db 80/tcp"), // egress denies
			},
		},
		{
			name: "host-network pods are neither selected nor selectable; the node is not filtered",
			pods: append(pods[:6:6], mkPod("prod", "agent", "10.0.0.4", "app=backend", hostNet)),
			policies: []*netv1.NetworkPolicy{
				mkPolicy("prod", "be", "app=backend", ingressRule(peers(podPeer("app=frontend")))),
				mkPolicy("prod", "from-agent", "app=db", ingressRule(peers(podPeer("app=backend")))),
			},
			flows: []flow{
				allow("prod/agent -> 203.0.113.7 443/tcp"), // not selected: not in the table at all
				deny("prod/agent -> prod/db 80/tcp"),       // its address is not a backend pod's
				allow("prod/be -> prod/db 80/tcp"),
			},
		},
		{
			name: "remote pods are peers but not enforced here",
			policies: []*netv1.NetworkPolicy{
				mkPolicy("dev", "deny", "", types(netv1.PolicyTypeIngress, netv1.PolicyTypeEgress)),
				mkPolicy("prod", "be", "app=backend", ingressRule(peers(nsPodPeer("team=b", "app=backend")))),
			},
			flows: []flow{
				allow("dev/be -> prod/be 80/tcp"),  // dev/be is remote: its node enforces its egress
				allow("prod/fe -> dev/fe 80/tcp"),  // and dev/fe's ingress
				deny("prod/fe -> dev/tool 80/tcp"), // dev/tool is local
				deny("dev/tool -> prod/fe 80/tcp"),
			},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			if sc.namespaces == nil {
				sc.namespaces = ns
			}
			if sc.pods == nil {
				sc.pods = pods
			}
			check(t, sc.model(), sc.flows)
		})
	}
}

// TestBoundAddress: a pod the API lists without an address yet is enforced
// on the address CNI ADD gave it, and is a peer by it too.
func TestBoundAddress(t *testing.T) {
	ns, pods := standard()
	sc := scenario{namespaces: ns, pods: append(pods, mkPod("prod", "new", "", "app=backend")),
		policies: []*netv1.NetworkPolicy{
			mkPolicy("prod", "be", "app=backend", ingressRule(peers(podPeer("app=frontend")))),
			mkPolicy("prod", "db", "app=db", ingressRule(peers(podPeer("app=backend")))),
		}}
	m := sc.model()
	if s := Compile(m); len(s.Ingress) != 2 {
		t.Fatalf("before Bind: ingress verdicts %v, want be and db only", s.Ingress)
	}
	m.Bind("prod", "new", netip.MustParseAddr("10.0.0.30"))
	check(t, m, []flow{deny("prod/db -> prod/new 80/tcp"), allow("prod/fe -> prod/new 80/tcp"), allow("prod/new -> prod/db 80/tcp")})
	m.Unbind("prod", "new", netip.MustParseAddr("10.0.0.30"))
	if s := Compile(m); len(s.Ingress) != 2 {
		t.Errorf("after Unbind: ingress verdicts %v, want be and db only", s.Ingress)
	}
}

func TestIsolationTypes(t *testing.T) {
	for _, tc := range []struct {
		p       *netv1.NetworkPolicy
		in, egr bool
	}{
		{mkPolicy("a", "b", ""), true, false},
		{mkPolicy("a", "b", "", egressRule(nil)), true, true},
		{mkPolicy("a", "b", "", types(netv1.PolicyTypeEgress)), false, true},
		{mkPolicy("a", "b", "", types(netv1.PolicyTypeIngress), egressRule(nil)), true, false},
		{mkPolicy("a", "b", "", types(netv1.PolicyTypeIngress, netv1.PolicyTypeEgress)), true, true},
	} {
		in, eg := IsolationTypes(tc.p)
		if in != tc.in || eg != tc.egr {
			t.Errorf("IsolationTypes(types %v, %d egress rules) = %v, %v; want %v, %v", tc.p.Spec.PolicyTypes, len(tc.p.Spec.Egress), in, eg, tc.in, tc.egr)
		}
	}
}

func TestParseProtoPort(t *testing.T) {
	for _, tc := range []struct {
		in    string
		proto Proto
		port  uint16
		err   bool
	}{
		{"80", ProtoTCP, 80, false}, {"53/udp", ProtoUDP, 53, false}, {"tcp/443", ProtoTCP, 443, false},
		{"9000/SCTP", ProtoSCTP, 9000, false}, {"0/tcp", 0, 0, true}, {"65536", 0, 0, true},
		{"http", 0, 0, true}, {"80/icmp", 0, 0, true}, {"080", 0, 0, true},
	} {
		proto, port, err := ParseProtoPort(tc.in)
		if (err != nil) != tc.err || proto != tc.proto || port != tc.port {
			t.Errorf("ParseProtoPort(%q) = %v, %d, %v; want %v, %d, error %v", tc.in, proto, port, err, tc.proto, tc.port, tc.err)
		}
	}
}
