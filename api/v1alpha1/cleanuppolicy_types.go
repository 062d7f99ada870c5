package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CleanupStrategy is how a CleanupPolicy removes zombie operations.
// +kubebuilder:validation:Enum=Immediate;Deferred;Lazy
type CleanupStrategy string

const (
	// CleanupImmediate deletes a zombie as soon as its terminal status is written.
	CleanupImmediate CleanupStrategy = "Immediate"
	// CleanupDeferred deletes each zombie when its own retention expires.
	CleanupDeferred CleanupStrategy = "Deferred"
	// CleanupLazy runs no timer: a zombie older than the retention is deleted
	// when arbiter meets it while staging or cleaning another operation on
	// the same target.
	CleanupLazy CleanupStrategy = "Lazy"
)

// Default retentions when spec.retention is unset.
const (
	DefaultDeferredRetention = "30m"
	DefaultLazyRetention     = "1h"
)

// ZombiePhase is a terminal phase a CleanupPolicy may treat as a zombie.
// +kubebuilder:validation:Enum=Rejected;Failed;Cancelled
type ZombiePhase string

// CleanupPolicySpec decides which finished operations in the namespace are
// zombies and how they are removed.
// +kubebuilder:validation:XValidation:rule="!has(self.retentionByOutcome) || !has(self.phases) || self.retentionByOutcome.all(e, e.phase in self.phases)",message="each entry's phase must be listed in spec.phases",fieldPath=".retentionByOutcome",reason=FieldValueInvalid
type CleanupPolicySpec struct {
	// strategy is how zombies are removed: Immediate, Deferred (after
	// retention, the default) or Lazy (when next met, once older than
	// retention).
	// +optional
	// +kubebuilder:default=Deferred
	Strategy CleanupStrategy `json:"strategy,omitempty"`

	// retention is how long a zombie is kept after its completedAt, unless
	// retentionByOutcome has an entry for its outcome. Deferred: deleted
	// when it expires (default 30m). Lazy: deleted when met once older than
	// this (default 1h). Immediate: ignored.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	Retention *metav1.Duration `json:"retention,omitempty"`

	// retentionByOutcome overrides retention for some outcomes of a zombie:
	// an entry with a phase and a reason applies to zombies that ended so,
	// one with a phase alone to the other zombies of that phase. The most
	// specific entry wins: phase and reason, then phase, then retention,
	// then the strategy's default. Under Immediate an entry makes its
	// outcome wait too: Immediate with {phase: Failed, retention: 24h}
	// removes rejected operations at once and keeps failures a day for
	// inspection. Lazy removes a zombie when met once older than its
	// entry's retention. Each entry's phase must be listed in phases; each
	// (phase, reason) pair may appear once.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, b.phase == a.phase && (has(b.reason) ? b.reason : '') == (has(a.reason) ? a.reason : '')))",message="each (phase, reason) pair may appear only once"
	RetentionByOutcome []OutcomeRetention `json:"retentionByOutcome,omitempty"`

	// phases are the terminal phases whose operations are zombies. Defaults
	// to Rejected and Failed; Cancelled may be added.
	// +optional
	// +listType=set
	// +kubebuilder:default={Rejected,Failed}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	Phases []ZombiePhase `json:"phases,omitempty"`

	// succeededRetention, when set, removes Succeeded operations this long
	// after their completedAt. Unset: Succeeded operations are kept.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	SucceededRetention *metav1.Duration `json:"succeededRetention,omitempty"`

	// historyLimit, when set, keeps at most this many zombies per target;
	// the oldest are removed first.
	// +optional
	// +kubebuilder:validation:Minimum=0
	HistoryLimit *int32 `json:"historyLimit,omitempty"`

	// selector chooses the operations this policy governs by label. Unset:
	// every operation in the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// dryRun, when true, reports in status, events and metrics what would be
	// removed, and removes nothing.
	// +optional
	// +kubebuilder:default=false
	DryRun bool `json:"dryRun,omitempty"`

	// maxDeletionsPerSecond limits this policy's deletions so that a cleanup
	// storm cannot overload the API server. 1 to 10000, defaults to 200.
	// +optional
	// +kubebuilder:default=200
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxDeletionsPerSecond int32 `json:"maxDeletionsPerSecond,omitempty"`

	// health sets the thresholds of the policy's health report.
	// +optional
	// +kubebuilder:default={}
	Health HealthThresholds `json:"health,omitzero"`
}

// ZombieReason is a reason arbiter sets on an operation that ends in a
// zombie phase (see status.reason): the closed list arbiter itself writes,
// so that a misspelt reason is refused rather than never matching.
// +kubebuilder:validation:Enum=LostStaging;Preempted;ConflictRetriesExhausted;TargetNotFound;InvalidMutation;MutationTooLarge;Forbidden;Timeout;RolledBack;RollbackFailed;ClusterScopedTarget;InvalidParent;Cancelled
type ZombieReason string

// ZombieReasons are the reasons arbiter sets for each zombie phase; an
// entry of retentionByOutcome may only pair a phase with one of its own.
var ZombieReasons = map[ZombiePhase][]ZombieReason{
	"Rejected": {ReasonLostStaging, ReasonPreempted},
	"Failed": {ReasonConflictRetriesExhausted, ReasonTargetNotFound, ReasonInvalidMutation, ReasonMutationTooLarge,
		ReasonForbidden, ReasonTimeout, ReasonRolledBack, ReasonRollbackFailed, ReasonClusterScopedTarget, ReasonInvalidParent},
	"Cancelled": {ReasonCancelled},
}

// OutcomeRetention is how long the zombies of one outcome are kept.
// +kubebuilder:validation:XValidation:rule="!has(self.reason) || (self.phase == 'Rejected' ? self.reason in ['LostStaging', 'Preempted'] : self.phase == 'Cancelled' ? self.reason == 'Cancelled' : !(self.reason in ['LostStaging', 'Preempted', 'Cancelled']))",message="reason must be one arbiter sets for the phase: Rejected: LostStaging, Preempted; Cancelled: Cancelled; Failed: any other",fieldPath=".reason",reason=FieldValueInvalid
type OutcomeRetention struct {
	// phase is the zombie phase this entry applies to: Rejected, Failed or
	// Cancelled. It must be listed in the policy's phases.
	// +required
	Phase ZombiePhase `json:"phase"`

	// reason, when set, narrows the entry to the zombies of that phase that
	// ended with this reason (status.reason), for example Failed/Timeout.
	// Unset: every zombie of the phase without an entry of its own reason.
	// +optional
	Reason ZombieReason `json:"reason,omitempty"`

	// retention is how long a zombie of this outcome is kept after its
	// completedAt, whatever the strategy.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	Retention metav1.Duration `json:"retention"`
}

// HealthThresholds decide when a namespace's cleanup is Degraded or Unhealthy.
type HealthThresholds struct {
	// maxZombies: more zombies than this make the policy Degraded. Defaults to 1000.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxZombies *int32 `json:"maxZombies,omitempty"`

	// maxZombieAge: a zombie older than this makes the policy Degraded.
	// Defaults to 24h.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	MaxZombieAge *metav1.Duration `json:"maxZombieAge,omitempty"`

	// maxFailureRatePercent: a cleanup failure rate over the last 15 minutes
	// above this percentage makes the policy Unhealthy. 0 to 100, defaults to 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxFailureRatePercent *int32 `json:"maxFailureRatePercent,omitempty"`
}

// HealthState summarises a namespace's cleanup health.
// +kubebuilder:validation:Enum=Healthy;Degraded;Unhealthy
type HealthState string

const (
	// HealthHealthy means every threshold is met.
	HealthHealthy HealthState = "Healthy"
	// HealthDegraded means too many zombies, one too old, or a
	// Failed/RollbackFailed one awaiting acknowledgement.
	HealthDegraded HealthState = "Degraded"
	// HealthUnhealthy means cleanups are failing above the threshold.
	HealthUnhealthy HealthState = "Unhealthy"
)

// CleanupLatency summarises the time from an operation's completedAt until it
// was gone.
type CleanupLatency struct {
	// p50 is the median cleanup latency.
	// +optional
	P50 *metav1.Duration `json:"p50,omitempty"`
	// p99 is the 99th percentile cleanup latency.
	// +optional
	P99 *metav1.Duration `json:"p99,omitempty"`
}

// CleanupPolicyStatus is the policy's health report.
type CleanupPolicyStatus struct {
	// health is Healthy, Degraded or Unhealthy.
	// +optional
	Health HealthState `json:"health,omitempty"`

	// issues are sentences explaining a health other than Healthy, for
	// example "High zombie count: 1234", and the zombies held from cleanup,
	// which a policy that is otherwise Healthy lists too.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=1024
	Issues []string `json:"issues,omitempty"`

	// zombies is the number of zombies this policy governs now.
	// +optional
	Zombies int32 `json:"zombies,omitempty"`

	// heldZombies is how many of those zombies are held from cleanup:
	// annotated arbiter.dev/keep=true, or Failed/RollbackFailed and not yet
	// annotated arbiter.dev/acknowledged=true.
	// +optional
	HeldZombies int32 `json:"heldZombies,omitempty"`

	// oldestZombieAgeSeconds is the age of the oldest zombie, from its
	// completedAt.
	// +optional
	OldestZombieAgeSeconds int64 `json:"oldestZombieAgeSeconds,omitempty"`

	// cleanedTotal is the number of operations this policy has removed (or,
	// under dryRun, would have removed).
	// +optional
	CleanedTotal int64 `json:"cleanedTotal,omitempty"`

	// cleanupFailuresTotal is the number of deletions that failed.
	// +optional
	CleanupFailuresTotal int64 `json:"cleanupFailuresTotal,omitempty"`

	// cleanupFailureRatePercent is the share of deletions that failed over
	// the last 15 minutes, in percent.
	// +optional
	CleanupFailureRatePercent int32 `json:"cleanupFailureRatePercent,omitempty"`

	// cleanupLatency summarises the time from completedAt until gone.
	// +optional
	CleanupLatency *CleanupLatency `json:"cleanupLatency,omitempty"`

	// lastSweepTime is when the policy's zombies were last evaluated.
	// +optional
	LastSweepTime *metav1.Time `json:"lastSweepTime,omitempty"`

	// conditions are Ready, Healthy and Overlapping.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// CleanupPolicy decides how the zombie operations of its namespace (those
// that were rejected or failed) are removed, and reports the namespace's
// cleanup health.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=opcp,categories=arbiter
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.strategy`
// +kubebuilder:printcolumn:name="Health",type=string,JSONPath=`.status.health`
// +kubebuilder:printcolumn:name="Zombies",type=integer,JSONPath=`.status.zombies`
// +kubebuilder:printcolumn:name="Cleaned",type=integer,JSONPath=`.status.cleanedTotal`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="DryRun",type=boolean,JSONPath=`.spec.dryRun`,priority=1
// +kubebuilder:printcolumn:name="Failure%",type=integer,JSONPath=`.status.cleanupFailureRatePercent`,priority=1
type CleanupPolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the policy.
	// +optional
	// +kubebuilder:default={}
	Spec CleanupPolicySpec `json:"spec,omitzero"`

	// status is the policy's health report.
	// +optional
	Status CleanupPolicyStatus `json:"status,omitzero"`
}

// CleanupPolicyList is a list of CleanupPolicies.
//
// +kubebuilder:object:root=true
type CleanupPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitzero"`
	// items are the policies.
	Items []CleanupPolicy `json:"items"`
}
