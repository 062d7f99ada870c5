package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

// Policy reports. The census controller reconciles namespaces: one pass over
// a namespace's finished operations (cleanup.TakeCensus) tallies every
// policy that may govern them, and the reports of the namespace's
// CleanupPolicies are written from it. The cluster policy controller sums,
// for each ClusterCleanupPolicy, the tallies the censuses of its namespaces
// kept: no operation is read twice for a refresh, whatever the number of
// policies.

// namespaceCensus is the last census of a namespace.
type namespaceCensus struct {
	census cleanup.Census
	at     time.Time
	// cost is how long it took to read and judge the namespace's finished
	// operations, at most censusCostPerOperation for each it read; it spaces
	// the next census.
	cost time.Duration
}

// censusCostPerOperation bounds what a census is charged for each finished
// operation it read: far above what reading and judging one costs, so that
// only a stall (the process descheduled, a GC pause) meets it. Without it,
// one stalled census of a namespace with a handful of zombies would push
// that namespace's reports to the timer.
const censusCostPerOperation = 50 * time.Microsecond

// censusCost is what a census that took took and read operations is
// charged.
func censusCost(took time.Duration, operations int) time.Duration {
	return min(took, censusCostPerOperation*time.Duration(operations+1))
}

// setupReports registers the census and cluster policy controllers. A
// namespace's census is taken when a policy of the namespace or a cluster
// policy is created, edited or deleted (assignments and overlaps change),
// when the namespace is relabelled, when one of its operations finishes or
// goes, when a removal changed a report, and on a timer; never by a status
// write, which would loop.
func (r *CleanupReconciler) setupReports(mgr ctrl.Manager) error {
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("cleanuppolicy").
		For(&corev1.Namespace{}, builder.OnlyMetadata, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&arbiterv1alpha1.CleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(policyToNamespace), specChanged).
		Watches(&arbiterv1alpha1.ClusterCleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.clusterPolicyToNamespaces), specChanged).
		Watches(&arbiterv1alpha1.ConflictResolutionOperation{}, r.coalescedCensus(), builder.WithPredicates(terminal)).
		WatchesRawSource(source.Channel(r.reportsDue, handler.TypedFuncs[*arbiterv1alpha1.CleanupPolicy, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				q.AddAfter(namespaceRequest(e.Object.Namespace), r.refreshDelay(e.Object.Namespace))
			},
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcileNamespace))
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("clustercleanuppolicy").
		For(&arbiterv1alpha1.ClusterCleanupPolicy{}, specChanged).
		WatchesRawSource(source.Channel(r.clusterReportsDue, handler.TypedFuncs[*arbiterv1alpha1.ClusterCleanupPolicy, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.ClusterCleanupPolicy], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				// Censuses of many namespaces come close together: one sum.
				q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: e.Object.Name}}, policyRefreshDelay)
			},
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcileClusterPolicy))
}

// policyRefreshDelay gathers the operations that finish or go in a burst
// into one census of their namespace: a census reads every finished
// operation of the namespace, so one per event would cost a storm dearly.
const policyRefreshDelay = time.Second

// reportSpacing keeps the censuses' share of the manager's time small in a
// namespace with many zombies: censuses that events bring come at least
// reportSpacing times the last census's cost apart, and never later than
// the timer.
const reportSpacing = 20

// refreshDelay is how long an event waits before it brings a census of
// namespace.
func (r *CleanupReconciler) refreshDelay(namespace string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.censuses[namespace]; ok {
		return min(max(policyRefreshDelay, reportSpacing*c.cost), healthRefresh)
	}
	return policyRefreshDelay
}

func namespaceRequest(namespace string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: namespace}}
}

// policyToNamespace takes a census of a changed CleanupPolicy's namespace.
func policyToNamespace(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{namespaceRequest(o.GetNamespace())}
}

// clusterPolicyToNamespaces takes a census of every namespace a changed
// ClusterCleanupPolicy covers (before and after the change: the map sees
// both), and of those it had a tally in.
func (r *CleanupReconciler) clusterPolicyToNamespaces(ctx context.Context, o client.Object) []reconcile.Request {
	cp, namespaces := r.changedClusterPolicy(ctx, o)
	if cp == nil {
		return nil
	}
	key := cleanup.Key(cleanup.ClusterView(cp))
	r.mu.Lock()
	for ns, c := range r.censuses {
		if _, ok := c.census[key]; ok {
			namespaces = append(namespaces, ns)
		}
	}
	r.mu.Unlock()
	reqs := make([]reconcile.Request, 0, len(namespaces))
	for _, ns := range namespaces {
		reqs = append(reqs, namespaceRequest(ns))
	}
	return reqs
}

// changedClusterPolicy is the ClusterCleanupPolicy a watch map was handed
// (nil for any other object) and the namespaces it covers; a failed listing
// is logged and covers none.
func (r *CleanupReconciler) changedClusterPolicy(ctx context.Context, o client.Object) (*arbiterv1alpha1.ClusterCleanupPolicy, []string) {
	cp, ok := o.(*arbiterv1alpha1.ClusterCleanupPolicy)
	if !ok {
		return nil, nil
	}
	namespaces, err := r.namespacesCoveredBy(ctx, cp)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the namespaces of a changed cluster policy", "clusterCleanupPolicy", cp.Name)
	}
	return cp, namespaces
}

// namespacesCoveredBy lists the namespaces cp's namespaceSelector selects,
// from the cache of namespaces' metadata.
func (r *CleanupReconciler) namespacesCoveredBy(ctx context.Context, cp *arbiterv1alpha1.ClusterCleanupPolicy) ([]string, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := r.Client.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var out []string
	for i := range list.Items {
		if r.selectors.Covers(cp, list.Items[i].Labels) {
			out = append(out, list.Items[i].Name)
		}
	}
	return out, nil
}

// coalescedCensus takes a census of a namespace when one of its operations
// finishes or goes, at most once per refreshDelay.
func (r *CleanupReconciler) coalescedCensus() handler.EventHandler {
	enqueue := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.AddAfter(namespaceRequest(o.GetNamespace()), r.refreshDelay(o.GetNamespace()))
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

// reportDue asks for a refresh of gov's report, unless gov is the
// operator-wide default, which has none.
func (r *CleanupReconciler) reportDue(gov *arbiterv1alpha1.CleanupPolicy) {
	switch {
	case cleanup.IsDefault(gov):
		return
	case cleanup.IsCluster(gov):
		r.clusterReportDue(gov.Name)
	default:
		select {
		case r.reportsDue <- event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy]{Object: gov}:
		default: // the timer refreshes it
		}
	}
}

// clusterReportDue asks for a refresh of ClusterCleanupPolicy name's report.
func (r *CleanupReconciler) clusterReportDue(name string) {
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	select {
	case r.clusterReportsDue <- event.TypedGenericEvent[*arbiterv1alpha1.ClusterCleanupPolicy]{Object: cp}:
	default: // the timer refreshes it
	}
}

// figures reads what p's tracker has for its next report.
func (r *CleanupReconciler) figures(p *arbiterv1alpha1.CleanupPolicy, now time.Time) (*policyTracker, cleanup.Figures) {
	t := r.tracker(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	var f cleanup.Figures
	f.FailureRatePercent, _ = t.outcomes.FailureRatePercent(now)
	for ns, o := range t.byNamespace {
		percent, attempts := o.FailureRatePercent(now)
		if attempts == 0 {
			delete(t.byNamespace, ns) // nothing left in the window
			continue
		}
		if f.NamespaceFailureRatePercent == nil {
			f.NamespaceFailureRatePercent = map[string]int32{}
		}
		f.NamespaceFailureRatePercent[ns] = percent
	}
	f.Latency = cleanup.LatencyOf(&t.latencies)
	f.Removed, f.Reported, f.Failed = t.cleaned, t.reported, t.failed
	return t, f
}

// reconcileNamespace takes a census of a namespace and writes the reports
// of its CleanupPolicies from it; the ClusterCleanupPolicies whose tally
// changed are told to sum theirs again.
func (r *CleanupReconciler) reconcileNamespace(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	namespace := req.Name
	started := r.now()
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Client.Get(ctx, types.NamespacedName{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone with its policies and operations: nothing to report, no
			// timer to keep.
			r.dropTrackersGone(namespace, nil)
			r.storeCensus(namespace, nil)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cands, err := r.candidates(ctx, namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	policies := cands.Policies()
	r.dropTrackersGone(namespace, policies)
	if len(policies) == 0 {
		r.storeCensus(namespace, nil)
		return ctrl.Result{}, nil
	}
	// Policies govern finished operations only.
	finished, err := registry.InPhases(ctx, r.Client, namespace, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.now()
	census := cleanup.TakeCensus(cands, finished, now)
	r.storeCensus(namespace, &namespaceCensus{census: census, at: now, cost: censusCost(r.now().Sub(started), len(finished))})

	refresh := healthRefresh
	for _, p := range policies {
		if cleanup.IsCluster(p) {
			continue
		}
		t, f := r.figures(p, now)
		rep := cleanup.PolicyReport(p, census[cleanup.Key(p)], f, now)
		refresh = min(refresh, rep.Refresh)
		if !rep.Changed {
			continue
		}
		orig := p.DeepCopy()
		p.Status = rep.Status
		if err := r.writeReport(ctx, p, orig, t, f); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording the status of CleanupPolicy %s/%s: %w", namespace, p.Name, err)
		}
	}
	return ctrl.Result{RequeueAfter: refresh}, nil
}

// writeReport writes a policy's new report (policy, changed from orig),
// subtracts what it recorded from t (what came since is for the next
// report), and sends one event for every zombie removed since the last,
// and one for the dry-run reports (whose own WouldClean events are
// bounded per report): never one for the other, whatever dryRun says by now.
func (r *CleanupReconciler) writeReport(ctx context.Context, policy, orig client.Object, t *policyTracker, f cleanup.Figures) error {
	if err := r.Client.Status().Patch(ctx, policy, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	r.mu.Lock()
	t.cleaned -= f.Removed
	t.reported -= f.Reported
	t.failed -= f.Failed
	t.wouldCleanEvents = 0
	r.mu.Unlock()
	if f.Removed > 0 {
		r.Recorder.Eventf(policy, nil, corev1.EventTypeNormal, "Cleaned", "Cleanup", "Removed %d zombie(s) since the last report", f.Removed)
	}
	if f.Reported > 0 {
		r.Recorder.Eventf(policy, nil, corev1.EventTypeNormal, "WouldClean", "Cleanup",
			"Would have removed %d zombie(s) since the last report (dryRun); the audit log names each", f.Reported)
	}
	return nil
}

// storeCensus keeps a namespace's census (nil: the namespace has no
// policy left) and tells the ClusterCleanupPolicies whose tally it changed.
func (r *CleanupReconciler) storeCensus(namespace string, c *namespaceCensus) {
	r.mu.Lock()
	var before cleanup.Census
	if old, ok := r.censuses[namespace]; ok {
		before = old.census
	}
	if c == nil {
		delete(r.censuses, namespace)
	} else {
		r.censuses[namespace] = c
	}
	r.mu.Unlock()
	var after cleanup.Census
	if c != nil {
		after = c.census
	}
	// Ages alone change at every census: the cluster policy's own timer
	// follows them (see reconcileClusterPolicy).
	sameButAge := func(a, b cleanup.Tally) bool {
		a.OldestZombieAge, b.OldestZombieAge = 0, 0
		return a == b
	}
	changed := map[string]bool{}
	for key, t := range after {
		if old, ok := before[key]; key.Namespace == "" && (!ok || !sameButAge(old, t)) {
			changed[key.Name] = true
		}
	}
	for key := range before {
		if _, ok := after[key]; key.Namespace == "" && !ok {
			changed[key.Name] = true
		}
	}
	for name := range changed {
		r.clusterReportDue(name)
	}
}

// dropTrackersGone drops the trackers of a namespace's CleanupPolicies that
// are gone; the operator-wide default's is the sweep's business.
func (r *CleanupReconciler) dropTrackersGone(namespace string, live []*arbiterv1alpha1.CleanupPolicy) {
	keep := map[types.NamespacedName]bool{}
	for _, p := range live {
		keep[cleanup.Key(p)] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.trackers {
		if k.Namespace == namespace && k.Name != cleanup.DefaultPolicyName && !keep[k] {
			delete(r.trackers, k)
		}
	}
}

// reconcileClusterPolicy refreshes a ClusterCleanupPolicy's report from the
// tallies its namespaces' censuses kept: O(namespaces), no operation read.
func (r *CleanupReconciler) reconcileClusterPolicy(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, cp); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.trackers, types.NamespacedName{Name: req.Name})
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	view := cleanup.ClusterView(cp)
	key := cleanup.Key(view)
	now := r.now()
	var tallies []cleanup.NamespaceTally
	r.mu.Lock()
	for ns, c := range r.censuses {
		if t, ok := c.census[key]; ok {
			// Its zombies have aged since the census.
			if t.Zombies > 0 {
				t.OldestZombieAge += now.Sub(c.at)
			}
			tallies = append(tallies, cleanup.NamespaceTally{Namespace: ns, Tally: t})
		}
	}
	r.mu.Unlock()
	t, f := r.figures(view, now)
	rep := cleanup.ClusterPolicyReport(cp, tallies, r.selectors.Problem(cp), f, now)
	if rep.Changed {
		orig := cp.DeepCopy()
		cp.Status = rep.Status
		if err := r.writeReport(ctx, cp, orig, t, f); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording the status of ClusterCleanupPolicy %s: %w", cp.Name, err)
		}
	}
	return ctrl.Result{RequeueAfter: rep.Refresh}, nil
}

// regarding is the object events about gov's removals relate to: the
// CleanupPolicy, or the ClusterCleanupPolicy gov is a view of.
func regarding(gov *arbiterv1alpha1.CleanupPolicy) runtime.Object {
	if cleanup.IsCluster(gov) {
		return &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: gov.Name, UID: gov.UID}}
	}
	return gov
}
