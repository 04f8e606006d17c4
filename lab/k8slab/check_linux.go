package k8slab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// Row is one check: what the model expects and what was observed.
type Row struct {
	Check, From, To, Expected, Observed string
}

// CheckNamespace holds the check's own workload.
const CheckNamespace = "vnetcni-check"

const (
	checkNodePort = 30090
	// singleNodePort serves the Service with one backend (singleBackend,
	// on the first node): a probe through a node without it cannot be
	// answered by a local endpoint.
	singleNodePort = 30091
	singleBackend  = "single-backend"
	// checkSourcePort is where the VM outside the cluster listens to see
	// the source of pods' connections.
	checkSourcePort = 7071
	reachable       = "reachable"
	probeWait       = 3 * time.Second
)

type podInfo struct {
	Name, Namespace, Node string
	IP                    netip.Addr
	Ready                 bool
	NetNS                 string // /proc/<pid>/ns/net of its sandbox
}

// Check deploys a small workload (one echo pod per node, a ClusterIP and a
// NodePort Service), probes from inside the pods' own network namespaces
// and the VMs, and compares with what the Azure CNI model promises:
// every pod address comes from its node's NIC pool; pods reach each other
// across nodes, Services by ClusterIP, NodePort and DNS name, and the API
// server through its VIP and the kubernetes Service; deleted pods give
// their address back; a node filled to its pool reports "no free address".
// pool returns a node's NIC secondary addresses.
func (c *Cluster) Check(ctx context.Context, pool func(node string) []netip.Addr) ([]Row, error) {
	var rows []Row
	add := func(check, from, to, expected, observed string) {
		rows = append(rows, Row{check, from, to, expected, observed})
	}
	// Services converge: endpoints become ready, then each kube-proxy
	// programs them within a sync period. A probe that disagrees with the
	// model is retried for a few seconds before it counts.
	eventually := func(want string, probe func() string) string {
		got := probe()
		for i := 0; i < 10 && got != want; i++ {
			time.Sleep(time.Second)
			got = probe()
		}
		return got
	}
	if err := c.deployCheck(ctx); err != nil {
		return nil, err
	}
	defer func() {
		_, _ = c.Kubectl(context.Background(), "delete", "namespace", CheckNamespace, "--wait=true", "--timeout=120s")
	}()
	pods, err := c.pods(ctx)
	if err != nil {
		return nil, err
	}
	// Every pod's address comes from its node's pool, or pod CIDR (which
	// the node object records).
	for _, p := range pods {
		if n := c.node(p.Node); n != nil && n.PodCIDR.IsValid() {
			want := "in " + n.PodCIDR.String()
			got := "not in " + n.PodCIDR.String()
			if n.PodCIDR.Contains(p.IP) {
				got = want
			}
			add("pod address from the node's pod CIDR", p.Namespace+"/"+p.Name, p.IP.String(), want, got)
			continue
		}
		want := "in " + p.Node + "'s NIC pool"
		got := "not in " + p.Node + "'s NIC pool"
		for _, a := range pool(p.Node) {
			if a == p.IP {
				got = want
			}
		}
		add("pod address from the node's NIC", p.Namespace+"/"+p.Name, p.IP.String(), want, got)
	}
	if c.podCIDRs() {
		for _, n := range c.Nodes {
			out, err := c.Kubectl(ctx, "get", "node", n.Name, "-o", "jsonpath={.spec.podCIDRs[0]}")
			if err != nil {
				return rows, err
			}
			add("node's spec.podCIDRs = its conflist's", n.Name, "spec.podCIDRs", n.PodCIDR.String(), strings.TrimSpace(out))
		}
	}
	var echo []podInfo
	for _, p := range pods {
		if p.Namespace == CheckNamespace && strings.HasPrefix(p.Name, "echo-") && p.Ready {
			echo = append(echo, p)
		}
	}
	if len(echo) < 2 {
		return rows, fmt.Errorf("the check needs echo pods on two nodes; have %d ready", len(echo))
	}
	svcIP, err := c.serviceIP(ctx, CheckNamespace, "echo")
	if err != nil {
		return rows, err
	}
	label := func(p podInfo) string { return p.Node + "/" + p.Name }
	for i, a := range echo {
		b := echo[(i+1)%len(echo)]
		add("pod↔pod across nodes (TCP)", label(a), fmt.Sprintf("%s %s:8080", label(b), b.IP), reachable,
			reach(probe.TCPConnect(a.NetNS, netip.AddrPortFrom(b.IP, 8080), probeWait)))
		add("ClusterIP Service from a pod", label(a), svcIP.String()+":80 echo."+CheckNamespace, "HTTP 200",
			eventually("HTTP 200", func() string { return httpStatus(a.NetNS, "http://"+svcIP.String()+"/") }))
		name := "echo." + CheckNamespace + ".svc.cluster.local"
		add("Service DNS name from a pod", label(a), c.DNSServiceIP.String()+":53 "+name, svcIP.String(),
			eventually(svcIP.String(), func() string { return dnsAnswer(a.NetNS, netip.AddrPortFrom(c.DNSServiceIP, 53), name) }))
		add("API server VIP from a pod", label(a), fmt.Sprintf("%s:%d", c.VIP, APIServerPort), "HTTP 200",
			apiReady(a.NetNS, c.pki().CACert(), fmt.Sprintf("https://%s:%d/readyz", c.VIP, APIServerPort)))
		add("kubernetes Service from a pod", label(a), KubernetesServiceIP.String()+":443", "HTTP 200",
			eventually("HTTP 200", func() string {
				return apiReady(a.NetNS, c.pki().CACert(), "https://"+KubernetesServiceIP.String()+"/readyz")
			}))
	}
	for i, a := range echo {
		// Azure CNI: VNet traffic keeps the pod's address; the pod-CIDR
		// models translate everything leaving the pod CIDR to the node.
		own, other := c.node(a.Node), c.node(echo[(i+1)%len(echo)].Node)
		if own == nil || other == nil || own == other {
			continue
		}
		want := a.IP.String()
		if own.PodCIDR.IsValid() {
			want = own.IP.String()
		}
		add("pod→VM (other node, source seen)", label(a), other.Name+" "+other.IP.String(), want,
			probe.SourceSeen(other.NetNS, netip.AddrPortFrom(other.IP, checkSourcePort), a.NetNS, probeWait))
	}
	if o := c.Outside; o != nil {
		for _, a := range echo {
			n := c.node(a.Node)
			add("pod→VM outside the cluster (source seen)", label(a), o.Name+" "+o.IP.String(), n.IP.String(),
				probe.SourceSeen(o.NetNS, netip.AddrPortFrom(o.IP, checkSourcePort), a.NetNS, probeWait))
			add("VM outside the cluster→pod", o.Name, fmt.Sprintf("%s %s:8080", label(a), a.IP), "no answer",
				reach(probe.TCPConnect(o.NetNS, netip.AddrPortFrom(a.IP, 8080), time.Second)))
		}
	}
	// NodePort through every node, from every other VM, to a Service with
	// a single backend: a node must forward to a pod elsewhere, back out
	// the NIC the connection came in by (Kubernetes' conformance "functioning
	// NodePort service"). With a backend on every node, a probe that retries
	// until a local endpoint answers would hide exactly that. Retries here
	// only wait for kube-proxy; they cannot reach another endpoint.
	backendNode := c.Nodes[0].Name
	for _, n := range c.Nodes {
		for _, from := range c.Nodes {
			if from.Name == n.Name {
				continue
			}
			url := fmt.Sprintf("http://%s:%d/", n.IP, singleNodePort)
			add("NodePort, one backend (on "+backendNode+"), via each node", from.Name, fmt.Sprintf("%s %s:%d", n.Name, n.IP, singleNodePort), "HTTP 200",
				eventually("HTTP 200", func() string { return httpStatus(from.NetNS, url) }))
		}
	}

	// A deleted pod gives its address back to its node's pool.
	victim := echo[0]
	if _, err := c.Kubectl(ctx, "-n", CheckNamespace, "delete", "pod", victim.Name, "--wait=true", "--timeout=60s"); err != nil {
		return rows, err
	}
	add("deleted pod's address released", label(victim), victim.IP.String(), "released", c.waitReleased(victim.Node, victim.IP))

	if c.podCIDRs() {
		// A node's pod CIDR (a /24) outlasts its max-pods: kubelet, not
		// the pool, limits it.
		return rows, nil
	}
	// Fill one node: its free addresses as pods, plus one.
	node := c.Nodes[0]
	free, err := c.freeAddresses(node.Name)
	if err != nil {
		return rows, err
	}
	got, err := c.fill(ctx, node.Name, free)
	if err != nil {
		return rows, err
	}
	add("pool exhausted: the next pod's event", node.Name, fmt.Sprintf("%d pods for %d free addresses", free+1, free),
		"FailedCreatePodSandBox: no free address", got)
	return rows, nil
}

func reach(err error) string {
	if err == nil {
		return reachable
	}
	return short(err)
}

func short(err error) string {
	s := err.Error()
	if strings.Contains(s, "timed out") || strings.Contains(s, "timeout") {
		return "no answer"
	}
	if strings.Contains(s, "refused") {
		return "refused"
	}
	if len(s) > 50 {
		s = s[:50] + "…"
	}
	return s
}

func httpStatus(ns, url string) string {
	code, _, err := probe.HTTPGet(ns, url, nil, probeWait)
	if err != nil {
		return short(err)
	}
	return fmt.Sprintf("HTTP %d", code)
}

func dnsAnswer(ns string, server netip.AddrPort, name string) string {
	addrs, err := probe.DNSQuery(ns, server, name, probeWait)
	if err != nil {
		return short(err)
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	if len(s) == 0 {
		return "no answer"
	}
	return strings.Join(s, ",")
}

// apiReady does an HTTPS GET from inside a pod's namespace, trusting the
// cluster's CA.
func apiReady(ns, caFile, url string) string {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return probe.DialTCP(ns, ap, probeWait)
	}
	if err := httpsOK(caFile, url, dial)(); err != nil {
		return short(err)
	}
	return "HTTP 200"
}

const checkManifest = `apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %[3]s
        imagePullPolicy: Never
        args: ["serve", ":8080"]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-nodeport, namespace: %[1]s}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080, nodePort: %[4]d}]
---
apiVersion: v1
kind: Pod
metadata: {name: %[6]s, namespace: %[1]s, labels: {app: %[6]s}}
spec:
  nodeName: %[5]s
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: %[3]s
    imagePullPolicy: Never
    args: ["serve", ":8080"]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: %[6]s, namespace: %[1]s}
spec:
  type: NodePort
  selector: {app: %[6]s}
  ports: [{port: 80, targetPort: 8080, nodePort: %[7]d}]
`

func (c *Cluster) deployCheck(ctx context.Context) error {
	m := fmt.Sprintf(checkManifest, CheckNamespace, len(c.Nodes), EchoImage, checkNodePort, c.Nodes[0].Name, singleBackend, singleNodePort)
	if _, err := c.KubectlStdin(ctx, []byte(m), "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "-n", CheckNamespace, "rollout", "status", "deployment/echo", "--timeout=180s"); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "-n", CheckNamespace, "wait", "--for=condition=Ready", "pod/"+singleBackend, "--timeout=180s")
	return err
}

// pods lists the pod-network pods with their sandbox's network namespace.
func (c *Cluster) pods(ctx context.Context) ([]podInfo, error) {
	out, err := c.Kubectl(ctx, "get", "pods", "-A", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
			Spec     struct {
				NodeName    string `json:"nodeName"`
				HostNetwork bool   `json:"hostNetwork"`
			} `json:"spec"`
			Status struct {
				PodIP      string                          `json:"podIP"`
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	netnsOf := map[string]string{} // namespace/name -> netns
	for _, n := range c.Nodes {
		cl, err := cri.Dial(filepath.Join(c.nodeDir(n.Name), "containerd", "containerd.sock"))
		if err != nil {
			return nil, err
		}
		ids, err := cl.ListPodSandboxes(ctx)
		if err == nil {
			for _, id := range ids {
				if st, err := cl.PodSandboxStatus(ctx, id); err == nil && st.Ready && st.PID > 0 {
					netnsOf[st.Namespace+"/"+st.Name] = fmt.Sprintf("/proc/%d/ns/net", st.PID)
				}
			}
		}
		cl.Close()
	}
	var pods []podInfo
	for _, it := range list.Items {
		if it.Spec.HostNetwork || it.Status.PodIP == "" {
			continue
		}
		ip, err := netip.ParseAddr(it.Status.PodIP)
		if err != nil {
			continue
		}
		p := podInfo{Name: it.Metadata.Name, Namespace: it.Metadata.Namespace, Node: it.Spec.NodeName, IP: ip,
			NetNS: netnsOf[it.Metadata.Namespace+"/"+it.Metadata.Name]}
		for _, cd := range it.Status.Conditions {
			if cd.Type == "Ready" && cd.Status == "True" {
				p.Ready = p.NetNS != ""
			}
		}
		pods = append(pods, p)
	}
	return pods, nil
}

func (c *Cluster) serviceIP(ctx context.Context, ns, name string) (netip.Addr, error) {
	out, err := c.Kubectl(ctx, "-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(strings.TrimSpace(out))
}

func (c *Cluster) node(name string) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i]
		}
	}
	return nil
}

// waitReleased waits for a node's plugin state to no longer allocate ip.
func (c *Cluster) waitReleased(node string, ip netip.Addr) string {
	n := c.node(node)
	if n == nil {
		return "unknown node"
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := store.New(n.StateDir).Read()
		if err == nil {
			if _, held := st.Allocations[ip.String()]; !held {
				return "released"
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "still allocated"
}

// freeAddresses counts a node's unallocated pool addresses.
func (c *Cluster) freeAddresses(node string) (int, error) {
	n := c.node(node)
	st, err := store.New(n.StateDir).Read()
	if err != nil {
		return 0, err
	}
	for _, p := range st.Pools {
		return len(ipam.Free(st, p)), nil
	}
	return 0, errors.New("no pool recorded on " + node)
}

// fill runs free+1 pods on a node and returns what the extra pod's events
// say; the Deployment is removed afterwards.
func (c *Cluster) fill(ctx context.Context, node string, free int) (string, error) {
	m := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: fill, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: fill}}
  template:
    metadata: {labels: {app: fill}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %s}
      terminationGracePeriodSeconds: 1
      containers:
      - {name: fill, image: %s, imagePullPolicy: Never, args: ["serve", ":8080"]}
`, CheckNamespace, free+1, node, EchoImage)
	if _, err := c.KubectlStdin(ctx, []byte(m), "apply", "-f", "-"); err != nil {
		return "", err
	}
	defer func() {
		_, _ = c.Kubectl(context.Background(), "-n", CheckNamespace, "delete", "deployment", "fill", "--wait=true", "--timeout=120s")
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := c.Kubectl(ctx, "-n", CheckNamespace, "get", "events", "--field-selector", "reason=FailedCreatePodSandBox", "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "no free address") {
					return "FailedCreatePodSandBox: no free address", nil
				}
			}
		}
		time.Sleep(time.Second)
	}
	return "no such event within 3m", nil
}
