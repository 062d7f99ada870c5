package controllers

import (
	"context"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/staging"
)

// Decision logs: one line when a batch decides an operation wins or queues,
// and one when it reaches its outcome, each written only once the status
// that records it is stored, so a retried write never logs twice. A loser's
// decision is its outcome: its one line names the winner and the batch.
//
// What a human must look at (a failure, a preemption, a cancellation) is at
// info, the manager's default level; a routine decision or success is at
// V(1), which --zap-log-level=debug turns on. The keys are the same on every
// line, so that one query finds an operation's whole story.
const (
	// logKeyOperation names the operation, as klog.KObj renders it.
	logKeyOperation = "operation"
	// logKeyTargets lists the targets; on an outcome, with the
	// resourceVersions read before and written by the operation.
	logKeyTargets = "targets"
	// logKeyBatchSize is how many operations were decided together.
	logKeyBatchSize = "batchSize"
	// logKeyWinner is the operation that beat this one, or that it queues behind.
	logKeyWinner = "winner"
	// logKeyPriority is the effective priority it contended with.
	logKeyPriority = "effectivePriority"
)

// targetRef is a target as a decision line names it.
type targetRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
}

func targetRefs(op *arbiterv1alpha1.ConflictResolutionOperation) []targetRef {
	refs := make([]targetRef, 0, len(op.Spec.Targets))
	for _, t := range op.Spec.Targets {
		refs = append(refs, targetRef{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name})
	}
	return refs
}

// logDecision records that the operation won its batch or queues behind its
// winner, once the status saying so is stored.
func logDecision(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation, v staging.Verdict) {
	msg, kv := "Operation won staging", []any{}
	if v.Kind == staging.Queue {
		msg, kv = "Operation queued", []any{logKeyWinner, v.Winner.Name}
	}
	ctrl.LoggerFrom(ctx).V(1).Info(msg, append([]any{logKeyOperation, klog.KObj(op), logKeyTargets, targetRefs(op),
		logKeyBatchSize, v.BatchSize, logKeyPriority, v.Priority, "stagedAt", v.StagedAt}, kv...)...)
}

// withBatch adds the batch size to the lines logged with ctx: a loser's
// outcome line names its batch.
func withBatch(ctx context.Context, v staging.Verdict) context.Context {
	return ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues(logKeyBatchSize, v.BatchSize))
}

// logOutcome records an operation's terminal status, once stored.
func logOutcome(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) {
	s := &op.Status
	targets := any(targetRefs(op))
	if len(s.Targets) > 0 {
		targets = s.Targets // with resourceVersionBefore/After and applied
	}
	log := ctrl.LoggerFrom(ctx)
	if s.Phase == arbiterv1alpha1.PhaseSucceeded || s.Reason == arbiterv1alpha1.ReasonLostStaging {
		log = log.V(1)
	}
	kv := []any{logKeyOperation, klog.KObj(op), logKeyTargets, targets,
		"phase", s.Phase, "reason", s.Reason, "attempts", s.Attempts, logKeyPriority, s.EffectivePriority, "message", s.Message}
	if s.Winner != "" {
		kv = append(kv, logKeyWinner, s.Winner)
	}
	log.Info("Operation finished", kv...)
}
