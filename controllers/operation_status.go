package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/arbiter-dev/arbiter/internal/metrics"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
)

// The status transitions of an operation, as pure functions over the
// object: the reconciler decides which one applies and writes it once.

// staged is what arbitration decided about an operation, recorded by every
// transition out of staging.
type staged struct {
	priority int32
	at       time.Time
	// note says why a parentRef lent no priority, when it did not.
	note string
}

// markQueued records an operation that lost a Queue batch to winner.
//
// An operation queued again, when a later batch of its target goes to
// another, keeps the winner and message of the batch that first queued it:
// naming each new winner would rewrite every waiting operation whenever
// the target changes hands, N²/2 writes for a queue of N.
func markQueued(op *arbiterv1alpha1.ConflictResolutionOperation, st staged, winner string) {
	s := &op.Status
	if s.Phase != arbiterv1alpha1.PhaseQueued {
		s.Winner = winner
		s.Message = fmt.Sprintf("Queued after losing a batch to %s; it runs when the target is free, in priority order", winner)
	}
	s.Phase, s.Reason = arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.ReasonQueued
	s.EffectivePriority, s.StagedAt = st.priority, micro(st.at)
	setStaged(op, st.note)
}

// markExecuting records an operation that won its batch of batchSize, from now.
func markExecuting(op *arbiterv1alpha1.ConflictResolutionOperation, st staged, batchSize int, now time.Time) {
	s := &op.Status
	started := metav1.NewMicroTime(now)
	s.Phase, s.Reason, s.Winner = arbiterv1alpha1.PhaseExecuting, arbiterv1alpha1.ReasonStaged, ""
	s.EffectivePriority, s.StagedAt, s.StartedAt = st.priority, micro(st.at), &started
	s.Message = fmt.Sprintf("Won staging among %d operations; applying", max(batchSize, 1))
	setStaged(op, st.note)
}

// markRejected records an operation that lost a batch to winner.
// Its terminal phase is written with it, by markFinished.
func markRejected(op *arbiterv1alpha1.ConflictResolutionOperation, st staged, winner string) {
	s := &op.Status
	s.Winner, s.EffectivePriority, s.StagedAt = winner, st.priority, micro(st.at)
	setStaged(op, st.note)
}

// markFinished records a terminal phase, with its condition, at now.
func markFinished(op *arbiterv1alpha1.ConflictResolutionOperation, phase arbiterv1alpha1.OperationPhase, reason, message string, now time.Time) {
	s := &op.Status
	completed := metav1.NewMicroTime(now)
	s.Phase, s.Reason, s.Message, s.CompletedAt = phase, reason, message, &completed
	condType := map[arbiterv1alpha1.OperationPhase]string{
		arbiterv1alpha1.PhaseSucceeded: arbiterv1alpha1.OperationSucceeded,
		arbiterv1alpha1.PhaseRejected:  arbiterv1alpha1.OperationRejected,
		arbiterv1alpha1.PhaseFailed:    arbiterv1alpha1.OperationFailed,
	}[phase]
	if condType != "" {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue,
			Reason: reason, Message: message, ObservedGeneration: op.Generation})
	}
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: arbiterv1alpha1.OperationFinished, Status: metav1.ConditionTrue,
		Reason: string(phase), Message: message, ObservedGeneration: op.Generation})
	s.ObservedGeneration = op.Generation
}

// recordTargets records what an execution did on each target.
func recordTargets(op *arbiterv1alpha1.ConflictResolutionOperation, res execute.Result) {
	s := &op.Status
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

// setStaged sets the Staged condition, with the note on parentRef if any.
func setStaged(op *arbiterv1alpha1.ConflictResolutionOperation, note string) {
	msg := fmt.Sprintf("Staged with effective priority %d", op.Status.EffectivePriority)
	if note != "" {
		msg += "; " + note
	}
	meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{Type: arbiterv1alpha1.OperationStaged, Status: metav1.ConditionTrue,
		Reason: arbiterv1alpha1.ReasonStaged, Message: msg, ObservedGeneration: op.Generation})
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
	phase arbiterv1alpha1.OperationPhase, reason, message string, mutate func(*arbiterv1alpha1.ConflictResolutionOperation)) error {
	now := r.now()
	err := r.patchStatus(ctx, op, func(op *arbiterv1alpha1.ConflictResolutionOperation) {
		if mutate != nil {
			mutate(op)
		}
		markFinished(op, phase, reason, message, now)
	})
	if err != nil {
		return fmt.Errorf("recording %s status: %w", phase, err)
	}
	r.finished.add(op.UID, now)

	if eventType, eventReason, ok := outcomeEvent(phase, reason); ok && r.events.allow(op.Namespace, string(phase)+"/"+reason, now) {
		r.Recorder.Eventf(op, nil, eventType, eventReason, string(phase), "%s: %s", reason, message)
	}
	metrics.OperationsTotal.WithLabelValues(op.Namespace, metrics.FunctionLabel(op.Namespace, op.Spec.Function), string(phase), reason).Inc()
	metrics.OperationDuration.Observe(now.Sub(op.CreationTimestamp.Time).Seconds())
	logOutcome(ctx, op)
	return nil
}

// outcomeEvent is the event an outcome is worth, if any. Every event is a
// write the API server serves: an outcome that status and conditions tell
// in full (Succeeded, or Rejected by a batch's winner, whose event names the
// batch) has none. What a human must look at has one: a failure (Warning),
// a preemption, a cancellation.
func outcomeEvent(phase arbiterv1alpha1.OperationPhase, reason string) (eventType, eventReason string, ok bool) {
	switch {
	case phase == arbiterv1alpha1.PhaseFailed:
		return corev1.EventTypeWarning, string(phase), true
	case reason == arbiterv1alpha1.ReasonPreempted:
		return corev1.EventTypeNormal, reason, true
	case phase == arbiterv1alpha1.PhaseCancelled:
		return corev1.EventTypeNormal, string(phase), true
	}
	return "", "", false
}

// patchStatus applies mutate to op's status and writes it in one merge
// patch carrying the resourceVersion op was read at: a decision made on a
// stale copy meets a 409 instead of overwriting a newer outcome.
//
// The API server answers with the object's metadata alone
// (as=PartialObjectMetadata): the status it stored is op's own, since the
// patch applied to the very version op was read at, so encoding the whole
// object back and decoding it here would be work for nothing. op takes the
// new metadata (resourceVersion, managedFields). A mutation that changes
// nothing writes nothing.
func (r *OperationReconciler) patchStatus(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation,
	mutate func(*arbiterv1alpha1.ConflictResolutionOperation)) error {
	orig := op.Status.DeepCopy()
	mutate(op)
	data, err := statusPatch(orig, op)
	if err != nil || data == nil {
		return err
	}
	stored := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: op.Name}}
	stored.SetGroupVersionKind(arbiterv1alpha1.GroupVersion.WithKind("ConflictResolutionOperation"))
	if err := r.Client.Status().Patch(ctx, stored, client.RawPatch(types.MergePatchType, data)); err != nil {
		return err
	}
	op.ObjectMeta = stored.ObjectMeta
	return nil
}

// statusPatch is the merge patch from status orig to op's, conditional on
// op's resourceVersion, or nil when they encode alike (times as stored, to
// the microsecond). The status subresource takes nothing else, so only the
// statuses are encoded and compared, not the spec and metadata (a live
// operation's last-applied annotation copies the whole manifest).
func statusPatch(orig *arbiterv1alpha1.ConflictResolutionOperationStatus, op *arbiterv1alpha1.ConflictResolutionOperation) ([]byte, error) {
	before, err := json.Marshal(orig)
	if err != nil {
		return nil, err
	}
	after, err := json.Marshal(&op.Status)
	if err != nil || bytes.Equal(before, after) {
		return nil, err
	}
	status, err := jsonpatch.CreateMergePatch(before, after)
	if err != nil {
		return nil, err
	}
	patch := statusPatchDocument{Status: status}
	patch.Metadata.ResourceVersion = op.ResourceVersion
	return json.Marshal(&patch)
}

// statusPatchDocument is a status patch: the resourceVersion it is
// conditional on, and the status merge patch.
type statusPatchDocument struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Status json.RawMessage `json:"status"`
}

func micro(t time.Time) *metav1.MicroTime {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewMicroTime(t)
	return &m
}
