package controllers

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/lru"
)

// Outcome events are spaced per namespace and outcome: a burst of identical
// failures (a thousand operations against a kind that is not served) is
// worth a few events to a human reading `kubectl get events`, not a thousand
// writes to the API server. Every outcome still has its status, its
// arbiter_operations_total count and its decision log line.
const (
	// outcomeEventBurst events of one outcome in one namespace go out at once,
	outcomeEventBurst = 10
	// then one more every outcomeEventEvery.
	outcomeEventEvery = 10 * time.Second
	// eventBudgetsKept bounds the budgets remembered: the least recently
	// used namespace and outcome starts afresh.
	eventBudgetsKept = 4096
)

// eventBudget is the token bucket of each namespace and outcome.
type eventBudget struct {
	mu      sync.Mutex
	buckets *lru.Cache
}

// allow reports whether an event of outcome (phase/reason) in namespace may
// be recorded at now, and spends one if so.
func (b *eventBudget) allow(namespace, outcome string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets == nil {
		b.buckets = lru.New(eventBudgetsKept)
	}
	key := namespace + "/" + outcome
	limiter, ok := b.buckets.Get(key)
	if !ok {
		limiter = rate.NewLimiter(rate.Every(outcomeEventEvery), outcomeEventBurst)
		b.buckets.Add(key, limiter)
	}
	return limiter.(*rate.Limiter).AllowN(now, 1)
}
