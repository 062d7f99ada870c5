package controllers

import (
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// retryLimiter spaces the retries of a failed reconcile per object: 5 ms,
// doubling up to 10 s. controller-runtime's default also puts every retry
// through one bucket of 10 per second for the whole controller: when a
// lagging cache makes hundreds of optimistic-lock status patches conflict at
// once (a storm, an API server restart), their retries would queue behind
// each other for tens of seconds. Per-object backoff alone keeps a failing
// object from spinning without holding back the others.
func retryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 10*time.Second)
}
