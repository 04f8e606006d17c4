package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/policy"
)

// PolicyConfig is the network policy part of vnetd's configuration.
type PolicyConfig struct {
	// Enabled makes vnetd enforce Kubernetes NetworkPolicies on the node.
	Enabled bool
	// Kubeconfig is the API server's kubeconfig; "" means in-cluster
	// (the DaemonSet's service account), else $KUBECONFIG.
	Kubeconfig string
	// NodeName is this node's name in the API (pods whose spec.nodeName
	// it is are filtered here); default $NODE_NAME, else the hostname.
	NodeName string
}

// EnvNodeName is the environment variable the DaemonSet sets from
// spec.nodeName (the downward API).
const EnvNodeName = "NODE_NAME"

// DefaultNodeName is $NODE_NAME, else the hostname.
func DefaultNodeName() string {
	if n := os.Getenv(EnvNodeName); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// informerWait is how long EnsurePod waits for the informers to deliver a
// pod before asking the API server for it: a pod reaches kubelet through
// the same watch, so it is normally known within milliseconds.
const informerWait = 2 * time.Second

// policyHost serves CNI ADD and DEL's policy requests from the engine
// (cniplugin.PolicyHost): in-process for the commands the agent runs, over
// the socket for those a plugin ran itself.
type policyHost struct {
	engine   *policy.Engine
	nodeName string
	// wait is how long to wait for the informers before asking the API
	// (informerWait).
	wait time.Duration
	// getPod reads a pod from the API server, for a pod the informers
	// have not delivered yet.
	getPod func(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// bridgeOK says whether bridged traffic reaches the policy table.
	bridgeOK func() error
	log      *slog.Logger
	ensures  *prometheus.HistogramVec
}

// EnsurePod returns once the kernel enforces the pod's policies on its
// address. A pod the informers have not delivered within informerWait is
// read from the API server and put in the model, so the policies that
// select it by its labels are applied; if it cannot be read, ADD fails
// (retryably): a pod is never started with unknown labels.
func (h *policyHost) EnsurePod(ctx context.Context, pod agentapi.PolicyPod) (err error) {
	start := time.Now()
	defer func() {
		result := "ok"
		switch {
		case errors.Is(err, policy.ErrNotReady):
			result = "not_ready"
		case err != nil:
			result = "error"
		}
		h.ensures.WithLabelValues(result).Observe(time.Since(start).Seconds())
	}()
	if !pod.IP.Is4() {
		return fmt.Errorf("pod %s: only IPv4 addresses are enforced", pod)
	}
	if pod.Mode == netconf.ModeBridge {
		if err := h.bridgeOK(); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, h.wait)
	err = h.engine.EnsurePod(wctx, pod.Namespace, pod.Name, pod.IP)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || h.getPod == nil {
		return err
	}
	p, gerr := h.getPod(ctx, pod.Namespace, pod.Name)
	if gerr != nil {
		return fmt.Errorf("pod %s is not in the policy engine's cache and reading it from the API failed: %w", pod, gerr)
	}
	h.log.Info("pod read from the API: the informers had not delivered it yet", "pod", pod.Namespace+"/"+pod.Name)
	pp := policy.PodFromAPI(p, h.nodeName)
	h.engine.Update(func(m *policy.Model) {
		if _, known := m.Pod(pod.Namespace, pod.Name); !known {
			m.SetPod(pp)
		}
	})
	return h.engine.EnsurePod(ctx, pod.Namespace, pod.Name, pod.IP)
}

// ReleasePod forgets the address (CNI DEL, or an ADD that failed after
// EnsurePod).
func (h *policyHost) ReleasePod(pod agentapi.PolicyPod) {
	h.engine.ReleasePod(pod.Namespace, pod.Name, pod.IP)
}

// servePolicy answers a plugin's POLICY-ENSURE or POLICY-RELEASE; ok is
// false for other commands.
func (a *Agent) servePolicy(req *agentapi.Request) (resp *agentapi.Response, ok bool) {
	if req.Command != agentapi.PolicyEnsureCommand && req.Command != agentapi.PolicyReleaseCommand {
		return nil, false
	}
	resp = &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String()}
	if req.Pod == nil {
		resp.Error = &agentapi.Error{Code: agentapi.CodeTryAgainLater, Msg: req.Command + " without a pod"}
		return resp, true
	}
	h := a.policyHost()
	if h == nil {
		resp.Error = &agentapi.Error{Code: agentapi.CodeTryAgainLater, Msg: "vnetd runs without network policy (start it with --network-policy) but the network has networkPolicy on"}
		return resp, true
	}
	if req.Command == agentapi.PolicyReleaseCommand {
		h.ReleasePod(*req.Pod)
		return resp, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), policyTimeout)
	defer cancel()
	if err := h.EnsurePod(ctx, *req.Pod); err != nil {
		resp.Error = &agentapi.Error{Code: agentapi.CodeTryAgainLater, Msg: fmt.Sprintf("enforce network policy for pod %s: %v", req.Pod, err)}
	}
	return resp, true
}

// policyTimeout bounds one EnsurePod the agent serves over the socket.
const policyTimeout = 30 * time.Second

func (a *Agent) policyHost() *policyHost {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pol
}

// policyCollector exports the kernel's per-policy counters at scrape time,
// and the model's size.
type policyCollector struct {
	engine   *policy.Engine
	counters func(*policy.State) (map[string]policy.Counts, error)
	packets  *prometheus.Desc
	bytes    *prometheus.Desc
	objects  *prometheus.Desc
	ready    *prometheus.Desc
}

func newPolicyCollector(e *policy.Engine, counters func(*policy.State) (map[string]policy.Counts, error)) *policyCollector {
	return &policyCollector{
		engine:   e,
		counters: counters,
		packets: prometheus.NewDesc("vnetd_policy_packets_total",
			"Packets a NetworkPolicy's rules allowed, and packets dropped at pods it selects (no policy of theirs allowed them), by policy (namespace/name), direction and verdict.",
			[]string{"policy", "direction", "verdict"}, nil),
		bytes: prometheus.NewDesc("vnetd_policy_bytes_total",
			"Bytes of vnetd_policy_packets_total.", []string{"policy", "direction", "verdict"}, nil),
		objects: prometheus.NewDesc("vnetd_policy_objects",
			"What the policy engine knows of the cluster, by kind (pods, namespaces, networkpolicies).", []string{"kind"}, nil),
		ready: prometheus.NewDesc("vnetd_policy_ready",
			"1 once the engine holds the cluster's pods, namespaces and policies and enforces them.", nil, nil),
	}
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.objects
	ch <- c.ready
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	var pods, nss, pols int
	c.engine.View(func(m *policy.Model) { pods, nss, pols = m.Counts() })
	ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(pods), "pods")
	ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(nss), "namespaces")
	ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(pols), "networkpolicies")
	ready := 0.0
	if c.engine.Ready() && c.engine.Applied() != nil {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready)
	st := c.engine.Applied()
	if st == nil {
		return
	}
	counts, err := c.counters(st)
	if err != nil {
		return
	}
	for key, n := range counts {
		pol, dir := splitCounterKey(key)
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(n.AllowedPackets), pol, dir, "allowed")
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(n.DeniedPackets), pol, dir, "denied")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n.AllowedBytes), pol, dir, "allowed")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n.DeniedBytes), pol, dir, "denied")
	}
}

// splitCounterKey undoes policy.CounterKey ("ns/name ingress").
func splitCounterKey(k string) (pol, dir string) {
	i := strings.LastIndexByte(k, ' ')
	if i < 0 {
		return k, ""
	}
	return k[:i], k[i+1:]
}

// bindRecorded gives the engine the addresses the state file records for
// Kubernetes pods, so a restarted agent enforces a pod whose address the
// API does not report yet as the previous agent did.
func bindRecorded(e *policy.Engine, pods []agentapi.PolicyPod) {
	e.Update(func(m *policy.Model) {
		for _, p := range pods {
			m.Bind(p.Namespace, p.Name, p.IP)
		}
	})
}
