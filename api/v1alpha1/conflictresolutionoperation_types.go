package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Priorities with names, for manifests and code that want to say what they mean.
const (
	PriorityCritical   int32 = 10
	PriorityHigh       int32 = 8
	PriorityNormal     int32 = 5
	PriorityLow        int32 = 2
	PriorityBackground int32 = 1
)

// Annotations arbiter reads or writes.
const (
	// CancelAnnotation set to "true" on an operation cancels it if it has not
	// started executing.
	CancelAnnotation = "arbiter.dev/cancel"

	// AppliedAnnotation on a target object lists the UIDs of the operations
	// most recently applied to it. It is written by the same update that
	// applies an operation, so a restarted manager can tell whether an
	// operation it was executing already took effect.
	AppliedAnnotation = "arbiter.dev/applied"

	// KeepAnnotation set to "true" on a finished operation keeps it: no
	// CleanupPolicy, historyLimit or default strategy removes it.
	KeepAnnotation = "arbiter.dev/keep"

	// AcknowledgedAnnotation set to "true" on a Failed/RollbackFailed
	// operation releases it to cleanup: until a human has checked the targets
	// its message names and said so, it is never removed automatically.
	AcknowledgedAnnotation = "arbiter.dev/acknowledged"

	// CleanupFinalizer holds an operation that has partial work or waiters
	// until arbiter has rolled the work back and woken the waiters.
	CleanupFinalizer = "arbiter.dev/cleanup"
)

// The API server runs every CEL rule of the CRD on every write, status
// writes included, which never change spec. The rules on spec fields begin
// with `oldSelf.hasValue() ||` (optionalOldSelf): since spec is immutable, a
// value that was there before was checked when the operation was created,
// and a status write skips the rule instead of re-running its regular
// expressions and comparisons.

// ConflictResolutionOperationSpec is a change request against one or more
// target objects in the operation's namespace. It is immutable once created.
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || !has(self.staging) || !has(self.staging.window) || !has(self.timeout) || !self.staging.window.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || !self.timeout.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.staging.window) < duration(self.timeout)",message="must be shorter than spec.timeout: the operation would time out before its batch closes",fieldPath=".staging.window",optionalOldSelf=true
type ConflictResolutionOperationSpec struct {
	// function names the change for audit, events and metrics, for example
	// "update-account". It must be a DNS label.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Function string `json:"function"`

	// priority decides who wins when operations contend for a target: 1 to 10,
	// higher wins. Named levels: CRITICAL=10, HIGH=8, NORMAL=5, LOW=2,
	// BACKGROUND=1. Defaults to 5.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Priority int32 `json:"priority,omitempty"`

	// parentRef names another operation in the same namespace. The effective
	// priority is the maximum of this operation's priority and the parent's
	// effective priority, so a batch's children inherit its urgency. Only a
	// parent with the same requester that has not finished lends its
	// priority; any other is ignored, and the Staged condition says why.
	// +optional
	ParentRef *OperationReference `json:"parentRef,omitempty"`

	// params is a free-form object made available to CEL expressions as
	// `params`.
	// +optional
	// +kubebuilder:validation:Type=object
	Params *apiextensionsv1.JSON `json:"params,omitempty"`

	// targets are the objects to change, each with exactly one mutation. All
	// are in the operation's namespace. The operation applies to all of them
	// or to none.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (self.all(t, self.exists_one(u, u.apiVersion == t.apiVersion && u.kind == t.kind && u.name == t.name)))",message="each target may appear only once",optionalOldSelf=true
	Targets []Target `json:"targets"`

	// staging controls how this operation is arbitrated against others that
	// arrive for the same target.
	// +optional
	// +kubebuilder:default={}
	Staging StagingSpec `json:"staging,omitzero"`

	// occ controls the optimistic-concurrency retries when a target write
	// meets a 409 Conflict.
	// +optional
	// +kubebuilder:default={}
	OCC OCCSpec `json:"occ,omitzero"`

	// gracePeriod is how long an executing operation is protected from
	// preemption by a higher-priority operation. Defaults to 1s; at most 5m.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) <= duration('5m'))",message="must be at most 5m",optionalOldSelf=true
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`

	// timeout bounds the operation's life: an operation that is not terminal
	// by creationTimestamp + timeout ends Failed with reason Timeout.
	// Defaults to 30s; at most 24h.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) > duration('0s') && duration(self) <= duration('24h')))",message="must be greater than 0s and at most 24h",optionalOldSelf=true
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// requestedBy is the identity of the user who created the operation. It
	// is stamped at admission from the request's user info; a value written
	// by the user is overwritten. arbiter acts on targets only as far as this
	// identity may.
	// +optional
	RequestedBy *RequesterInfo `json:"requestedBy,omitempty"`
}

// OperationReference names another ConflictResolutionOperation in the same
// namespace.
type OperationReference struct {
	// name of the referenced operation.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Target is one object an operation changes and the mutation to apply to it.
// Exactly one of jsonPatch, mergePatch or expression is set.
// +kubebuilder:validation:XValidation:rule="(has(self.jsonPatch) ? 1 : 0) + (has(self.mergePatch) ? 1 : 0) + (has(self.expression) ? 1 : 0) == 1",message="exactly one of jsonPatch, mergePatch or expression must be set"
type Target struct {
	// apiVersion of the target object, for example "bank.example.com/v1" or "v1".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$`
	APIVersion string `json:"apiVersion"`

	// kind of the target object, for example "Account" or "ConfigMap".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Z][A-Za-z0-9]*$`
	Kind string `json:"kind"`

	// name of the target object in the operation's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`

	// jsonPatch is an RFC 6902 JSON Patch applied to the target. `test`
	// operations act as preconditions: when one fails the operation fails and
	// the target is left untouched.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	JSONPatch []JSONPatchOperation `json:"jsonPatch,omitempty"`

	// mergePatch is an RFC 7386 JSON Merge Patch applied to the target.
	// +optional
	// +kubebuilder:validation:Type=object
	MergePatch *apiextensionsv1.JSON `json:"mergePatch,omitempty"`

	// expression is a CEL expression that returns a list of JSON Patch
	// operations, written exactly as a MutatingAdmissionPolicy JSONPatch
	// mutation, for example
	// `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`.
	// The variables are `object` (the target as read) and `params`.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Expression string `json:"expression,omitempty"`
}

// JSONPatchOp is an RFC 6902 operation name.
// +kubebuilder:validation:Enum=add;remove;replace;move;copy;test
type JSONPatchOp string

// The RFC 6902 operations.
const (
	JSONPatchOpAdd     JSONPatchOp = "add"
	JSONPatchOpRemove  JSONPatchOp = "remove"
	JSONPatchOpReplace JSONPatchOp = "replace"
	JSONPatchOpMove    JSONPatchOp = "move"
	JSONPatchOpCopy    JSONPatchOp = "copy"
	JSONPatchOpTest    JSONPatchOp = "test"
)

// JSONPatchOperation is one RFC 6902 operation.
// +kubebuilder:validation:XValidation:rule="self.op in ['move', 'copy'] ? has(self.from) : !has(self.from)",message="from is required for move and copy, and not allowed otherwise"
// +kubebuilder:validation:XValidation:rule="self.op == 'test' || !(size(self.path) == 0 || self.path in ['/apiVersion', '/kind', '/metadata/name', '/metadata/namespace', '/metadata/uid'] || self.path == '/metadata/annotations/arbiter.dev~1applied')",message="must not change apiVersion, kind, metadata.name, metadata.namespace, metadata.uid or the arbiter.dev/applied annotation",fieldPath=".path"
// +kubebuilder:validation:XValidation:rule="self.op != 'move' || !(size(self.from) == 0 || self.from in ['/apiVersion', '/kind', '/metadata/name', '/metadata/namespace', '/metadata/uid'] || self.from == '/metadata/annotations/arbiter.dev~1applied')",message="must not move apiVersion, kind, metadata.name, metadata.namespace, metadata.uid or the arbiter.dev/applied annotation away",fieldPath=".from"
type JSONPatchOperation struct {
	// op is the operation: add, remove, replace, move, copy or test.
	// +required
	Op JSONPatchOp `json:"op"`

	// path is the JSON Pointer (RFC 6901) the operation acts on, for example
	// "/spec/balance".
	// +required
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^(/([^/~]|~[01])*)+$`
	Path string `json:"path"`

	// from is the source JSON Pointer of move and copy.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^(/([^/~]|~[01])*)+$`
	From string `json:"from,omitempty"`

	// value is the JSON value of add, replace and test.
	// +optional
	Value *apiextensionsv1.JSON `json:"value,omitempty"`
}

// ConflictPolicy says what happens to the operations that lose a staging batch.
// +kubebuilder:validation:Enum=Reject;Queue
type ConflictPolicy string

const (
	// ConflictPolicyReject rejects every operation of a batch but the winner.
	ConflictPolicyReject ConflictPolicy = "Reject"
	// ConflictPolicyQueue queues the losers; they run one at a time, in
	// arbitration order, after the winner finishes.
	ConflictPolicyQueue ConflictPolicy = "Queue"
)

// StagingSpec controls arbitration between operations on the same target.
type StagingSpec struct {
	// window is how long a staging batch stays open after the first pending
	// operation for a target is seen. Every operation for that target seen
	// within it is arbitrated together. Defaults to 100ms; at most 10s.
	// +optional
	// +kubebuilder:default="100ms"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) <= duration('10s'))",message="must be at most 10s",optionalOldSelf=true
	Window *metav1.Duration `json:"window,omitempty"`

	// onConflict is what happens to the operations that lose the batch:
	// Reject (the default) ends them Rejected with reason LostStaging; Queue
	// runs them one at a time, in arbitration order, after the winner.
	// +optional
	// +kubebuilder:default=Reject
	OnConflict ConflictPolicy `json:"onConflict,omitempty"`
}

// OCCSpec controls retries after a 409 Conflict on a target write. Delay n is
// baseDelay * backoffFactor^n with jitter, capped at maxDelay.
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!has(self.baseDelay) || !has(self.maxDelay) || !self.baseDelay.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || !self.maxDelay.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.baseDelay) <= duration(self.maxDelay))",message="baseDelay must not exceed maxDelay",optionalOldSelf=true
type OCCSpec struct {
	// maxRetries is how many extra attempts are made after a 409 Conflict
	// before the operation fails with reason ConflictRetriesExhausted.
	// 0 to 100, defaults to 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// baseDelay is the delay before the first retry. Defaults to 5ms; at
	// most 10s.
	// +optional
	// +kubebuilder:default="5ms"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) <= duration('10s'))",message="must be at most 10s",optionalOldSelf=true
	BaseDelay *metav1.Duration `json:"baseDelay,omitempty"`

	// backoffFactor multiplies the delay after each retry, as a decimal
	// string from "1" to "10" (a float is not a portable CRD type).
	// Defaults to "1.5".
	// +optional
	// +kubebuilder:default="1.5"
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^[0-9]+([.][0-9]+)?$') || (double(self) >= 1.0 && double(self) <= 10.0))",message="must be between 1 and 10",optionalOldSelf=true
	BackoffFactor string `json:"backoffFactor,omitempty"`

	// maxDelay caps the delay between retries. Defaults to 1s; at most 1m.
	// A retry never waits past the operation's timeout.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || (!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) <= duration('1m'))",message="must be at most 1m",optionalOldSelf=true
	MaxDelay *metav1.Duration `json:"maxDelay,omitempty"`
}

// RequesterInfo is the identity of the user who created an operation, as the
// API server authenticated it.
type RequesterInfo struct {
	// username of the requester.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Username string `json:"username,omitempty"`

	// uid of the requester.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	UID string `json:"uid,omitempty"`

	// groups the requester belongs to.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=1024
	Groups []string `json:"groups,omitempty"`

	// extra holds the authenticator's additional information about the
	// requester.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Extra map[string][]string `json:"extra,omitempty"`
}

// OperationPhase is where an operation is in its life.
// +kubebuilder:validation:Enum=Pending;Queued;Executing;Succeeded;Rejected;Failed;Cancelled
type OperationPhase string

const (
	// PhasePending means it is created and waits to be staged and arbitrated.
	PhasePending OperationPhase = "Pending"
	// PhaseQueued means it lost a batch with onConflict Queue; waits its turn.
	PhaseQueued OperationPhase = "Queued"
	// PhaseExecuting means it won; its mutation is being applied.
	PhaseExecuting OperationPhase = "Executing"
	// PhaseSucceeded means it is applied to every target.
	PhaseSucceeded OperationPhase = "Succeeded"
	// PhaseRejected means it lost arbitration or was preempted; nothing of it remains applied.
	PhaseRejected OperationPhase = "Rejected"
	// PhaseFailed means it could not be applied; see reason.
	PhaseFailed OperationPhase = "Failed"
	// PhaseCancelled means the user cancelled it before it executed.
	PhaseCancelled OperationPhase = "Cancelled"
)

// IsTerminal reports whether an operation in this phase is finished.
func (p OperationPhase) IsTerminal() bool {
	switch p {
	case PhaseSucceeded, PhaseRejected, PhaseFailed, PhaseCancelled:
		return true
	}
	return false
}

// TargetStatus records what happened to one target.
type TargetStatus struct {
	// apiVersion of the target.
	// +required
	APIVersion string `json:"apiVersion"`
	// kind of the target.
	// +required
	Kind string `json:"kind"`
	// name of the target.
	// +required
	Name string `json:"name"`
	// resourceVersionBefore is the target's resourceVersion read before the
	// write that applied this operation.
	// +optional
	ResourceVersionBefore string `json:"resourceVersionBefore,omitempty"`
	// resourceVersionAfter is the target's resourceVersion written by it.
	// +optional
	ResourceVersionAfter string `json:"resourceVersionAfter,omitempty"`
	// applied is true while this operation's mutation is in effect on the
	// target (false again after a rollback).
	// +optional
	Applied bool `json:"applied,omitempty"`
}

// ConflictResolutionOperationStatus is what arbiter observed and decided.
type ConflictResolutionOperationStatus struct {
	// phase is where the operation is in its life.
	// +optional
	Phase OperationPhase `json:"phase,omitempty"`

	// reason is a CamelCase word saying why the operation is in its phase,
	// for example LostStaging or ConflictRetriesExhausted.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message is a human-readable sentence about the outcome; it names the
	// winner or preemptor where there is one.
	// +optional
	// +kubebuilder:validation:MaxLength=32768
	Message string `json:"message,omitempty"`

	// winner is the name of the operation that beat this one (reasons
	// LostStaging and Preempted).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Winner string `json:"winner,omitempty"`

	// effectivePriority is the priority arbitration used: the maximum of
	// spec.priority and the parent's effective priority.
	// +optional
	EffectivePriority int32 `json:"effectivePriority,omitempty"`

	// attempts is the number of target write attempts made.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// stagedAt is when arbiter first saw the operation and placed it in a
	// staging batch.
	// +optional
	StagedAt *metav1.MicroTime `json:"stagedAt,omitempty"`

	// startedAt is when the operation started executing.
	// +optional
	StartedAt *metav1.MicroTime `json:"startedAt,omitempty"`

	// completedAt is when the operation reached a terminal phase.
	// +optional
	CompletedAt *metav1.MicroTime `json:"completedAt,omitempty"`

	// targets records the outcome on each target.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Targets []TargetStatus `json:"targets,omitempty"`

	// conditions are Staged, Succeeded, Rejected, Failed, and Finished, True
	// on every terminal operation with the phase as its reason
	// (`kubectl wait --for=condition=Finished`).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ConflictResolutionOperation is a declarative change request against one or
// more target objects. arbiter arbitrates it against other operations on the
// same targets, applies the winner with optimistic concurrency, and records
// the outcome in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cro,categories=arbiter
// +kubebuilder:selectablefield:JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Function",type=string,JSONPath=`.spec.function`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targets[0].name`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.status.effectivePriority`
// +kubebuilder:printcolumn:name="Winner",type=string,JSONPath=`.status.winner`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.status.attempts`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`,priority=1
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.targets[0].kind`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || !has(self.spec.parentRef) || self.spec.parentRef.name != self.metadata.name",message="must not name the operation itself",fieldPath=".spec.parentRef.name",optionalOldSelf=true
type ConflictResolutionOperation struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the requested change. It is immutable: to change an operation,
	// delete it and create a new one.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable; delete the operation and create a new one"
	Spec ConflictResolutionOperationSpec `json:"spec"`

	// status is what arbiter observed and decided.
	// +optional
	Status ConflictResolutionOperationStatus `json:"status,omitzero"`
}

// ConflictResolutionOperationList is a list of ConflictResolutionOperations.
//
// +kubebuilder:object:root=true
type ConflictResolutionOperationList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitzero"`
	// items are the operations.
	Items []ConflictResolutionOperation `json:"items"`
}
