package k8slab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"

	"github.com/vnetcni/vnetcni/examples"
	"github.com/vnetcni/vnetcni/internal/policy"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// ShopNamespace is the namespace of examples/network-policy/shop.yaml.
const ShopNamespace = "shop"

// shopTiers and the port each tier serves on.
var shopTiers = []struct {
	tier string
	port uint16
}{{"frontend", 8080}, {"backend", 9090}, {"database", 5432}}

// CheckPolicy deploys the seed's policy case (examples/network-policy:
// frontend, backend, database) and probes every tier from every tier on
// the destination's port, from inside the pods' network namespaces.
// Expected is what the policy model says (the agent's own compiler, every
// pod as if local, as `vnetctl policy explain` does): reachable, or no
// answer (a dropped SYN). It removes the namespace when done.
func (c *Cluster) CheckPolicy(ctx context.Context) ([]Row, error) {
	if _, err := c.KubectlStdin(ctx, examples.Shop, "apply", "-f", "-"); err != nil {
		return nil, err
	}
	defer func() {
		_, _ = c.Kubectl(context.Background(), "delete", "namespace", ShopNamespace, "--wait=true", "--timeout=120s")
	}()
	for _, t := range shopTiers {
		if _, err := c.Kubectl(ctx, "-n", ShopNamespace, "rollout", "status", "deployment/"+t.tier, "--timeout=180s"); err != nil {
			return nil, err
		}
	}
	m, err := c.policyModel(ctx)
	if err != nil {
		return nil, err
	}
	pods, err := c.pods(ctx)
	if err != nil {
		return nil, err
	}
	byTier := map[string]podInfo{}
	for _, p := range pods {
		if p.Namespace != ShopNamespace || !p.Ready {
			continue
		}
		for _, t := range shopTiers {
			if strings.HasPrefix(p.Name, t.tier+"-") {
				if _, ok := byTier[t.tier]; !ok {
					byTier[t.tier] = p
				}
			}
		}
	}
	if len(byTier) < len(shopTiers) {
		return nil, fmt.Errorf("policy check: pods ready for %d of %d tiers", len(byTier), len(shopTiers))
	}
	var rows []Row
	for _, from := range shopTiers {
		for _, to := range shopTiers {
			a, b := byTier[from.tier], byTier[to.tier]
			if a.Name == b.Name {
				continue
			}
			fe, err1 := m.ResolveEndpoint(a.IP.String())
			te, err2 := m.ResolveEndpoint(b.IP.String())
			if err1 != nil || err2 != nil {
				return rows, fmt.Errorf("policy check: %v %v", err1, err2)
			}
			want := "no answer"
			if policy.Explain(m, fe, te, policy.ProtoTCP, to.port).Decision.Allowed() {
				want = reachable
			}
			got := reach(probe.TCPConnect(a.NetNS, netip.AddrPortFrom(b.IP, to.port), probeWait))
			rows = append(rows, Row{Check: "network policy (examples/network-policy)", From: from.tier + " " + a.Node + "/" + a.Name,
				To: fmt.Sprintf("%s %s:%d", to.tier, b.IP, to.port), Expected: want, Observed: got})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].From < rows[j].From })
	return rows, nil
}

// policyModel reads the cluster's pods, namespaces and policies into a
// policy model.
func (c *Cluster) policyModel(ctx context.Context) (*policy.Model, error) {
	m := policy.NewModel()
	var pods corev1.PodList
	var nss corev1.NamespaceList
	var pols netv1.NetworkPolicyList
	for _, g := range []struct {
		what string
		into any
	}{{"pods", &pods}, {"namespaces", &nss}, {"networkpolicies", &pols}} {
		out, err := c.Kubectl(ctx, "get", g.what, "-A", "-o", "json")
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(out), g.into); err != nil {
			return nil, fmt.Errorf("decode %s: %w", g.what, err)
		}
	}
	for i := range pods.Items {
		m.SetPod(policy.PodFromAPI(&pods.Items[i], ""))
	}
	for i := range nss.Items {
		m.SetNamespace(policy.NamespaceFromAPI(&nss.Items[i]))
	}
	for i := range pols.Items {
		m.SetPolicy(&pols.Items[i])
	}
	return m, nil
}
