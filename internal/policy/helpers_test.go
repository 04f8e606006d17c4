package policy

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// lbl parses "k=v,k2=v2".
func lbl(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// sel is a label selector from "k=v,..."; "" is the empty selector (all).
func sel(s string) *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: lbl(s)} }

func mkPod(ns, name, ip, labels string, opts ...func(*Pod)) Pod {
	p := Pod{Namespace: ns, Name: name, Labels: lbl(labels), Local: true}
	if ip != "" {
		p.IPs = []netip.Addr{netip.MustParseAddr(ip)}
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func remote(p *Pod)  { p.Local = false }
func hostNet(p *Pod) { p.HostNetwork = true }
func ports(np ...NamedPort) func(*Pod) {
	return func(p *Pod) { p.Ports = append(p.Ports, np...) }
}

func mkPolicy(ns, name, podSel string, opts ...func(*netv1.NetworkPolicy)) *netv1.NetworkPolicy {
	p := &netv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       netv1.NetworkPolicySpec{PodSelector: *sel(podSel)},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func types(t ...netv1.PolicyType) func(*netv1.NetworkPolicy) {
	return func(p *netv1.NetworkPolicy) { p.Spec.PolicyTypes = t }
}

func ingressRule(peers []netv1.NetworkPolicyPeer, ps ...netv1.NetworkPolicyPort) func(*netv1.NetworkPolicy) {
	return func(p *netv1.NetworkPolicy) {
		p.Spec.Ingress = append(p.Spec.Ingress, netv1.NetworkPolicyIngressRule{From: peers, Ports: ps})
	}
}

func egressRule(peers []netv1.NetworkPolicyPeer, ps ...netv1.NetworkPolicyPort) func(*netv1.NetworkPolicy) {
	return func(p *netv1.NetworkPolicy) {
		p.Spec.Egress = append(p.Spec.Egress, netv1.NetworkPolicyEgressRule{To: peers, Ports: ps})
	}
}

func peers(p ...netv1.NetworkPolicyPeer) []netv1.NetworkPolicyPeer { return p }

func podPeer(s string) netv1.NetworkPolicyPeer { return netv1.NetworkPolicyPeer{PodSelector: sel(s)} }
func nsPeer(s string) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{NamespaceSelector: sel(s)}
}
func nsPodPeer(ns, pod string) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{NamespaceSelector: sel(ns), PodSelector: sel(pod)}
}
func ipPeer(cidr string, except ...string) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{IPBlock: &netv1.IPBlock{CIDR: cidr, Except: except}}
}

func port(proto string, p int) netv1.NetworkPolicyPort {
	out := netv1.NetworkPolicyPort{}
	if proto != "" {
		pr := corev1.Protocol(proto)
		out.Protocol = &pr
	}
	if p != 0 {
		v := intstr.FromInt32(int32(p))
		out.Port = &v
	}
	return out
}

func portRange(proto string, lo, hi int) netv1.NetworkPolicyPort {
	out := port(proto, lo)
	e := int32(hi)
	out.EndPort = &e
	return out
}

func namedPort(proto, name string) netv1.NetworkPolicyPort {
	out := port(proto, 0)
	v := intstr.FromString(name)
	out.Port = &v
	return out
}
