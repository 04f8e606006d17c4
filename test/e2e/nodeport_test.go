package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
)

// nodePort is the port kube-proxy's stand-in serves on every node.
const nodePort = 31435

// TestNodePortThroughAnotherNode is Kubernetes' "functioning NodePort
// service" conformance case reduced to the kernel: a Service with one
// backend on vm1, addressed at vm2, from vm3 (the VM itself and a pod on
// it) and from vm1. vm2 rewrites the connection as kube-proxy does (DNAT
// to the backend, masquerade) and must send it back out the NIC it came
// in by. In bridge mode that is the bridge's ingress port; in transparent
// mode it needs forwarding on a node that has no pod yet.
func TestNodePortThroughAnotherNode(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			// Clean VMs: a FORWARD policy of DROP set by another firewall
			// (Docker's) is for that firewall and kube-proxy to open for
			// Services (kube-proxy's iptables mode adds KUBE-FORWARD); the
			// plugin accepts its own pods' traffic only, and a node
			// without pods has none (TestForwardDrop covers that path).
			c := newCluster(t, clusterOpts{vms: 3, secondaries: 2, conflist: conflist(t, "1.1.0", mode, nil), cleanVM: true})
			for _, m := range c.vms {
				m.install(t)
			}
			backend := c.vms[0].addPod(t, "backend")
			echoServer(t, backend.ns, backend.ip, 8080)
			via := c.vms[1]
			if mode == "bridge" {
				// A node with pods: the NIC is behind the bridge.
				via.addPod(t, "other")
			}
			kubeProxy(t, via, netip.AddrPortFrom(backend.ip, 8080))
			client := c.vms[2].addPod(t, "client")

			dst := netip.AddrPortFrom(via.spec.PrimaryIP, nodePort)
			for _, from := range []string{c.vms[2].ns, client.ns, c.vms[0].ns} {
				mustTCP(t, from, dst)
			}
			c.assertNoDrops(t)
		})
	}
}

// install runs `vnetctl install` in the VM's namespace, into directories
// of the test's: what a node gets before its first pod.
func (m *vm) install(t *testing.T) {
	t.Helper()
	d := filepath.Join(m.dir, "installed")
	out, err := runIn(m.ns, filepath.Join(binDir, "vnetctl"), "install", "--bin-dir", binDir,
		"--cni-bin-dir", filepath.Join(d, "bin"), "--cni-conf-dir", filepath.Join(d, "net.d"), "--sysctl-dir", "",
		// Nothing into the machine's /etc.
		"--modules-load-dir", "", "--cloud-init-dir", "", "--networkd-dir", "", "--networkmanager-dir", "")
	if err != nil {
		t.Fatalf("vnetctl install on %s: %v\n%s", m.spec.Name, err, out)
	}
}

// kubeProxy gives a VM kube-proxy's NodePort rules for one backend: DNAT
// of connections to a local address on the node port, masqueraded on the
// way out (externalTrafficPolicy: Cluster).
func kubeProxy(t *testing.T, m *vm, backend netip.AddrPort) {
	t.Helper()
	rules := fmt.Sprintf(`table ip kube-proxy-test {
	chain pre { type nat hook prerouting priority dstnat; fib daddr type local tcp dport %d meta mark set mark or 0x4000 dnat to %s; }
	chain post { type nat hook postrouting priority srcnat; meta mark & 0x4000 == 0x4000 masquerade; }
}`, nodePort, backend)
	if out, err := runIn(m.ns, "nft", rules); err != nil {
		t.Fatalf("kube-proxy rules on %s: %v\n%s", m.spec.Name, err, out)
	}
}
