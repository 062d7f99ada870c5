package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterCleanupPolicySpec is a CleanupPolicy's spec for every namespace its
// namespaceSelector selects.
type ClusterCleanupPolicySpec struct {
	CleanupPolicySpec `json:",inline"`

	// namespaceSelector chooses, by the namespace's labels, the namespaces
	// whose operations this policy may govern. Unset: every namespace. In a
	// namespace, a CleanupPolicy that selects an operation always governs it
	// instead; among ClusterCleanupPolicies the oldest that selects it does.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// NamespaceHealth is a ClusterCleanupPolicy's report on one namespace.
type NamespaceHealth struct {
	// namespace is the namespace's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// health is the namespace's: its zombies, and the failure rate of the
	// policy's deletions there, judged with the policy's thresholds.
	// +optional
	Health HealthState `json:"health,omitempty"`

	// zombies is the number of zombies the policy governs in the namespace.
	// +optional
	Zombies int32 `json:"zombies,omitempty"`

	// oldestZombieAgeSeconds is the age of the namespace's oldest zombie
	// the policy governs, from its completedAt.
	// +optional
	OldestZombieAgeSeconds int64 `json:"oldestZombieAgeSeconds,omitempty"`
}

// MaxReportedNamespaces bounds status.namespaces of a ClusterCleanupPolicy.
const MaxReportedNamespaces = 10

// ClusterCleanupPolicyStatus is the policy's health report, summed over the
// namespaces it governs zombies in.
type ClusterCleanupPolicyStatus struct {
	CleanupPolicyStatus `json:",inline"`

	// namespaces are the namespaces in the worst health where the policy
	// governs zombies, worst first (Unhealthy, Degraded, Healthy, then the
	// most zombies); at most 10.
	// +optional
	// +listType=map
	// +listMapKey=namespace
	// +kubebuilder:validation:MaxItems=10
	Namespaces []NamespaceHealth `json:"namespaces,omitempty"`

	// namespacesWithZombies is how many namespaces hold zombies this policy
	// governs, listed or not.
	// +optional
	NamespacesWithZombies int32 `json:"namespacesWithZombies,omitempty"`
}

// ClusterCleanupPolicy is a cluster-wide default for cleaning up zombies: a
// CleanupPolicy for every namespace its namespaceSelector selects. A
// namespace's own CleanupPolicies win over it for the operations they
// select. Its status sums its namespaces' cleanup health and lists the
// worst.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ocpp,categories=arbiter
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.strategy`
// +kubebuilder:printcolumn:name="Health",type=string,JSONPath=`.status.health`
// +kubebuilder:printcolumn:name="Zombies",type=integer,JSONPath=`.status.zombies`
// +kubebuilder:printcolumn:name="Cleaned",type=integer,JSONPath=`.status.cleanedTotal`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="DryRun",type=boolean,JSONPath=`.spec.dryRun`,priority=1
// +kubebuilder:printcolumn:name="Failure%",type=integer,JSONPath=`.status.cleanupFailureRatePercent`,priority=1
// +kubebuilder:printcolumn:name="Namespaces",type=integer,JSONPath=`.status.namespacesWithZombies`,priority=1
type ClusterCleanupPolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the policy.
	// +optional
	// +kubebuilder:default={}
	Spec ClusterCleanupPolicySpec `json:"spec,omitzero"`

	// status is the policy's health report.
	// +optional
	Status ClusterCleanupPolicyStatus `json:"status,omitzero"`
}

// ClusterCleanupPolicyList is a list of ClusterCleanupPolicies.
//
// +kubebuilder:object:root=true
type ClusterCleanupPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitzero"`
	// items are the policies.
	Items []ClusterCleanupPolicy `json:"items"`
}
