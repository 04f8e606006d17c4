package ipamcontroller

import (
	"context"
	"time"

	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Run watches Nodes and NodeNetworkConfigs and syncs each node that
// changes, with workers at once, until ctx ends. A failed sync is retried
// with backoff (a throttled or failing cloud: 429s, 500s); every node is
// synced again each resync period as a safety net.
func (c *Controller) Run(ctx context.Context, workers int, resync time.Duration) error {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodenetworkconfigs"})
	defer q.ShutDown()
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		switch o := obj.(type) {
		case interface{ GetName() string }:
			q.Add(o.GetName())
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue}

	kf := informers.NewSharedInformerFactory(c.Kube, resync)
	if _, err := kf.Core().V1().Nodes().Informer().AddEventHandler(handler); err != nil {
		return err
	}
	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.Dynamic, resync, Namespace, nil)
	if _, err := df.ForResource(GVR).Informer().AddEventHandler(handler); err != nil {
		return err
	}
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	kf.WaitForCacheSync(ctx.Done())
	df.WaitForCacheSync(ctx.Done())
	c.Log.Info("ipam controller running", "podSubnet", c.PodSubnet, "workers", workers)

	for range max(workers, 1) {
		go func() {
			for {
				node, quit := q.Get()
				if quit {
					return
				}
				if err := c.Sync(ctx, node); err != nil {
					c.Log.Warn("sync failed; retrying", "node", node, "err", err, "retries", q.NumRequeues(node))
					q.AddRateLimited(node)
				} else {
					q.Forget(node)
				}
				q.Done(node)
			}
		}()
	}
	<-ctx.Done()
	return nil
}
