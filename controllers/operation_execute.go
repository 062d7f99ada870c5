package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
	"github.com/arbiter-dev/arbiter/internal/metrics"
)

// execute applies an Executing operation, or goes on with it after a
// backoff, and records the outcome.
func (r *OperationReconciler) execute(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (ctrl.Result, error) {
	id := key(op)
	started := r.now()
	if op.Status.StartedAt != nil {
		started = op.Status.StartedAt.Time
	}
	grace := op.Spec.GracePeriodOrDefault()
	// Normally already held; after a restart, recover() registered it.
	if !r.Arbiter.Hold(contender(op, op.Status.EffectivePriority, r.stagedAt(op)), started, grace) {
		// Another operation holds a target: never two executors at once.
		return ctrl.Result{RequeueAfter: notReadyRetry}, nil
	}
	var params []byte
	if op.Spec.Params != nil {
		params = op.Spec.Params.Raw
	}
	res, err := r.Executor.Execute(ctx, execute.Request{
		UID:        string(op.UID),
		Namespace:  op.Namespace,
		Targets:    op.Spec.Targets,
		Params:     params,
		Backoff:    execute.BackoffFor(op.Spec.OCC),
		Stop:       func() (*execute.Failure, error) { return r.stopReason(ctx, op) },
		OnConflict: metrics.OCCConflictsTotal.Inc,
	}, r.executions.of(op))
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("executing: %w", err)
	}
	if !res.Done() {
		// Backing off after a 409: called again then, or sooner by a
		// preemption or a deletion; never after the deadline.
		now := r.now()
		ctrl.LoggerFrom(ctx).V(1).Info("Target write conflicted; backing off", logKeyOperation, klog.KObj(op),
			"attempts", op.Status.Attempts+res.Attempts, "retryAt", res.RetryAt)
		return ctrl.Result{RequeueAfter: min(max(res.RetryAt.Sub(now), time.Millisecond), untilDeadline(op, now))}, nil
	}
	if err := r.recordOutcome(ctx, op, res); err != nil {
		return ctrl.Result{}, err
	}
	r.executions.drop(client.ObjectKeyFromObject(op), op.UID)
	r.Arbiter.Forget(id)
	return ctrl.Result{}, r.releaseFinalizer(ctx, op)
}

// stopReason says why an execution must stop before its next write:
// preempted, deleted, past its deadline, or its requester no longer
// allowed. An error means the requester's access could not be checked:
// the write waits for an answer.
func (r *OperationReconciler) stopReason(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (*execute.Failure, error) {
	if by, ok := r.Arbiter.Preempted(key(op)); ok {
		return &execute.Failure{Reason: arbiterv1alpha1.ReasonPreempted,
			Message: fmt.Sprintf("Preempted by %s, of higher priority, after its grace period of %s", by.Name, op.Spec.GracePeriodOrDefault())}, nil
	}
	current := &arbiterv1alpha1.ConflictResolutionOperation{}
	switch err := r.Client.Get(ctx, client.ObjectKeyFromObject(op), current); {
	case err == nil && !current.DeletionTimestamp.IsZero():
		return &execute.Failure{Reason: arbiterv1alpha1.ReasonCancelled, Message: "Deleted while executing"}, nil
	case err != nil && !apierrors.IsNotFound(err):
		// The cache answers; an error here is rare, and the deadline and
		// preemption checks still hold: go on, but say so.
		ctrl.LoggerFrom(ctx).Error(err, "Could not tell whether the operation was deleted; going on", logKeyOperation, klog.KObj(op))
	}
	if !r.now().Before(op.Deadline()) {
		return &execute.Failure{Reason: arbiterv1alpha1.ReasonTimeout,
			Message: fmt.Sprintf("Not applied within its timeout of %s", op.Spec.TimeoutOrDefault())}, nil
	}
	// The requester may have lost the right since it was checked: an
	// execution that backs off for long must not write past a revocation.
	// Answers are reused for the checker's TTL, so this costs a review per
	// requester and namespace each TTL at most. Unanswered, the write waits:
	// going on would let a revocation pass while the reviews fail. A kind
	// no longer served cannot be asked about, and will not be: the target
	// is gone, as its read would say.
	f, err := r.checkAccess(ctx, op)
	if meta.IsNoMatchError(err) {
		return &execute.Failure{Reason: arbiterv1alpha1.ReasonTargetNotFound, Message: err.Error()}, nil
	}
	return f, err
}

// recordOutcome writes an execution's terminal status.
func (r *OperationReconciler) recordOutcome(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation, res execute.Result) error {
	record := func(op *arbiterv1alpha1.ConflictResolutionOperation) { recordTargets(op, res) }
	switch f := res.Failure; {
	case f == nil:
		msg := fmt.Sprintf("Applied to %d target(s) in %d write attempt(s)", len(res.Targets), op.Status.Attempts+res.Attempts)
		return r.finish(ctx, op, arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, msg, record)
	case f.Reason == arbiterv1alpha1.ReasonPreempted:
		by, _ := r.Arbiter.Preempted(key(op))
		return r.finish(ctx, op, arbiterv1alpha1.PhaseRejected, f.Reason, f.Message, func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			record(op)
			op.Status.Winner = by.Name
		})
	}
	return r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, res.Failure.Reason, res.Failure.Message, record)
}
