// Package k8s feeds a policy engine from the Kubernetes API: shared
// informers on Pods, Namespaces and NetworkPolicies, with the objects
// trimmed to what policy needs so a large cluster's cache stays small.
// The node agent links it; the CNI plugins never do.
package k8s

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnetcni/vnetcni/internal/policy"
)

// Sink receives the model's changes: *policy.Engine.
type Sink interface {
	Update(change func(m *policy.Model))
	SetReady()
}

// Config returns the API client configuration: the kubeconfig at path,
// else in-cluster (the DaemonSet's service account), else $KUBECONFIG.
func Config(path string) (*rest.Config, error) {
	if path == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
		return c, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: %w", path, err)
	}
	return c, nil
}

// trim keeps only what policy reads of an object, for the informers'
// cache: a pod's labels, node, host-network flag, named ports, phase and
// addresses; no managed fields anywhere.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		t := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, UID: o.UID,
			ResourceVersion: o.ResourceVersion, Labels: o.Labels}}
		t.Spec.NodeName, t.Spec.HostNetwork = o.Spec.NodeName, o.Spec.HostNetwork
		for _, c := range o.Spec.Containers {
			var ports []corev1.ContainerPort
			for _, p := range c.Ports {
				if p.Name != "" {
					ports = append(ports, corev1.ContainerPort{Name: p.Name, Protocol: p.Protocol, ContainerPort: p.ContainerPort})
				}
			}
			if len(ports) > 0 {
				t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
			}
		}
		t.Status.Phase, t.Status.PodIP, t.Status.PodIPs = o.Status.Phase, o.Status.PodIP, o.Status.PodIPs
		return t, nil
	case metav1.Object:
		o.SetManagedFields(nil)
		o.SetAnnotations(nil)
	}
	return obj, nil
}

// unwrap returns a deleted object from a delete notification.
func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// Start runs informers for Pods, Namespaces and NetworkPolicies feeding
// sink, waits for their caches to fill, then calls SetReady. They run
// until ctx ends.
func Start(ctx context.Context, client kubernetes.Interface, nodeName string, sink Sink) error {
	f := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithTransform(trim))
	pods := f.Core().V1().Pods().Informer()
	nss := f.Core().V1().Namespaces().Informer()
	pols := f.Networking().V1().NetworkPolicies().Informer()
	setPod := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			pp := policy.PodFromAPI(p, nodeName)
			sink.Update(func(m *policy.Model) { m.SetPod(pp) })
		}
	}
	handlers := []struct {
		inf  cache.SharedIndexInformer
		h    cache.ResourceEventHandlerFuncs
		name string
	}{
		{pods, cache.ResourceEventHandlerFuncs{
			AddFunc:    setPod,
			UpdateFunc: func(_, obj any) { setPod(obj) },
			DeleteFunc: func(obj any) {
				if p, ok := unwrap(obj).(*corev1.Pod); ok {
					sink.Update(func(m *policy.Model) { m.DeletePod(p.Namespace, p.Name) })
				}
			},
		}, "pods"},
		{nss, cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				if n, ok := obj.(*corev1.Namespace); ok {
					sink.Update(func(m *policy.Model) { m.SetNamespace(policy.NamespaceFromAPI(n)) })
				}
			},
			UpdateFunc: func(_, obj any) {
				if n, ok := obj.(*corev1.Namespace); ok {
					sink.Update(func(m *policy.Model) { m.SetNamespace(policy.NamespaceFromAPI(n)) })
				}
			},
			DeleteFunc: func(obj any) {
				if n, ok := unwrap(obj).(*corev1.Namespace); ok {
					sink.Update(func(m *policy.Model) { m.DeleteNamespace(n.Name) })
				}
			},
		}, "namespaces"},
		{pols, cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				if p, ok := obj.(*netv1.NetworkPolicy); ok {
					sink.Update(func(m *policy.Model) { m.SetPolicy(p) })
				}
			},
			UpdateFunc: func(_, obj any) {
				if p, ok := obj.(*netv1.NetworkPolicy); ok {
					sink.Update(func(m *policy.Model) { m.SetPolicy(p) })
				}
			},
			DeleteFunc: func(obj any) {
				if p, ok := unwrap(obj).(*netv1.NetworkPolicy); ok {
					sink.Update(func(m *policy.Model) { m.DeletePolicy(p.Namespace, p.Name) })
				}
			},
		}, "networkpolicies"},
	}
	var synced []cache.InformerSynced
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return fmt.Errorf("watch %s: %w", h.name, err)
		}
		// The handler's own sync: every object of the first list has
		// reached the sink, not only the cache.
		synced = append(synced, reg.HasSynced)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("watch pods, namespaces and networkpolicies: caches not synced: %w", ctx.Err())
	}
	sink.SetReady()
	return nil
}
