package v1alpha1

// Condition types of ConflictResolutionOperation.
const (
	// OperationStaged is True once the operation has been placed in a
	// staging batch and had its effective priority computed.
	OperationStaged = "Staged"
	// OperationSucceeded is True once the mutation is applied to every
	// target. `kubectl wait --for=condition=Succeeded` waits for it.
	OperationSucceeded = "Succeeded"
	// OperationRejected is True once the operation lost a batch or was preempted.
	OperationRejected = "Rejected"
	// OperationFailed is True once the operation could not be applied.
	OperationFailed = "Failed"
	// OperationFinished is True on every terminal operation, whatever the
	// outcome; its reason is the phase. `kubectl wait --for=condition=Finished`
	// waits for any outcome.
	OperationFinished = "Finished"
)

// Reasons of ConflictResolutionOperation, used in status.reason and in
// condition reasons.
const (
	// ReasonStaged: placed in a staging batch.
	ReasonStaged = "Staged"
	// ReasonWaitingForTarget: another operation is executing on a target.
	ReasonWaitingForTarget = "WaitingForTarget"
	// ReasonQueued: lost a batch with onConflict Queue and waits its turn.
	ReasonQueued = "Queued"
	// ReasonApplied: the mutation is applied to every target.
	ReasonApplied = "Applied"
	// ReasonLostStaging: another operation won the staging batch.
	ReasonLostStaging = "LostStaging"
	// ReasonPreempted: a higher-priority operation preempted this one after
	// its grace period; partial work was rolled back.
	ReasonPreempted = "Preempted"
	// ReasonConflictRetriesExhausted: every attempt met a 409 Conflict.
	ReasonConflictRetriesExhausted = "ConflictRetriesExhausted"
	// ReasonTargetNotFound: a target object or its kind does not exist.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonInvalidMutation: the mutation could not be evaluated or applied
	// (CEL error, missing path, false test op, invalid result).
	ReasonInvalidMutation = "InvalidMutation"
	// ReasonMutationTooLarge: the mutation would produce an object, or copy
	// or return values, larger than arbiter's limit of 1.5 MiB (the API
	// server's request limit); nothing was written.
	ReasonMutationTooLarge = "MutationTooLarge"
	// ReasonForbidden: the requester may not get or update a target.
	ReasonForbidden = "Forbidden"
	// ReasonTimeout: not terminal by creationTimestamp + timeout.
	ReasonTimeout = "Timeout"
	// ReasonRolledBack: a later target failed and the targets already
	// written were restored.
	ReasonRolledBack = "RolledBack"
	// ReasonRollbackFailed: a later target failed and restoring an earlier
	// one failed too; a human must look at the targets named in the message.
	ReasonRollbackFailed = "RollbackFailed"
	// ReasonCancelled: cancelled with the arbiter.dev/cancel annotation.
	ReasonCancelled = "Cancelled"
	// ReasonClusterScopedTarget: a target's kind is cluster-scoped; an
	// operation may change objects of its own namespace only.
	ReasonClusterScopedTarget = "ClusterScopedTarget"
	// ReasonInvalidParent: parentRef forms a cycle, or a chain of more than
	// 32 parents.
	ReasonInvalidParent = "InvalidParent"
)

// Condition types of CleanupPolicy and ClusterCleanupPolicy.
const (
	// PolicyReady is True once the policy has been evaluated.
	PolicyReady = "Ready"
	// PolicyHealthy is True while every health threshold is met.
	PolicyHealthy = "Healthy"
	// PolicyOverlapping is True when an older policy selects some of the
	// same operations and so governs them instead; the message names it.
	PolicyOverlapping = "Overlapping"
)

// Reasons of CleanupPolicy and ClusterCleanupPolicy conditions.
const (
	// ReasonEvaluated: the policy was evaluated.
	ReasonEvaluated = "Evaluated"
	// ReasonThresholdsMet: every health threshold is met.
	ReasonThresholdsMet = "ThresholdsMet"
	// ReasonTooManyZombies: more zombies than health.maxZombies.
	ReasonTooManyZombies = "TooManyZombies"
	// ReasonZombieTooOld: a zombie is older than health.maxZombieAge.
	ReasonZombieTooOld = "ZombieTooOld"
	// ReasonAwaitingAcknowledgement: a Failed/RollbackFailed zombie waits
	// for a human to check its targets and annotate it
	// arbiter.dev/acknowledged=true.
	ReasonAwaitingAcknowledgement = "AwaitingAcknowledgement"
	// ReasonCleanupFailing: the cleanup failure rate exceeds health.maxFailureRatePercent.
	ReasonCleanupFailing = "CleanupFailing"
	// ReasonOverlapsOlderPolicy: an older policy governs some operations this one selects.
	ReasonOverlapsOlderPolicy = "OverlapsOlderPolicy"
	// ReasonNoOverlap: no older policy selects the same operations.
	ReasonNoOverlap = "NoOverlap"
	// ReasonInvalidSelector: spec.selector (or a ClusterCleanupPolicy's
	// spec.namespaceSelector) does not parse, so the policy selects no
	// operation.
	ReasonInvalidSelector = "InvalidSelector"
)
