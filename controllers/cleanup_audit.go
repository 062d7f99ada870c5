package controllers

import (
	"time"

	"k8s.io/klog/v2"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
)

// Audit records: one info line per operation cleanup removed (or, under
// dryRun, would remove), written by remove once the API server confirmed
// the delete, so that an auditor can tell what was decided after the object
// is gone. The message and keys never vary, for a log pipeline to index;
// the README lists them.
const (
	// AuditLoggerName is the logger name of every audit record.
	AuditLoggerName = "cleanup.audit"
	// auditRemoved is the message of a removal's record.
	auditRemoved = "Operation removed by cleanup"
	// auditWouldRemove is the message of a dry run's record.
	auditWouldRemove = "Operation would be removed by cleanup (dry run)"
)

// policyRef names the policy that removed an operation in its audit record.
type policyRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// refOf names a policy; the operator-wide default is named
// --default-cleanup-strategy.
func refOf(p *arbiterv1alpha1.CleanupPolicy) policyRef {
	return policyRef{Kind: cleanup.Kind(p), Name: p.Name}
}

// stamp renders a time for an audit record: RFC 3339 in UTC, "" when unset.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// audit writes the audit record of op, removed by gov at at (or reported
// then, under dryRun) for the reason why.
func (r *CleanupReconciler) audit(gov *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation,
	why string, at time.Time) {
	requester := ""
	if op.Spec.RequestedBy != nil {
		requester = op.Spec.RequestedBy.Username
	}
	completedAt := time.Time{}
	if op.Status.CompletedAt != nil {
		completedAt = op.Status.CompletedAt.Time
	}
	msg := auditRemoved
	if gov.Spec.DryRun {
		msg = auditWouldRemove
	}
	r.Audit.Info(msg,
		logKeyOperation, klog.KObj(op),
		"uid", string(op.UID),
		"function", op.Spec.Function,
		"requester", requester,
		"phase", string(op.Status.Phase),
		"reason", op.Status.Reason,
		logKeyWinner, op.Status.Winner,
		"priority", op.Spec.Priority,
		logKeyPriority, op.Status.EffectivePriority,
		"createdAt", stamp(op.CreationTimestamp.Time),
		"completedAt", stamp(completedAt),
		"removedAt", stamp(at),
		logKeyTargets, targetRefs(op),
		"policy", refOf(gov),
		"strategy", string(gov.Spec.Strategy),
		"why", why,
		"dryRun", gov.Spec.DryRun,
	)
}
