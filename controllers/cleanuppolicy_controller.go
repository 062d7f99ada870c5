package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// setupPolicies registers the policy controller. A report is refreshed
// when its policy or a sibling is created, edited or deleted (overlaps
// change), when an operation finishes or goes, when a removal changed it,
// and on a timer; never by its own status write, which would loop.
func (r *CleanupReconciler) setupPolicies(mgr ctrl.Manager) error {
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("cleanuppolicy").
		For(&arbiterv1alpha1.CleanupPolicy{}, specChanged).
		Watches(&arbiterv1alpha1.CleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfNamespace), specChanged).
		Watches(&arbiterv1alpha1.ConflictResolutionOperation{}, r.coalescedPolicyRefresh(), builder.WithPredicates(terminal)).
		WatchesRawSource(source.Channel(r.reportsDue, handler.TypedFuncs[*arbiterv1alpha1.CleanupPolicy, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				key := client.ObjectKeyFromObject(e.Object)
				q.AddAfter(reconcile.Request{NamespacedName: key}, r.refreshDelay(key))
			},
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcilePolicy))
}

// policyRefreshDelay gathers the operations that finish or go in a burst
// into one refresh of their policies' reports: a report reads every finished
// operation of the namespace, so one per event would cost a storm dearly.
const policyRefreshDelay = time.Second

// reportSpacing keeps the reports' share of the manager's time small in a
// namespace with many zombies: refreshes that events bring come at least
// reportSpacing times the last report's cost apart, and never later than the
// timer. With 50k zombies a report takes half a second.
const reportSpacing = 20

// refreshDelay is how long an event waits before it refreshes policy's report.
func (r *CleanupReconciler) refreshDelay(policy types.NamespacedName) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.trackers[policy]; ok {
		return min(max(policyRefreshDelay, reportSpacing*t.reportCost), healthRefresh)
	}
	return policyRefreshDelay
}

// coalescedPolicyRefresh refreshes the reports of a namespace's policies
// when one of its operations finishes or goes, at most once per
// refreshDelay.
func (r *CleanupReconciler) coalescedPolicyRefresh() handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range r.policiesOfNamespace(ctx, o) {
			q.AddAfter(req, r.refreshDelay(req.NamespacedName))
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}

// policiesOfNamespace lists the policies of o's namespace.
func (r *CleanupReconciler) policiesOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		// A cache read fails only while the manager stops; the policies
		// refresh every ReportInterval anyway.
		ctrl.LoggerFrom(ctx).Error(err, "Listing the policies to refresh", "namespace", o.GetNamespace())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return reqs
}

// reportDue asks for a refresh of gov's report, unless gov is the
// operator-wide default, which has none.
func (r *CleanupReconciler) reportDue(gov *arbiterv1alpha1.CleanupPolicy) {
	if cleanup.IsDefault(gov) {
		return
	}
	select {
	case r.reportsDue <- event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy]{Object: gov}:
	default: // the timer refreshes it
	}
}

// reconcilePolicy refreshes a policy's health report: it reads, and
// cleanup.PolicyReport judges.
func (r *CleanupReconciler) reconcilePolicy(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &arbiterv1alpha1.CleanupPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.trackers, req.NamespacedName)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	started := r.now()
	policies, err := r.policies(ctx, p.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	// Policies govern finished operations only.
	finished, err := registry.InPhases(ctx, r.Client, p.Namespace, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded)
	if err != nil {
		return ctrl.Result{}, err
	}

	now := r.now()
	t := r.tracker(p)
	r.mu.Lock()
	var f cleanup.Figures
	f.FailureRatePercent, _ = t.outcomes.FailureRatePercent(now)
	f.Latency = cleanup.LatencyOf(&t.latencies)
	f.Cleaned, f.Failed = t.cleaned, t.failed
	r.mu.Unlock()
	rep := cleanup.PolicyReport(p, policies, finished, f, now)
	r.mu.Lock()
	t.reportCost = r.now().Sub(started)
	r.mu.Unlock()

	if rep.Changed {
		orig := p.DeepCopy()
		p.Status = rep.Status
		if err := r.Client.Status().Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording the status of CleanupPolicy %s: %w", req.NamespacedName, err)
		}
		// Recorded: what came since is for the next report.
		r.mu.Lock()
		t.cleaned -= f.Cleaned
		t.failed -= f.Failed
		r.mu.Unlock()
		// One event per report for every zombie removed since the last
		// (a dryRun policy's WouldClean events name each instead).
		if f.Cleaned > 0 && !p.Spec.DryRun {
			r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "Cleaned", "Cleanup", "Removed %d zombie(s) since the last report", f.Cleaned)
		}
	}
	return ctrl.Result{RequeueAfter: rep.Refresh}, nil
}
