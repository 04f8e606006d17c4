package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/policy"
	policyk8s "github.com/vnetcni/vnetcni/internal/policy/k8s"
	"github.com/vnetcni/vnetcni/internal/store"
)

// startPolicy, when policy is on, opens the node's policy table and the
// API, and starts the engine and its informers on wg; the agent's plugin
// enforces each new pod's policies before ADD wires it from then on.
// EnsurePod answers ErrNotReady (ADD fails, code 11) until the informers
// hold the whole cluster; the table of a previous agent stays in force
// until the first sync replaces it atomically.
func (a *Agent) startPolicy(ctx context.Context, wg *sync.WaitGroup) error {
	pc := a.cfg.Policy
	if !pc.Enabled {
		return nil
	}
	if pc.NodeName == "" {
		pc.NodeName = DefaultNodeName()
	}
	rc, err := policyk8s.Config(pc.Kubeconfig)
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	rc.UserAgent = "vnetd/" + buildinfo.String()
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("network policy: API client: %w", err)
	}
	nft, err := policy.OpenNftables("")
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	a.runPolicy(ctx, wg, client, nft, pc.NodeName)
	a.log.Info("network policy on: watching pods, namespaces and networkpolicies", "node", pc.NodeName, "kubeconfig", pc.Kubeconfig)
	return nil
}

// runPolicy hosts the engine over a kernel table and an API client: the
// informers feed it, its Run keeps the kernel in step, the agent's plugin
// and socket serve EnsurePod from it. The table is closed (not removed:
// pods stay enforced) when ctx ends.
func (a *Agent) runPolicy(ctx context.Context, wg *sync.WaitGroup, client kubernetes.Interface, nft *policy.Nftables, nodeName string) {
	e := policy.NewEngine(nft)
	ensures := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vnetd_policy_ensure_duration_seconds",
		Help:    "Time from a CNI ADD's policy request to the pod's policies being in the kernel, by result (ok, not_ready, error).",
		Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10},
	}, []string{"result"})
	syncErrs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vnetd_policy_sync_errors_total",
		Help: "Failed syncs of the policy table (retried with backoff; the next success replaces the table whole).",
	})
	a.metrics.reg.MustRegister(ensures, syncErrs, newPolicyCollector(e, nft.Counters))
	h := &policyHost{
		engine:   e,
		nodeName: nodeName,
		wait:     informerWait,
		getPod: func(ctx context.Context, ns, name string) (*corev1.Pod, error) {
			return client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		},
		bridgeOK: func() error { return policy.CheckBridgeNetfilter("/proc/sys") },
		log:      a.log,
		ensures:  ensures,
	}
	if st, err := store.New(a.cfg.StateDir).Read(); err == nil {
		var pods []agentapi.PolicyPod
		for _, ep := range st.Endpoints {
			if ep.PodNamespace != "" && ep.PodName != "" && ep.IP.IsValid() {
				pods = append(pods, agentapi.PolicyPod{Namespace: ep.PodNamespace, Name: ep.PodName, IP: ep.IP.Addr()})
			}
		}
		bindRecorded(e, pods)
	}
	a.mu.Lock()
	a.pol = h
	a.mu.Unlock()
	a.plugins[netconf.PluginType].Policy = h
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer nft.Close()
		e.Run(ctx, func(err error) {
			syncErrs.Inc()
			a.log.Error("network policy sync", "err", err)
		})
	}()
	go func() {
		defer wg.Done()
		start := time.Now()
		if err := policyk8s.Start(ctx, client, nodeName, e); err != nil {
			a.log.Error("network policy informers", "err", err)
			return
		}
		pods, nss, pols := 0, 0, 0
		e.View(func(m *policy.Model) { pods, nss, pols = m.Counts() })
		a.log.Info("network policy enforced", "node", nodeName, "pods", pods, "namespaces", nss, "networkpolicies", pols, "after", time.Since(start).Round(time.Millisecond))
	}()
}
