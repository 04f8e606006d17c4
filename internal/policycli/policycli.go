// Package policycli is vnetctl-policy, the network policy commands
// ("vnetctl policy …" runs it): they link the Kubernetes API types and the
// policy compiler, which would double vnetctl's size, so they live in a
// binary of their own until the node agent answers them.
package policycli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"

	"github.com/vnetcni/vnetcni/internal/kubeapi"
	"github.com/vnetcni/vnetcni/internal/policy"
)

// Run executes vnetctl-policy with os.Args and returns the exit code.
func Run(args []string) int {
	root := newPolicyCmd()
	root.SetArgs(args[1:])
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "vnetctl policy:", err)
		return 1
	}
	return 0
}

func newPolicyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:           "vnetctl policy",
		Short:         "Kubernetes network policy as vnetcni enforces it",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var kubeconfig string
	explain := &cobra.Command{
		Use:   "explain <namespace/pod> <peer> <port[/proto]>",
		Short: "Say whether a connection between a pod and a peer is allowed, and by which policies",
		Long: `Explain compiles the cluster's NetworkPolicies with the compiler the node
agent runs and passes the connection's first packet through the result, both
ways: from the peer to the pod's port, and from the pod to the peer's port.
The peer is a pod (namespace/name) or an IPv4 address; the port is a number
with tcp (default), udp or sctp, e.g. 5432/tcp. Traffic from the node itself
(kubelet probes, host-network pods) is never filtered.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := kubeapi.New(kubeconfig)
			if err != nil {
				return err
			}
			m, err := loadModel(cmd.Context(), client)
			if err != nil {
				return err
			}
			return explainBothWays(cmd, m, args[0], args[1], args[2])
		},
	}
	explain.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
	c.AddCommand(explain)
	return c
}

func explainBothWays(cmd *cobra.Command, m *policy.Model, podArg, peerArg, portArg string) error {
	pod, err := m.ResolveEndpoint(podArg)
	if err != nil {
		return err
	}
	if pod.Pod == nil {
		return fmt.Errorf("%s: the first argument must be a pod (namespace/name) or a pod's address", podArg)
	}
	peer, err := m.ResolveEndpoint(peerArg)
	if err != nil {
		return err
	}
	proto, port, err := policy.ParseProtoPort(portArg)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprint(w, policy.Explain(m, peer, pod, proto, port))
	fmt.Fprint(w, policy.Explain(m, pod, peer, proto, port))
	return nil
}

// getter reads API objects (kubeapi.Client).
type getter interface {
	Get(ctx context.Context, path string, v any) error
}

// loadModel reads the cluster's pods, namespaces and NetworkPolicies.
func loadModel(ctx context.Context, g getter) (*policy.Model, error) {
	var pods corev1.PodList
	var nss corev1.NamespaceList
	var pols netv1.NetworkPolicyList
	for _, l := range []struct {
		path string
		v    any
	}{{"/api/v1/namespaces", &nss}, {"/api/v1/pods", &pods}, {"/apis/networking.k8s.io/v1/networkpolicies", &pols}} {
		if err := g.Get(ctx, l.path, l.v); err != nil {
			return nil, err
		}
	}
	m := policy.NewModel()
	for i := range nss.Items {
		m.SetNamespace(policy.NamespaceFromAPI(&nss.Items[i]))
	}
	for i := range pods.Items {
		m.SetPod(policy.PodFromAPI(&pods.Items[i], ""))
	}
	for i := range pols.Items {
		m.SetPolicy(&pols.Items[i])
	}
	return m, nil
}
