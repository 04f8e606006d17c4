package policy

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// PodFromAPI is a pod as policy sees it; local when it runs on nodeName.
// A pod that has finished holds no address (the address may be reused).
func PodFromAPI(p *corev1.Pod, nodeName string) Pod {
	out := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      p.Labels,
		HostNetwork: p.Spec.HostNetwork,
		Local:       nodeName != "" && p.Spec.NodeName == nodeName,
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				out.Ports = append(out.Ports, NamedPort{Name: cp.Name, Protocol: cp.Protocol, Port: cp.ContainerPort})
			}
		}
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return out
	}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	return out
}

// NamespaceFromAPI is a namespace as policy sees it.
func NamespaceFromAPI(n *corev1.Namespace) Namespace {
	return Namespace{Name: n.Name, Labels: n.Labels}
}
