// Package controllers holds arbiter's reconcilers: the operation controller,
// which arbitrates and applies ConflictResolutionOperations, and the cleanup
// controller, which removes zombies as CleanupPolicies say.
package controllers

// The manager's own permissions. Target kinds are granted separately, in the
// kustomize-configurable config/rbac/target_role.yaml.
//
// +kubebuilder:rbac:groups=arbiter.dev,resources=conflictresolutionoperations,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=arbiter.dev,resources=conflictresolutionoperations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=arbiter.dev,resources=conflictresolutionoperations/finalizers,verbs=update
// +kubebuilder:rbac:groups=arbiter.dev,resources=cleanuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=arbiter.dev,resources=cleanuppolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=arbiter.dev,resources=clustercleanuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=arbiter.dev,resources=clustercleanuppolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
