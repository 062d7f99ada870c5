// Package webhook holds arbiter's admission webhooks. The mutating webhook
// stamps spec.requestedBy with the authenticated requester. The CRD schema
// and its CEL rules refuse every statically invalid manifest they can
// express; the validating webhook refuses the rest before they are stored:
// CEL expressions that do not compile, JSON Patch operations whose value is
// missing or misplaced, params too large or too deeply nested, and a
// requestedBy that is not the requester.
package webhook

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
)

// The API server calls the validator only for what its schema cannot check
// (matchConditions): a requestedBy other than the requester, params, a CEL
// expression or a JSON Patch. An operation made of merge patches by a
// stamped requester costs no webhook call.
// +kubebuilder:webhook:path=/validate-arbiter-dev-v1alpha1-conflictresolutionoperation,mutating=false,failurePolicy=fail,sideEffects=None,groups=arbiter.dev,resources=conflictresolutionoperations,verbs=create,versions=v1alpha1,name=vconflictresolutionoperation.arbiter.dev,admissionReviewVersions=v1,patch=`{"matchConditions":[{"name":"needs-arbiter-checks","expression":"!(has(object.spec) && type(object.spec) == map && has(object.spec.requestedBy) && type(object.spec.requestedBy) == map && object.spec.requestedBy.?username.orValue('') == request.userInfo.username && object.spec.requestedBy.?uid.orValue('') == request.userInfo.?uid.orValue('') && object.spec.requestedBy.?groups.orValue([]) == request.userInfo.?groups.orValue([]) && object.spec.requestedBy.?extra.orValue({}) == request.userInfo.?extra.orValue({})) || has(object.spec.params) || object.spec.targets.exists(t, has(t.expression) || has(t.jsonPatch))"}]}`

// SetupOperationWebhook registers the ConflictResolutionOperation requester
// stamper and validator with the manager's webhook server.
func SetupOperationWebhook(mgr ctrl.Manager) error {
	mgr.GetWebhookServer().Register(MutatePath, &admission.Webhook{Handler: RequesterStamper{}})
	return ctrl.NewWebhookManagedBy(mgr, &arbiterv1alpha1.ConflictResolutionOperation{}).
		WithValidator(OperationValidator{}).
		Complete()
}

// OperationValidator refuses an operation whose mutations cannot compile,
// whose params exceed arbiter's bounds, or whose requestedBy is not the user
// creating it.
// Only creation is checked: spec is immutable afterwards.
type OperationValidator struct{}

var _ admission.Validator[*arbiterv1alpha1.ConflictResolutionOperation] = OperationValidator{}

// ValidateCreate checks the requester and params and compiles every
// target's mutation.
func (OperationValidator) ValidateCreate(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (admission.Warnings, error) {
	var errs field.ErrorList
	ferr, err := checkRequester(ctx, op)
	if err != nil {
		return nil, err
	}
	if ferr != nil {
		errs = append(errs, ferr)
	}
	if op.Spec.Params != nil {
		if err := execute.CheckParams(op.Spec.Params.Raw); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("spec", "params"), field.OmitValueType{}, err.Error()))
		}
	}
	targets := field.NewPath("spec", "targets")
	for i := range op.Spec.Targets {
		_, err := execute.Compile(&op.Spec.Targets[i])
		var merr *execute.MutationError
		switch {
		case err == nil:
		case errors.As(err, &merr):
			path := targets.Index(i)
			if merr.Field != "" {
				path = path.Child(merr.Field)
			}
			errs = append(errs, field.Invalid(path, fieldValue(&op.Spec.Targets[i], merr.Field), merr.Err.Error()))
		default:
			return nil, fmt.Errorf("validating %s: %w", targets.Index(i), err)
		}
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(arbiterv1alpha1.GroupVersion.WithKind("ConflictResolutionOperation").GroupKind(), op.Name, errs)
	}
	return nil, nil
}

// ValidateUpdate allows every update: the CRD keeps spec immutable, and
// metadata and status changes need no check here.
func (OperationValidator) ValidateUpdate(context.Context, *arbiterv1alpha1.ConflictResolutionOperation, *arbiterv1alpha1.ConflictResolutionOperation) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete allows every delete.
func (OperationValidator) ValidateDelete(context.Context, *arbiterv1alpha1.ConflictResolutionOperation) (admission.Warnings, error) {
	return nil, nil
}

// fieldValue is the value shown in the error: the expression, or nothing
// for patch fields, whose raw JSON would only repeat the manifest.
func fieldValue(t *arbiterv1alpha1.Target, f string) any {
	if f == "expression" {
		return t.Expression
	}
	return field.OmitValueType{}
}
