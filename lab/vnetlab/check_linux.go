package vnetlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// Row is one connectivity check: what the network model says should happen
// and what did.
type Row struct {
	Check    string `json:"check"`
	From     string `json:"from"`
	To       string `json:"to"`
	Expected string `json:"expected"`
	Observed string `json:"observed"`
	OK       bool   `json:"ok"`
}

// Matrix is the result of Check.
type Matrix struct {
	Lab    string `json:"lab"`
	Model  string `json:"model,omitempty"`
	Mode   string `json:"mode"`
	Rows   []Row  `json:"rows"`
	Passed int    `json:"passed"`
	Failed int    `json:"failed"`
}

const (
	reachable = "reachable"
	probeWait = 2 * time.Second
	echoPort  = 7070
	httpOK    = "HTTP 200"
	blocked   = "blocked"
	blockWait = 500 * time.Millisecond
)

// blockedOrReached names the outcome of a probe expected to be dropped.
func blockedOrReached(err error) string {
	if err == nil {
		return reachable
	}
	if d := describe(err); d != "no answer" {
		return d
	}
	return blocked
}

// Check probes the lab's connectivity and compares every observation with
// what the lab's network model expects (seed 002). Azure CNI: pods reach
// each other and the VMs without NAT, reach the internet as their VM's
// public address, the wireserver's DNS and IMDS; VMs reach pods; host ports
// reach their pods. Overlay and kubenet: the same among the cluster's nodes
// and pods, and a VM outside the cluster sees pods' traffic come from
// their node and cannot reach them.
func Check(ctx context.Context, name string) (*Matrix, error) {
	l, err := Load(name)
	if err != nil {
		return nil, err
	}
	f := fabric.Open(l.Spec)
	m := &Matrix{Lab: name, Model: l.Plan.Model, Mode: l.Mode}
	add := func(check, from, to, expected, observed string) {
		r := Row{Check: check, From: from, To: to, Expected: expected, Observed: observed, OK: expected == observed}
		m.Rows = append(m.Rows, r)
		if r.OK {
			m.Passed++
		} else {
			m.Failed++
		}
	}
	reach := func(err error) string {
		if err == nil {
			return reachable
		}
		return describe(err)
	}
	byVM := map[string][]Pod{}
	for _, p := range l.Pods {
		byVM[p.VM] = append(byVM[p.VM], p)
	}
	vms := l.Nodes()

	// The VMs themselves, for reference.
	for i, v := range vms {
		if len(vms) > 1 {
			w := vms[(i+1)%len(vms)]
			add("VM→VM", v.Name, w.Name+" "+w.PrimaryIP.String(), reachable, reach(probe.Ping(f.VMNetNS(v.Name), w.PrimaryIP, probeWait)))
		}
		add("VM→internet (source seen)", v.Name, fabric.InternetHostIP.String(), v.PublicIP.String(), internetSource(f.VMNetNS(v.Name)))
	}

	// Listeners for TCP checks, one per pod, closed at the end.
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for _, p := range l.Pods {
		ln, err := probe.ListenTCP(p.NetNS, netip.AddrPortFrom(p.IP, echoPort))
		if err != nil {
			return nil, fmt.Errorf("listen in pod %s/%s: %w", p.VM, p.Name, err)
		}
		go func() { _ = probe.ServeEcho(ln) }()
		closers = append(closers, func() { ln.Close() })
		for _, pm := range p.Ports {
			if pm.ContainerPort == echoPort {
				continue
			}
			ln, err := probe.ListenTCP(p.NetNS, netip.AddrPortFrom(p.IP, uint16(pm.ContainerPort)))
			if err != nil {
				return nil, fmt.Errorf("listen in pod %s/%s: %w", p.VM, p.Name, err)
			}
			go func() { _ = probe.ServeEcho(ln) }()
			closers = append(closers, func() { ln.Close() })
		}
	}

	label := func(p Pod) string { return p.VM + "/" + p.Name }
	for i, v := range vms {
		pods := byVM[v.Name]
		if len(pods) == 0 {
			continue
		}
		a := pods[0]
		if len(pods) > 1 {
			b := pods[1]
			add("pod↔pod same VM", label(a), label(b)+" "+b.IP.String(), reachable, reach(probe.Ping(a.NetNS, b.IP, probeWait)))
			add("pod↔pod same VM", label(b), label(a)+" "+a.IP.String(), reachable, reach(probe.Ping(b.NetNS, a.IP, probeWait)))
		}
		// The first pod of the next VM that has pods.
		for k := 1; k < len(vms); k++ {
			w := vms[(i+k)%len(vms)]
			if len(byVM[w.Name]) == 0 {
				continue
			}
			x := byVM[w.Name][0]
			add("pod↔pod across VMs", label(a), label(x)+" "+x.IP.String(), reachable, reach(probe.Ping(a.NetNS, x.IP, probeWait)))
			add("pod↔pod across VMs (TCP)", label(a), fmt.Sprintf("%s %s:%d", label(x), x.IP, echoPort), reachable,
				reach(probe.TCPConnect(a.NetNS, netip.AddrPortFrom(x.IP, echoPort), probeWait)))
			break
		}
		add("VM→pod", v.Name, label(a)+" "+a.IP.String(), reachable, reach(probe.Ping(f.VMNetNS(v.Name), a.IP, probeWait)))
		if len(vms) > 1 {
			w := vms[(i+1)%len(vms)]
			add("VM→pod (other VM)", w.Name, label(a)+" "+a.IP.String(), reachable,
				reach(probe.TCPConnect(f.VMNetNS(w.Name), netip.AddrPortFrom(a.IP, echoPort), probeWait)))
			add("pod→VM (other VM)", label(a), w.Name+" "+w.PrimaryIP.String(), reachable, reach(probe.Ping(a.NetNS, w.PrimaryIP, probeWait)))
			// Azure CNI: VNet traffic keeps the pod's address; the pod-CIDR
			// models translate everything leaving the pod CIDR to the node.
			src := a.IP.String()
			if l.Plan.PodCIDRModel() {
				src = v.PrimaryIP.String()
			}
			add("pod→VM (other VM, source seen)", label(a), w.Name+" "+w.PrimaryIP.String(), src,
				probe.SourceSeen(f.VMNetNS(w.Name), netip.AddrPortFrom(w.PrimaryIP, echoPort+1), a.NetNS, probeWait))
		}
		if o := l.Plan.Outside; o != nil {
			// A VM of the VNet outside the cluster: pods reach it as their
			// node; it does not reach pods.
			add("pod→VM outside the cluster (source seen)", label(a), o.Name+" "+o.PrimaryIP.String(), v.PrimaryIP.String(),
				probe.SourceSeen(f.VMNetNS(o.Name), netip.AddrPortFrom(o.PrimaryIP, echoPort+1), a.NetNS, probeWait))
			add("VM outside the cluster→pod", o.Name, fmt.Sprintf("%s %s:%d", label(a), a.IP, echoPort), blocked,
				blockedOrReached(probe.TCPConnect(f.VMNetNS(o.Name), netip.AddrPortFrom(a.IP, echoPort), blockWait)))
		}
		add("pod→internet (source seen)", label(a), fabric.InternetHostIP.String(), v.PublicIP.String(), internetSource(a.NetNS))
		dnsName := v.Name + "." + fabric.DNSSuffix
		add("pod→wireserver DNS", label(a), fabric.WireserverIP.String()+":53 "+dnsName, v.PrimaryIP.String(), dnsAnswer(a.NetNS, dnsName))
		add("pod→IMDS", label(a), fabric.IMDSIP.String()+":80", httpOK, imdsAnswer(a.NetNS))
		// The wireserver's HTTP ports serve the VM's own configuration:
		// pods only get its DNS.
		for _, port := range []uint16{80, fabric.WireserverManagementPort} {
			to := netip.AddrPortFrom(fabric.WireserverIP, port)
			add("pod→wireserver HTTP", label(a), to.String(), blocked, blockedOrReached(probe.TCPConnect(a.NetNS, to, blockWait)))
		}
		for _, p := range pods {
			for _, pm := range p.Ports {
				from := v
				if len(vms) > 1 {
					from = vms[(i+1)%len(vms)]
				}
				to := netip.AddrPortFrom(v.PrimaryIP, uint16(pm.HostPort))
				add("hostPort (portmap)", from.Name, fmt.Sprintf("%s → %s:%d", to, label(p), pm.ContainerPort), reachable,
					reach(probe.TCPConnect(f.VMNetNS(from.Name), to, probeWait)))
			}
		}
	}
	return m, nil
}

func internetSource(ns string) string {
	code, body, err := probe.HTTPGet(ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeWait)
	if err != nil {
		return describe(err)
	}
	if code != http.StatusOK {
		return fmt.Sprintf("HTTP %d", code)
	}
	return strings.TrimSpace(string(body))
}

func dnsAnswer(ns, name string) string {
	addrs, err := probe.DNSQuery(ns, netip.AddrPortFrom(fabric.WireserverIP, 53), name, probeWait)
	if err != nil {
		return describe(err)
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

func imdsAnswer(ns string) string {
	h := http.Header{}
	h.Set("Metadata", "true")
	code, _, err := probe.HTTPGet(ns, imds.URL(""), h, probeWait)
	if err != nil {
		return describe(err)
	}
	return fmt.Sprintf("HTTP %d", code)
}

// describe shortens a probe error to what an operator needs in a table.
func describe(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded), strings.Contains(err.Error(), "timed out"), strings.Contains(err.Error(), "timeout"):
		return "no answer"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	case strings.Contains(err.Error(), "unreachable"):
		return "unreachable"
	}
	s := err.Error()
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// CheckKubernetes runs the Kubernetes checks of a lab that runs a cluster.
func CheckKubernetes(ctx context.Context, name string) (*Matrix, error) {
	l, err := Load(name)
	if err != nil {
		return nil, err
	}
	if l.Kubernetes == nil {
		return nil, fmt.Errorf("lab %s runs no Kubernetes (vnetctl lab up --kubernetes)", name)
	}
	pool := func(node string) []netip.Addr {
		v, _ := l.Spec.VM(node)
		return v.SecondaryIPs
	}
	rows, err := l.Kubernetes.Check(ctx, pool)
	if err == nil && l.policyOn() {
		// The agents enforce network policy: expected (the policy
		// model) against observed, for the seed's three tiers.
		var prows []k8slab.Row
		prows, err = l.Kubernetes.CheckPolicy(ctx)
		rows = append(rows, prows...)
	}
	m := &Matrix{Lab: name, Model: l.Plan.Model, Mode: l.Mode}
	for _, r := range rows {
		row := Row{Check: r.Check, From: r.From, To: r.To, Expected: r.Expected, Observed: r.Observed, OK: r.Expected == r.Observed}
		m.Rows = append(m.Rows, row)
		if row.OK {
			m.Passed++
		} else {
			m.Failed++
		}
	}
	return m, err
}
