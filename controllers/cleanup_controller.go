package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
)

// healthRefresh is how often a policy's health report is refreshed even when
// nothing it governs changed.
const healthRefresh = cleanup.ReportInterval

// DefaultStrategyNone keeps operations that no CleanupPolicy selects.
const DefaultStrategyNone = "None"

// CleanupReconciler removes zombie operations as the CleanupPolicy or
// ClusterCleanupPolicy that governs each says, and keeps every policy's
// health report.
//
// It runs three controllers over shared state. The zombie controller
// (zombie_controller.go) reconciles finished operations one by one:
// Immediate removes them at once, Deferred when their retention expires
// (RequeueAfter, a timer per object), Lazy never on a timer but when the
// operation controller meets their target (MeetTargets). The census and
// cluster policy controllers (cleanuppolicy_controller.go) keep the
// reports: one pass over a namespace's operations for all its policies.
type CleanupReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Workers  int
	// DefaultStrategy governs operations no policy selects (None keeps them).
	DefaultStrategy string
	// Clock tells time to every judgement; the real clock when nil.
	Clock clock.Clock
	// Audit writes the audit record of every removal (cleanup_audit.go).
	Audit logr.Logger

	// selectors parses each policy's selectors once per generation.
	selectors *cleanup.Selectors

	mu sync.Mutex
	// trackers are by policy key (cleanup.Key): a ClusterCleanupPolicy's
	// has an empty namespace, which no CleanupPolicy's has.
	trackers map[types.NamespacedName]*policyTracker
	// censuses are the last census of each namespace that has a policy.
	censuses map[string]*namespaceCensus
	// tickets are the deletion tokens reserved for zombies that wait for
	// their policy's rate limit, by zombie.
	tickets map[types.NamespacedName]ticket
	// met records, by zombie, when lazy cleanup met it due, until a worker
	// acts on it; bounded, and shared fairly between namespaces (metBook).
	met *metBook
	// reported remembers the zombies a dryRun policy reported, so that each
	// is counted once; bounded, and forgotten as they go.
	reported *lru.Cache
	// unanswered are the deletes whose answer was lost (see remove), by
	// zombie, until the next look tells whether they landed; bounded.
	unanswered *lru.Cache
	// historyTurns carries the zombies over a historyLimit whose deletion
	// token was just reserved by another zombie's judgement, to the zombie
	// controller's queue: each waits for its own token, rather than every
	// zombie of the target for each one.
	historyTurns chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]
	// meetings carries the operations arbiter meets, to the zombie
	// controller's queue.
	meetings chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]
	// meetingsMu guards pendingMeetings: the targets (registry keys) that a
	// meeting in the channel carries. A target met again before that one is
	// handled adds nothing, so one tenant meeting its targets over and over
	// holds a slot per target, never the whole channel.
	meetingsMu      sync.Mutex
	pendingMeetings map[string]bool
	// governorCache keeps each namespace's candidates for judging zombies
	// between changes of what they are made of; see governors.
	governorCache governorCache
	// history keeps, per target, the zombies over a historyLimit between
	// changes of the target's operations; see overHistory.
	history historyCache
	// reportsDue carries CleanupPolicies whose report a removal, a failed
	// one or a dry-run one changed, to a census of their namespace: the
	// tracker, not the operations a census reads, knows of these.
	reportsDue chan event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy]
	// clusterReportsDue carries the ClusterCleanupPolicies whose report a
	// removal or a census changed.
	clusterReportsDue chan event.TypedGenericEvent[*arbiterv1alpha1.ClusterCleanupPolicy]
}

// policyTracker is what a policy's report needs that the cluster does not
// store: its deletion budget, recent outcomes and latencies, and counts not
// yet written to status.
type policyTracker struct {
	limiter   *rate.Limiter
	outcomes  cleanup.Outcomes
	latencies cleanup.Latencies
	// cleaned counts the removals and reported the dry-run reports not yet
	// in status, apart: a policy switched out of dryRun must not announce
	// as removed what it only reported.
	cleaned  int64
	reported int64
	failed   int64
	// wouldCleanEvents counts the WouldClean events sent since the last
	// report, at most wouldCleanEventsPerReport.
	wouldCleanEvents int
	// byNamespace are a ClusterCleanupPolicy's outcomes in each namespace,
	// for the health of each; nil for a CleanupPolicy.
	byNamespace map[string]*cleanup.Outcomes
}

// record remembers one deletion attempt in namespace; r.mu must be held.
func (t *policyTracker) record(namespace string, now time.Time, failed bool) {
	t.outcomes.Add(now, failed)
	if t.byNamespace == nil {
		return
	}
	o, ok := t.byNamespace[namespace]
	if !ok {
		o = &cleanup.Outcomes{}
		t.byNamespace[namespace] = o
	}
	o.Add(now, failed)
}

// NewCleanupReconciler wires the cleanup controller to a manager.
func NewCleanupReconciler(mgr ctrl.Manager, workers int, defaultStrategy string) *CleanupReconciler {
	r := newCleanupReconciler(mgr.GetClient(), mgr.GetEventRecorder("arbiter-cleanup"), workers, defaultStrategy)
	r.Audit = mgr.GetLogger().WithName(AuditLoggerName)
	return r
}

func newCleanupReconciler(c client.Client, rec recorder.EventRecorder, workers int, defaultStrategy string) *CleanupReconciler {
	return &CleanupReconciler{
		Client:            c,
		Recorder:          rec,
		Workers:           workers,
		DefaultStrategy:   defaultStrategy,
		Clock:             clock.RealClock{},
		Audit:             ctrl.Log.WithName(AuditLoggerName),
		selectors:         cleanup.NewSelectors(),
		history:           newHistoryCache(),
		trackers:          map[types.NamespacedName]*policyTracker{},
		censuses:          map[string]*namespaceCensus{},
		tickets:           map[types.NamespacedName]ticket{},
		met:               newMetBook(metRecords),
		reported:          lru.New(reportedRecords),
		unanswered:        lru.New(unansweredRecords),
		meetings:          make(chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation], 4096),
		historyTurns:      make(chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation], 4096),
		reportsDue:        make(chan event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], 1024),
		clusterReportsDue: make(chan event.TypedGenericEvent[*arbiterv1alpha1.ClusterCleanupPolicy], 1024),
	}
}

func (r *CleanupReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// SetupWithManager registers the zombie, census and cluster policy
// controllers and the tracker sweep.
func (r *CleanupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(r.sweepTrackers)); err != nil {
		return err
	}
	if err := r.setupZombies(mgr); err != nil {
		return err
	}
	return r.setupReports(mgr)
}

// terminal passes every event of a finished operation, changes of its
// annotations included: arbiter.dev/keep removed or arbiter.dev/acknowledged
// added releases it to cleanup.
var terminal = predicate.NewPredicateFuncs(func(o client.Object) bool {
	op, ok := o.(*arbiterv1alpha1.ConflictResolutionOperation)
	return ok && op.Status.Phase.IsTerminal()
})

// candidates gathers the policies that may govern a namespace's
// operations: its CleanupPolicies and the ClusterCleanupPolicies whose
// namespaceSelector selects its labels, all from the cache.
func (r *CleanupReconciler) candidates(ctx context.Context, namespace string) (*cleanup.Candidates, error) {
	var policies arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &policies, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("listing cleanup policies of %s: %w", namespace, err)
	}
	var clusters arbiterv1alpha1.ClusterCleanupPolicyList
	if err := r.Client.List(ctx, &clusters); err != nil {
		return nil, fmt.Errorf("listing cluster cleanup policies: %w", err)
	}
	var namespaceLabels map[string]string
	if len(clusters.Items) > 0 {
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := r.Client.Get(ctx, types.NamespacedName{Name: namespace}, ns); client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("reading the labels of namespace %s: %w", namespace, err)
		}
		namespaceLabels = ns.Labels
	}
	return cleanup.NewCandidates(namespace, namespaceLabels, policies.Items, clusters.Items, r.selectors), nil
}

// governing returns the policy that governs op among its namespace's
// candidates: the oldest selecting CleanupPolicy, else the oldest selecting
// ClusterCleanupPolicy, else the operator-wide default, else nil.
func (r *CleanupReconciler) governing(op *arbiterv1alpha1.ConflictResolutionOperation, cands *cleanup.Candidates) *arbiterv1alpha1.CleanupPolicy {
	if p := cands.Governing(op); p != nil {
		return p
	}
	if r.DefaultStrategy == "" || r.DefaultStrategy == DefaultStrategyNone {
		return nil
	}
	return cleanup.DefaultPolicy(op.Namespace, arbiterv1alpha1.CleanupStrategy(r.DefaultStrategy))
}

// tracker returns p's tracker, made on first use, with its deletion budget
// following p's maxDeletionsPerSecond.
func (r *CleanupReconciler) tracker(p *arbiterv1alpha1.CleanupPolicy) *policyTracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := cleanup.Key(p)
	t, ok := r.trackers[k]
	perSecond := max(p.Spec.MaxDeletionsPerSecond, 1)
	if !ok {
		t = &policyTracker{limiter: rate.NewLimiter(rate.Limit(perSecond), int(perSecond))}
		if cleanup.IsCluster(p) {
			t.byNamespace = map[string]*cleanup.Outcomes{}
		}
		r.trackers[k] = t
	} else if t.limiter.Limit() != rate.Limit(perSecond) {
		t.limiter.SetLimit(rate.Limit(perSecond))
		t.limiter.SetBurst(int(perSecond))
	}
	return t
}

// sweepTrackers drops, every healthRefresh, the trackers no policy needs.
func (r *CleanupReconciler) sweepTrackers(ctx context.Context) error {
	tick := time.NewTicker(healthRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := r.sweep(ctx); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Sweeping cleanup trackers failed")
			}
		}
	}
}

// sweep drops the trackers of policies that are gone (a removal racing a
// policy's deletion can re-create one after its report dropped it), and
// the operator-wide default's of a namespace once its bucket is full again:
// a new one would be the same, and namespaces come and go.
func (r *CleanupReconciler) sweep(ctx context.Context) error {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list); err != nil {
		return fmt.Errorf("listing cleanup policies: %w", err)
	}
	var clusters arbiterv1alpha1.ClusterCleanupPolicyList
	if err := r.Client.List(ctx, &clusters); err != nil {
		return fmt.Errorf("listing cluster cleanup policies: %w", err)
	}
	live := make(map[types.NamespacedName]bool, len(list.Items)+len(clusters.Items))
	for i := range list.Items {
		live[cleanup.Key(&list.Items[i])] = true
	}
	for i := range clusters.Items {
		live[cleanup.Key(cleanup.ClusterView(&clusters.Items[i]))] = true
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.trackers {
		idle := t.limiter.TokensAt(now) >= float64(t.limiter.Burst())
		if !live[k] && (k.Name != cleanup.DefaultPolicyName || idle) {
			delete(r.trackers, k)
		}
	}
	return nil
}
