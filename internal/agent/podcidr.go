package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
	policyk8s "github.com/vnetcni/vnetcni/internal/policy/k8s"
)

// nodePodCIDR gives the overlay and kubenet models the node's pod CIDR
// from its Node object (spec.podCIDRs[0], which kube-controller-manager's
// node IPAM or the cloud's sets, and which never changes once set), so a
// conflist may leave ipam.podCIDR out where vnetd runs with API access.
type nodePodCIDR struct {
	node string
	// get reads the node; nil when there is no API access (no kubeconfig,
	// not in a cluster): configurations are then passed on untouched.
	get func(ctx context.Context, name string) (*corev1.Node, error)

	mu   sync.Mutex
	cidr string // once known
}

// newNodePodCIDR reads nodes with the API access --kubeconfig gives, if any.
func newNodePodCIDR(kubeconfig, node string) *nodePodCIDR {
	s := &nodePodCIDR{node: node}
	rc, err := policyk8s.Config(kubeconfig)
	if err != nil {
		return s
	}
	rc.UserAgent = "vnetd/" + buildinfo.String()
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return s
	}
	s.get = func(ctx context.Context, name string) (*corev1.Node, error) {
		return client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	return s
}

// errNoPodCIDR is a node without a pod CIDR yet: retryable, the node
// IPAM assigns one shortly after the node registers.
var errNoPodCIDR = errors.New("no spec.podCIDRs yet")

// fill returns stdin with ipam.podCIDR set from the node when the
// configuration is of a pod-CIDR model and has none; other configurations
// are returned as they are.
func (s *nodePodCIDR) fill(ctx context.Context, stdin []byte) ([]byte, error) {
	if s == nil || s.get == nil || len(stdin) == 0 {
		return stdin, nil
	}
	var conf map[string]any
	if json.Unmarshal(stdin, &conf) != nil {
		return stdin, nil // the plugin reports the parse error
	}
	ipam, _ := conf["ipam"].(map[string]any)
	mode, _ := ipam["mode"].(string)
	if ipam == nil || (mode != netconf.IPAMModeOverlay && mode != netconf.IPAMModeKubenet) {
		return stdin, nil
	}
	if v, _ := ipam["podCIDR"].(string); v != "" {
		return stdin, nil
	}
	cidr, err := s.cidrOfNode(ctx)
	if err != nil {
		return nil, err
	}
	ipam["podCIDR"] = cidr
	return json.Marshal(conf)
}

func (s *nodePodCIDR) cidrOfNode(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cidr != "" {
		return s.cidr, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := s.get(ctx, s.node)
	if err != nil {
		return "", fmt.Errorf("ipam.podCIDR from node %s: %w", s.node, err)
	}
	for _, c := range append(append([]string(nil), n.Spec.PodCIDRs...), n.Spec.PodCIDR) {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			s.cidr = p.Masked().String()
			return s.cidr, nil
		}
	}
	return "", fmt.Errorf("ipam.podCIDR from node %s: %w", s.node, errNoPodCIDR)
}

// withPodCIDR runs fill on a request; a failure is the CNI answer
// (code 11: the pod is retried once the node has its pod CIDR).
func (a *Agent) withPodCIDR(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	stdin, err := a.podCIDR.fill(ctx, req.Stdin)
	if err != nil {
		return &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String(),
			Error: &agentapi.Error{Code: agentapi.CodeTryAgainLater, Msg: err.Error()}}
	}
	req.Stdin = stdin
	return nil
}
