// Package v1alpha1 contains the arbiter.dev/v1alpha1 API: ConflictResolutionOperation,
// a declarative change request that arbiter arbitrates against other requests for
// the same target object, and CleanupPolicy and ClusterCleanupPolicy, which decide
// how the operations that lost or failed ("zombies") are removed.
//
// +kubebuilder:object:generate=true
// +groupName=arbiter.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of arbiter's API.
	GroupVersion = schema.GroupVersion{Group: "arbiter.dev", Version: "v1alpha1"}

	// SchemeBuilder registers arbiter's types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds arbiter's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&ConflictResolutionOperation{},
		&ConflictResolutionOperationList{},
		&CleanupPolicy{},
		&CleanupPolicyList{},
		&ClusterCleanupPolicy{},
		&ClusterCleanupPolicyList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
