package webhook

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

var mallory = authenticationv1.UserInfo{
	Username: "mallory",
	UID:      "u-42",
	Groups:   []string{"team-a", "system:authenticated"},
	Extra:    map[string]authenticationv1.ExtraValue{"scopes": {"read"}},
}

var malloryInfo = &arbiterv1alpha1.RequesterInfo{
	Username: "mallory", UID: "u-42",
	Groups: []string{"team-a", "system:authenticated"},
	Extra:  map[string][]string{"scopes": {"read"}},
}

var forged = &arbiterv1alpha1.RequesterInfo{
	Username: "alice", UID: "u-1", Groups: []string{"system:masters"},
	Extra: map[string][]string{"admin": {"yes"}},
}

func requestContext(op admissionv1.Operation, user authenticationv1.UserInfo) context.Context {
	return admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, UserInfo: user,
	}})
}

func operation(by *arbiterv1alpha1.RequesterInfo) *arbiterv1alpha1.ConflictResolutionOperation {
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Name: "op", Namespace: "ns"},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			Function:    "f",
			RequestedBy: by,
			Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm",
				MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"data":{"k":"v"}}`)}}},
		},
	}
}

// stamp sends raw to the stamper as a request of user and returns the
// object as the API server stores it after the patch, or nil when the
// stamper changed nothing.
func stamp(t *testing.T, op admissionv1.Operation, user authenticationv1.UserInfo, raw string) map[string]any {
	t.Helper()
	resp := RequesterStamper{}.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, UserInfo: user, Object: runtime.RawExtension{Raw: []byte(raw)},
	}})
	if !resp.Allowed {
		t.Fatalf("refused: %v", resp.Result)
	}
	if resp.Patch == nil {
		return nil
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply([]byte(raw))
	if err != nil {
		t.Fatalf("applying %s: %v", resp.Patch, err)
	}
	var got map[string]any
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func manifest(spec string) string {
	return `{"apiVersion":"arbiter.dev/v1alpha1","kind":"ConflictResolutionOperation","metadata":{"name":"op","namespace":"ns"},"spec":` + spec + `}`
}

const targets = `"function":"f","targets":[{"apiVersion":"v1","kind":"ConfigMap","name":"cm","mergePatch":{"data":{"k":"v"}}}]`

func TestRequesterStamperReplacesRequestedBy(t *testing.T) {
	forgedJSON := `"requestedBy":{"username":"alice","uid":"u-1","groups":["system:masters"],"extra":{"admin":["yes"]}}`
	for _, tc := range []struct {
		name string
		user authenticationv1.UserInfo
		spec string
		want map[string]any
	}{
		{"unset", mallory, `{` + targets + `}`, map[string]any{"username": "mallory", "uid": "u-42",
			"groups": []any{"team-a", "system:authenticated"}, "extra": map[string]any{"scopes": []any{"read"}}}},
		{"forged", mallory, `{` + targets + `,` + forgedJSON + `}`, map[string]any{"username": "mallory", "uid": "u-42",
			"groups": []any{"team-a", "system:authenticated"}, "extra": map[string]any{"scopes": []any{"read"}}}},
		{"forged, requester without uid, groups or extra", authenticationv1.UserInfo{Username: "bob"},
			`{` + targets + `,` + forgedJSON + `}`, map[string]any{"username": "bob"}},
		{"null", authenticationv1.UserInfo{Username: "bob"}, `{` + targets + `,"requestedBy":null}`, map[string]any{"username": "bob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := stamp(t, admissionv1.Create, tc.user, manifest(tc.spec))
			if got == nil {
				t.Fatal("not stamped")
			}
			spec := got["spec"].(map[string]any)
			if !reflect.DeepEqual(spec["requestedBy"], tc.want) {
				t.Errorf("requestedBy = %v, want %v", spec["requestedBy"], tc.want)
			}
		})
	}
}

// TestRequesterStamperTouchesNothingElse: the schema, which runs after
// mutating webhooks, must still see the manifest as written, to refuse it
// with messages naming the field.
func TestRequesterStamperTouchesNothingElse(t *testing.T) {
	spec := `{"timeout":"30 seconds","priority":0,"staging":{"window":"soon"},"targets":null,"unknown":{"x":1.50}}`
	got := stamp(t, admissionv1.Create, authenticationv1.UserInfo{Username: "bob"}, manifest(spec))
	if got == nil {
		t.Fatal("not stamped")
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(manifest(spec)), &want); err != nil {
		t.Fatal(err)
	}
	want["spec"].(map[string]any)["requestedBy"] = map[string]any{"username": "bob"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stamped object = %v, want %v", got, want)
	}
}

func TestRequesterStamperLeavesTheRestAlone(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   admissionv1.Operation
		raw  string
	}{
		{"update", admissionv1.Update, manifest(`{` + targets + `,"requestedBy":{"username":"alice"}}`)},
		{"no spec", admissionv1.Create, `{"apiVersion":"arbiter.dev/v1alpha1","kind":"ConflictResolutionOperation"}`},
		{"spec not an object", admissionv1.Create, manifest(`"x"`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stamp(t, tc.op, mallory, tc.raw); got != nil {
				t.Errorf("patched to %v", got)
			}
		})
	}
}

func TestRequesterStamperRefusesGarbage(t *testing.T) {
	resp := RequesterStamper{}.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, UserInfo: mallory, Object: runtime.RawExtension{Raw: []byte(`{"spec":`)},
	}})
	if resp.Allowed {
		t.Error("allowed an object it could not read, unstamped")
	}
}

func TestValidatorRefusesAnotherRequester(t *testing.T) {
	for _, tc := range []struct {
		name   string
		by     *arbiterv1alpha1.RequesterInfo
		refuse string // "" when allowed
	}{
		{"the requester", malloryInfo, ""},
		{"unset", nil, "spec.requestedBy: Required value"},
		{"another user", forged, `spec.requestedBy: Invalid value: "alice"`},
		{"an extra group", &arbiterv1alpha1.RequesterInfo{Username: "mallory", UID: "u-42",
			Groups: []string{"team-a", "system:authenticated", "system:masters"}, Extra: map[string][]string{"scopes": {"read"}}},
			`spec.requestedBy: Invalid value: "mallory"`},
		{"another uid", &arbiterv1alpha1.RequesterInfo{Username: "mallory", UID: "u-1",
			Groups: []string{"team-a", "system:authenticated"}, Extra: map[string][]string{"scopes": {"read"}}},
			`spec.requestedBy: Invalid value: "mallory"`},
		{"other extra", &arbiterv1alpha1.RequesterInfo{Username: "mallory", UID: "u-42",
			Groups: []string{"team-a", "system:authenticated"}, Extra: map[string][]string{"scopes": {"write"}}},
			`spec.requestedBy: Invalid value: "mallory"`},
		{"extra missing", &arbiterv1alpha1.RequesterInfo{Username: "mallory", UID: "u-42",
			Groups: []string{"team-a", "system:authenticated"}},
			`spec.requestedBy: Invalid value: "mallory"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OperationValidator{}.ValidateCreate(requestContext(admissionv1.Create, mallory), operation(tc.by))
			switch {
			case tc.refuse == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refuse == "":
			case !apierrors.IsInvalid(err):
				t.Fatalf("err = %v, want Invalid containing %q", err, tc.refuse)
			case !strings.Contains(err.Error(), tc.refuse) || !strings.Contains(err.Error(), "mallory"):
				t.Errorf("err = %v, want it to contain %q and name the requester", err, tc.refuse)
			}
		})
	}
}

func TestValidatorAcceptsEmptyGroupsAsNone(t *testing.T) {
	ctx := requestContext(admissionv1.Create, authenticationv1.UserInfo{Username: "bob", Groups: []string{}, Extra: map[string]authenticationv1.ExtraValue{}})
	if _, err := (OperationValidator{}).ValidateCreate(ctx, operation(&arbiterv1alpha1.RequesterInfo{Username: "bob"})); err != nil {
		t.Errorf("refused: %v", err)
	}
}
