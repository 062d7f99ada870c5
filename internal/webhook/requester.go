package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// The API server calls the stamper only for an operation not yet stamped
// with exactly its requester (matchConditions): where the requested-by
// MutatingAdmissionPolicy runs, it has stamped every create already (policies
// run before webhooks), and the call would write the same value again.
// +kubebuilder:webhook:path=/mutate-arbiter-dev-v1alpha1-conflictresolutionoperation,mutating=true,failurePolicy=fail,sideEffects=None,groups=arbiter.dev,resources=conflictresolutionoperations,verbs=create,versions=v1alpha1,name=mconflictresolutionoperation.arbiter.dev,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,patch=`{"matchConditions":[{"name":"requester-not-yet-stamped","expression":"!(has(object.spec) && type(object.spec) == map && has(object.spec.requestedBy) && type(object.spec.requestedBy) == map && object.spec.requestedBy.?username.orValue('') == request.userInfo.username && object.spec.requestedBy.?uid.orValue('') == request.userInfo.?uid.orValue('') && object.spec.requestedBy.?groups.orValue([]) == request.userInfo.?groups.orValue([]) && object.spec.requestedBy.?extra.orValue({}) == request.userInfo.?extra.orValue({}))"}]}`

// MutatePath is where the manager serves RequesterStamper.
const MutatePath = "/mutate-arbiter-dev-v1alpha1-conflictresolutionoperation"

// RequesterStamper sets spec.requestedBy of every new operation to the user
// the API server authenticated for the request. arbiter acts on targets only
// as far as that user may, so a requestedBy written in the manifest is never
// kept: trusting it would let anyone who may create an operation act as
// anyone else. The requested-by MutatingAdmissionPolicy does the same where
// the API server serves it; this webhook makes stamping independent of it.
//
// It is a plain handler rather than a typed defaulter: mutating webhooks run
// before the schema is checked, and a defaulter decodes the whole operation
// into Go types and patches back the difference, which refuses a garbage
// duration with a bare parse error and turns a missing field into an empty
// one, hiding the schema's messages that name the field. This one patches
// /spec/requestedBy and reads nothing else.
type RequesterStamper struct{}

var _ admission.Handler = RequesterStamper{}

// Handle stamps a create; other operations are left alone: spec is
// immutable after create.
func (RequesterStamper) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	var obj struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("stamping spec.requestedBy: decoding the operation: %w", err))
	}
	if s := bytes.TrimSpace(obj.Spec); len(s) == 0 || s[0] != '{' {
		// Nothing to stamp into: the schema refuses an operation without a
		// spec, and the validating webhook one without requestedBy.
		return admission.Allowed("")
	}
	// "add" replaces a value already there, so the manifest's is discarded whole.
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/requestedBy", "value": requesterOf(req.UserInfo)}})
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("stamping spec.requestedBy: %w", err))
	}
	patchType := admissionv1.PatchTypeJSONPatch
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &patchType}}
}

// requesterOf is the RequesterInfo of an authenticated user, with empty
// groups and extra left out as the API's omitempty fields would be.
func requesterOf(u authenticationv1.UserInfo) *arbiterv1alpha1.RequesterInfo {
	r := &arbiterv1alpha1.RequesterInfo{Username: u.Username, UID: u.UID}
	if len(u.Groups) > 0 {
		r.Groups = slices.Clone(u.Groups)
	}
	if len(u.Extra) > 0 {
		r.Extra = make(map[string][]string, len(u.Extra))
		for k, v := range u.Extra {
			r.Extra[k] = slices.Clone([]string(v))
		}
	}
	return r
}

// checkRequester refuses an operation whose spec.requestedBy is not the user
// creating it: the stamping failed or came from something other than the API
// server (a mutating component missing or ordered wrongly). Refusing at
// create is safer than failing the operation later as Forbidden, or worse,
// running it with someone else's rights.
func checkRequester(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (*field.Error, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("checking spec.requestedBy: %w", err)
	}
	want := requesterOf(req.UserInfo)
	if sameRequester(op.Spec.RequestedBy, want) {
		return nil, nil
	}
	path := field.NewPath("spec", "requestedBy")
	if op.Spec.RequestedBy == nil {
		return field.Required(path, fmt.Sprintf("must be stamped with the requester %q by arbiter's mutating webhook; is the mutating webhook configuration installed?", want.Username)), nil
	}
	return field.Invalid(path, op.Spec.RequestedBy.Username,
		fmt.Sprintf("must be the user creating the operation (%q), as arbiter's mutating webhook stamps it; it cannot be set in the manifest", want.Username)), nil
}

// sameRequester compares two requesters field by field, an empty list or
// map being the same as none.
func sameRequester(a, b *arbiterv1alpha1.RequesterInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Username == b.Username && a.UID == b.UID && slices.Equal(a.Groups, b.Groups) &&
		maps.EqualFunc(a.Extra, b.Extra, func(x, y []string) bool { return slices.Equal(x, y) })
}
