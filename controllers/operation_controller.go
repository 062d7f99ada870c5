package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/authz"
	"github.com/arbiter-dev/arbiter/internal/execute"
	"github.com/arbiter-dev/arbiter/internal/metrics"
	"github.com/arbiter-dev/arbiter/internal/staging"
)

// notReadyRetry is how soon an operation seen before recovery finished is
// looked at again.
const notReadyRetry = 100 * time.Millisecond

// OperationReconciler arbitrates and applies ConflictResolutionOperations.
//
// Reconcile stages each pending operation with the Arbiter and acts on its
// verdict; the arbiter loop (Start) decides batches as their windows close
// and wakes the operations whose verdict changed.
type OperationReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Arbiter   *staging.Arbiter
	Executor  *execute.Executor
	// Authz reviews each operation's requester before it may be staged.
	Authz   *authz.Checker
	Workers int
	// Meet, when set, is told of every operation staged, so that lazy
	// cleanup can remove old zombies of the same targets.
	Meet func(*arbiterv1alpha1.ConflictResolutionOperation)

	verdicts chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]
	wake     chan struct{}
	ready    atomic.Bool
	finished finishedSet
}

// finishedSet remembers operations this manager just finished, so that a
// reconcile of a cached copy older than the terminal status write does not
// stage or execute them again. Entries expire after finishedMemory, by which
// time the cache has long caught up.
type finishedSet struct {
	mu  sync.Mutex
	at  map[types.UID]time.Time
	gen int
}

const finishedMemory = 2 * time.Minute

func (f *finishedSet) add(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil {
		f.at = map[types.UID]time.Time{}
	}
	now := time.Now()
	f.at[uid] = now
	if f.gen++; f.gen%1024 == 0 {
		for u, t := range f.at {
			if now.Sub(t) > finishedMemory {
				delete(f.at, u)
			}
		}
	}
}

func (f *finishedSet) has(uid types.UID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.at[uid]
	return ok
}

// NewOperationReconciler wires the operation controller to a manager.
func NewOperationReconciler(mgr ctrl.Manager, workers int) *OperationReconciler {
	return &OperationReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("arbiter"),
		Arbiter:   staging.NewArbiter(),
		// Targets are read from the API server, never the cache: a decision
		// on a stale read would only meet a 409.
		Executor: &execute.Executor{Reader: mgr.GetAPIReader(), Writer: client.WithFieldOwner(mgr.GetClient(), "arbiter")},
		Authz:    &authz.Checker{Client: mgr.GetClient(), Mapper: mgr.GetRESTMapper()},
		Workers:  workers,
	}
}

// SetupWithManager registers the controller and the arbiter loop.
func (r *OperationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.verdicts = make(chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation], 1024)
	r.wake = make(chan struct{}, 1)
	if err := mgr.Add(r); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&arbiterv1alpha1.ConflictResolutionOperation{}).
		WatchesRawSource(source.Channel(r.verdicts, &handler.TypedEnqueueRequestForObject[*arbiterv1alpha1.ConflictResolutionOperation]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(r)
}

// NeedLeaderElection: only the leader arbitrates.
func (r *OperationReconciler) NeedLeaderElection() bool { return true }

// Start recovers what a previous manager left in flight (executing operations
// first, then queued ones), then runs the arbiter loop until ctx ends.
func (r *OperationReconciler) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("arbiter")
	if err := r.recover(ctx); err != nil {
		return fmt.Errorf("recovering operations: %w", err)
	}
	r.ready.Store(true)
	log.Info("Arbiter ready")

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed, next := r.Arbiter.Tick(time.Now())
		for _, id := range changed {
			ns, name, _ := strings.Cut(id, "/")
			op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			select {
			case r.verdicts <- event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: op}:
			case <-ctx.Done():
				return nil
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// recover registers executing operations as holders of their targets and
// queued ones in their queues, before any new operation is staged, so that
// nothing is applied twice or overtaken after a restart.
func (r *OperationReconciler) recover(ctx context.Context) error {
	// Read in pages: among tens of thousands of zombies, one list would hold
	// them all, untrimmed, in memory at once.
	for page := ""; ; {
		var list arbiterv1alpha1.ConflictResolutionOperationList
		err := r.APIReader.List(ctx, &list, client.Limit(recoverPageSize), client.Continue(page))
		if apierrors.IsResourceExpired(err) && page != "" {
			// The snapshot was compacted away mid-read: read again from the
			// start; holding and requeueing again is harmless.
			page = ""
			continue
		}
		if err != nil {
			return err
		}
		for i := range list.Items {
			op := &list.Items[i]
			c := contender(op, op.Status.EffectivePriority, stagedAt(op))
			switch op.Status.Phase {
			case arbiterv1alpha1.PhaseExecuting:
				// Its grace period starts anew: a recovered execution resumes now,
				// and must not be preempted at once for the time the manager was down.
				r.Arbiter.Hold(c, time.Now(), durationOr(op.Spec.GracePeriod, time.Second))
			case arbiterv1alpha1.PhaseQueued:
				r.Arbiter.Requeue(c)
			}
		}
		if page = list.Continue; page == "" {
			return nil
		}
	}
}

// recoverPageSize is how many operations recovery reads per request.
const recoverPageSize = 500

func (r *OperationReconciler) nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Reconcile moves one operation along: stage, then act on the verdict.
func (r *OperationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		if apierrors.IsNotFound(err) {
			r.Arbiter.Forget(req.String())
			r.nudge()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	id := req.String()
	if r.finished.has(op.UID) && !op.Status.Phase.IsTerminal() {
		// A cached copy from before this manager recorded the outcome.
		return ctrl.Result{}, nil
	}
	// A finished operation needs nothing from recovery, which registers only
	// executing and queued ones: after a restart among thousands of zombies,
	// they must not spin on notReadyRetry until it is done.
	if op.Status.Phase.IsTerminal() {
		r.Arbiter.ForgetUID(id, string(op.UID))
		r.nudge()
		return ctrl.Result{}, r.releaseFinalizer(ctx, op)
	}
	if !r.ready.Load() {
		return ctrl.Result{RequeueAfter: notReadyRetry}, nil
	}
	if op.Status.Phase == arbiterv1alpha1.PhaseExecuting && !op.DeletionTimestamp.IsZero() {
		// Deleted while executing: execute stops before its next write and
		// rolls back, then the finalizer goes.
		return r.execute(ctx, op)
	}
	if !op.DeletionTimestamp.IsZero() {
		r.Arbiter.ForgetUID(id, string(op.UID))
		r.nudge()
		return ctrl.Result{}, r.releaseFinalizer(ctx, op)
	}
	if op.Status.Phase == arbiterv1alpha1.PhaseExecuting {
		return r.execute(ctx, op)
	}
	return r.stage(ctx, op)
}

// stage offers a pending or queued operation to the arbiter and acts on the verdict.
func (r *OperationReconciler) stage(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (ctrl.Result, error) {
	id, now := key(op), time.Now()
	deadline := op.CreationTimestamp.Add(durationOr(op.Spec.Timeout, 30*time.Second))

	if op.Annotations[arbiterv1alpha1.CancelAnnotation] == "true" {
		r.Arbiter.Forget(id)
		r.nudge()
		return ctrl.Result{}, r.finish(ctx, op, arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled,
			"Cancelled with the "+arbiterv1alpha1.CancelAnnotation+" annotation before it executed", nil)
	}
	if !now.Before(deadline) {
		r.Arbiter.Forget(id)
		r.nudge()
		return ctrl.Result{}, r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout,
			fmt.Sprintf("Not applied within its timeout of %s", durationOr(op.Spec.Timeout, 30*time.Second)), nil)
	}
	priority, err := r.effectivePriority(ctx, op)
	if err != nil {
		var cycle *parentCycleError
		if errors.As(err, &cycle) {
			return ctrl.Result{}, r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonInvalidParent, cycle.Error(), nil)
		}
		return ctrl.Result{}, err
	}

	// Only an operation its requester may carry out enters a batch: a
	// forbidden one must never win, nor make anyone else lose.
	if op.Status.Phase != arbiterv1alpha1.PhaseQueued {
		if err := r.Authz.Check(ctx, op); err != nil {
			var denied *authz.Denied
			switch {
			case errors.As(err, &denied):
				r.Arbiter.Forget(id)
				return ctrl.Result{}, r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonForbidden, denied.Message, nil)
			case meta.IsNoMatchError(err):
				r.Arbiter.Forget(id)
				return ctrl.Result{}, r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTargetNotFound,
					fmt.Sprintf("%v: the kind is not served by the API server", err), nil)
			}
			return ctrl.Result{}, err
		}
	}
	c := contender(op, priority, stagedAt(op))
	v := r.Arbiter.Offer(c, durationOr(op.Spec.Staging.Window, 100*time.Millisecond), now)
	r.nudge()
	if r.Meet != nil && v.Kind == staging.Wait && v.StagedAt.Equal(c.StagedAt) {
		r.Meet(op) // first staged now: arbiter meets its targets
	}
	winner := nameOf(v.Winner)
	switch v.Kind {
	case staging.Wait:
		return ctrl.Result{RequeueAfter: deadline.Sub(now)}, nil
	case staging.Reject:
		metrics.StagingBatchSize.Observe(float64(v.BatchSize))
		err := r.finish(ctx, op, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging,
			fmt.Sprintf("Lost staging to %s among %d operations on the same target", winner, v.BatchSize),
			func(s *arbiterv1alpha1.ConflictResolutionOperationStatus) {
				s.Winner, s.EffectivePriority, s.StagedAt = winner, priority, micro(v.StagedAt)
			})
		if err == nil {
			r.Arbiter.Settle(id)
		}
		return ctrl.Result{}, err
	case staging.Queue:
		orig := op.DeepCopy()
		s := &op.Status
		s.Phase, s.Reason, s.Winner, s.EffectivePriority, s.StagedAt = arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.ReasonQueued, winner, priority, micro(v.StagedAt)
		s.Message = fmt.Sprintf("Queued behind %s; it runs when the target is free, in priority order", winner)
		r.setStaged(op)
		if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording queued status: %w", err)
		}
		r.Arbiter.Settle(id)
		r.Recorder.Eventf(op, nil, corev1.EventTypeNormal, arbiterv1alpha1.ReasonQueued, "Stage", "Queued behind %s", winner)
		return ctrl.Result{RequeueAfter: deadline.Sub(now)}, nil
	}

	// Won. A multi-target operation can leave partial work: hold it with the
	// finalizer, so that deleting it rolls the work back first.
	if len(op.Spec.Targets) > 1 && controllerutil.AddFinalizer(op, arbiterv1alpha1.CleanupFinalizer) {
		if err := r.Client.Update(ctx, op); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the cleanup finalizer: %w", err)
		}
	}
	// Record Executing (so a restarted manager recovers it first), then apply.
	orig := op.DeepCopy()
	s := &op.Status
	started := metav1.NewMicroTime(now)
	s.Phase, s.Reason, s.Winner, s.EffectivePriority, s.StagedAt, s.StartedAt = arbiterv1alpha1.PhaseExecuting, arbiterv1alpha1.ReasonStaged, "", priority, micro(v.StagedAt), &started
	s.Message = fmt.Sprintf("Won staging among %d operations; applying", max(v.BatchSize, 1))
	r.setStaged(op)
	if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		// The win stands (the verdict is kept until settled): the next
		// reconcile, on a fresher copy, records it.
		return ctrl.Result{}, fmt.Errorf("recording executing status: %w", err)
	}
	if v.BatchSize > 0 {
		metrics.StagingBatchSize.Observe(float64(v.BatchSize))
	}
	r.Arbiter.Settle(id)
	r.Arbiter.Started(id, now, durationOr(op.Spec.GracePeriod, time.Second))
	r.Recorder.Eventf(op, nil, corev1.EventTypeNormal, arbiterv1alpha1.ReasonStaged, "Stage", "Won staging among %d operations", max(v.BatchSize, 1))
	return r.execute(ctx, op)
}

// execute applies an Executing operation and records the outcome.
func (r *OperationReconciler) execute(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (ctrl.Result, error) {
	id := key(op)
	started := time.Now()
	if op.Status.StartedAt != nil {
		started = op.Status.StartedAt.Time
	}
	grace := durationOr(op.Spec.GracePeriod, time.Second)
	// Normally already held; after a restart, recover() registered it.
	if !r.Arbiter.Hold(contender(op, op.Status.EffectivePriority, stagedAt(op)), started, grace) {
		// Another operation holds a target: never two executors at once.
		return ctrl.Result{RequeueAfter: notReadyRetry}, nil
	}
	deadline := op.CreationTimestamp.Add(durationOr(op.Spec.Timeout, 30*time.Second))

	var params []byte
	if op.Spec.Params != nil {
		params = op.Spec.Params.Raw
	}
	res, err := r.Executor.Execute(ctx, execute.Request{
		UID:       string(op.UID),
		Namespace: op.Namespace,
		Targets:   op.Spec.Targets,
		Params:    params,
		Backoff:   execute.BackoffFor(op.Spec.OCC),
		Stop: func() *execute.Failure {
			if by, ok := r.Arbiter.Preempted(id); ok {
				return &execute.Failure{Reason: arbiterv1alpha1.ReasonPreempted,
					Message: fmt.Sprintf("Preempted by %s, of higher priority, after its grace period of %s", nameOf(by), grace)}
			}
			current := &arbiterv1alpha1.ConflictResolutionOperation{}
			if err := r.Client.Get(ctx, client.ObjectKeyFromObject(op), current); err == nil && !current.DeletionTimestamp.IsZero() {
				return &execute.Failure{Reason: arbiterv1alpha1.ReasonCancelled, Message: "Deleted while executing"}
			}
			if !time.Now().Before(deadline) {
				return &execute.Failure{Reason: arbiterv1alpha1.ReasonTimeout,
					Message: fmt.Sprintf("Not applied within its timeout of %s", durationOr(op.Spec.Timeout, 30*time.Second))}
			}
			return nil
		},
		OnConflict: func() {
			metrics.OCCConflictsTotal.Inc()
		},
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("executing: %w", err)
	}
	if res.Attempts > 1 {
		r.Recorder.Eventf(op, nil, corev1.EventTypeNormal, "Retrying", "Execute",
			"Retried after %d conflicts with other writers", res.Attempts-1)
	}

	record := func(s *arbiterv1alpha1.ConflictResolutionOperationStatus) {
		s.Attempts += res.Attempts
		s.Targets = make([]arbiterv1alpha1.TargetStatus, 0, len(op.Spec.Targets))
		for i, t := range op.Spec.Targets {
			ts := arbiterv1alpha1.TargetStatus{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name}
			if i < len(res.Targets) {
				tr := res.Targets[i]
				ts.ResourceVersionBefore, ts.ResourceVersionAfter, ts.Applied = tr.ResourceVersionBefore, tr.ResourceVersionAfter, tr.Applied
			}
			s.Targets = append(s.Targets, ts)
		}
	}
	var ferr error
	switch f := res.Failure; {
	case f == nil:
		msg := fmt.Sprintf("Applied to %d target(s) in %d write attempt(s)", len(res.Targets), op.Status.Attempts+res.Attempts)
		ferr = r.finish(ctx, op, arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, msg, record)
	case f.Reason == arbiterv1alpha1.ReasonPreempted:
		by, _ := r.Arbiter.Preempted(id)
		by = nameOf(by)
		ferr = r.finish(ctx, op, arbiterv1alpha1.PhaseRejected, f.Reason, f.Message, func(s *arbiterv1alpha1.ConflictResolutionOperationStatus) {
			record(s)
			s.Winner = by
		})
	default:
		ferr = r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, f.Reason, f.Message, record)
	}
	if ferr != nil {
		return ctrl.Result{}, ferr
	}
	r.Arbiter.Forget(id)
	r.nudge()
	return ctrl.Result{}, r.releaseFinalizer(ctx, op)
}

// releaseFinalizer removes arbiter's finalizer once nothing is left to roll back.
func (r *OperationReconciler) releaseFinalizer(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) error {
	if !controllerutil.ContainsFinalizer(op, arbiterv1alpha1.CleanupFinalizer) {
		return nil
	}
	orig := op.DeepCopy()
	controllerutil.RemoveFinalizer(op, arbiterv1alpha1.CleanupFinalizer)
	if err := r.Client.Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("removing the cleanup finalizer: %w", err))
	}
	return nil
}

// finish records a terminal phase in one status write, with its condition,
// event and metrics.
func (r *OperationReconciler) finish(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation,
	phase arbiterv1alpha1.OperationPhase, reason, message string, mutate func(*arbiterv1alpha1.ConflictResolutionOperationStatus)) error {
	orig := op.DeepCopy()
	s := &op.Status
	now := metav1.NewMicroTime(time.Now())
	s.Phase, s.Reason, s.Message, s.CompletedAt = phase, reason, message, &now
	if mutate != nil {
		mutate(s)
	}
	if s.StagedAt != nil {
		r.setStaged(op)
	}
	condType := map[arbiterv1alpha1.OperationPhase]string{
		arbiterv1alpha1.PhaseSucceeded: arbiterv1alpha1.OperationSucceeded,
		arbiterv1alpha1.PhaseRejected:  arbiterv1alpha1.OperationRejected,
		arbiterv1alpha1.PhaseFailed:    arbiterv1alpha1.OperationFailed,
	}[phase]
	if condType != "" {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue,
			Reason: reason, Message: message, ObservedGeneration: op.Generation})
	}
	s.ObservedGeneration = op.Generation
	if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("recording %s status: %w", phase, err)
	}
	r.finished.add(op.UID)

	eventType := corev1.EventTypeNormal
	if phase == arbiterv1alpha1.PhaseFailed {
		eventType = corev1.EventTypeWarning
	}
	// Events say the transition (Succeeded, Rejected, Preempted, Failed,
	// Cancelled); the note carries the reason.
	eventReason := string(phase)
	if reason == arbiterv1alpha1.ReasonPreempted {
		eventReason = reason
	}
	r.Recorder.Eventf(op, nil, eventType, eventReason, string(phase), "%s: %s", reason, message)
	metrics.OperationsTotal.WithLabelValues(op.Namespace, op.Spec.Function, string(phase), reason).Inc()
	metrics.OperationDuration.Observe(time.Since(op.CreationTimestamp.Time).Seconds())
	ctrl.LoggerFrom(ctx).V(1).Info("Operation finished", "phase", phase, "reason", reason, "message", message)
	return nil
}

func (r *OperationReconciler) setStaged(op *arbiterv1alpha1.ConflictResolutionOperation) {
	meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{Type: arbiterv1alpha1.OperationStaged, Status: metav1.ConditionTrue,
		Reason: arbiterv1alpha1.ReasonStaged, Message: fmt.Sprintf("Staged with effective priority %d", op.Status.EffectivePriority),
		ObservedGeneration: op.Generation})
}

// parentCycleError is a parentRef chain that leads back to itself.
type parentCycleError struct{ chain []string }

func (e *parentCycleError) Error() string {
	return fmt.Sprintf("spec.parentRef forms a cycle: %v", e.chain)
}

// effectivePriority is the maximum of the operation's priority and its
// parent's effective priority, following parentRef up the chain. A missing
// parent adds nothing (it may have been cleaned up).
func (r *OperationReconciler) effectivePriority(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (int32, error) {
	priority := op.Spec.Priority
	chain := []string{op.Name}
	seen := map[string]bool{op.Name: true}
	for cur := op; cur.Spec.ParentRef != nil; {
		name := cur.Spec.ParentRef.Name
		chain = append(chain, name)
		if seen[name] {
			return 0, &parentCycleError{chain: chain}
		}
		seen[name] = true
		parent := &arbiterv1alpha1.ConflictResolutionOperation{}
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: op.Namespace, Name: name}, parent); err != nil {
			if apierrors.IsNotFound(err) {
				break
			}
			return 0, fmt.Errorf("reading parent %s: %w", name, err)
		}
		priority = max(priority, parent.Spec.Priority)
		cur = parent
	}
	return priority, nil
}

// contender is the operation as the arbiter sees it.
func contender(op *arbiterv1alpha1.ConflictResolutionOperation, priority int32, staged time.Time) staging.Contender {
	c := staging.Contender{
		ID:       key(op),
		UID:      string(op.UID),
		Priority: priority,
		StagedAt: staged,
		Queue:    op.Spec.Staging.OnConflict == arbiterv1alpha1.ConflictPolicyQueue,
	}
	for _, t := range op.Spec.Targets {
		gv, _ := schema.ParseGroupVersion(t.APIVersion)
		c.Targets = append(c.Targets, staging.Key{Group: gv.Group, Kind: t.Kind, Namespace: op.Namespace, Name: t.Name})
	}
	return c
}

// stagedAt is when the operation was first staged: recorded in status once
// it lost or won, else now.
func stagedAt(op *arbiterv1alpha1.ConflictResolutionOperation) time.Time {
	if op.Status.StagedAt != nil {
		return op.Status.StagedAt.Time
	}
	return time.Now()
}

func key(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	return types.NamespacedName{Namespace: op.Namespace, Name: op.Name}.String()
}

// nameOf is the name in a namespace/name key: winners and preemptors are
// always in the operation's own namespace.
func nameOf(id string) string {
	_, name, _ := strings.Cut(id, "/")
	return name
}

func micro(t time.Time) *metav1.MicroTime {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewMicroTime(t)
	return &m
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}
