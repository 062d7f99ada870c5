package execute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

const alice = `{"apiVersion":"bank.example.com/v1","kind":"Account",` +
	`"metadata":{"name":"alice","namespace":"bank","uid":"u-1","resourceVersion":"7"},` +
	`"spec":{"owner":"alice","balance":100,"frozen":false}}`

func raw(s string) *apiextensionsv1.JSON { return &apiextensionsv1.JSON{Raw: []byte(s)} }

func account(mutate func(*arbiterv1alpha1.Target)) *arbiterv1alpha1.Target {
	t := &arbiterv1alpha1.Target{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice"}
	mutate(t)
	return t
}

func withExpression(expr string) *arbiterv1alpha1.Target {
	return account(func(t *arbiterv1alpha1.Target) { t.Expression = expr })
}

func withPatch(ops ...arbiterv1alpha1.JSONPatchOperation) *arbiterv1alpha1.Target {
	return account(func(t *arbiterv1alpha1.Target) { t.JSONPatch = ops })
}

// spec decodes the spec of a result document.
func spec(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var obj struct {
		Spec map[string]any `json:"spec"`
	}
	if err := json.Unmarshal(doc, &obj); err != nil {
		t.Fatalf("result is not JSON: %v", err)
	}
	return obj.Spec
}

// compileAndApply compiles a target's mutation, which must compile, and
// applies it to alice with params (JSON, or "" for none).
func compileAndApply(t *testing.T, target *arbiterv1alpha1.Target, params string) ([]byte, error) {
	t.Helper()
	m, err := Compile(target)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	var p []byte
	if params != "" {
		p = []byte(params)
	}
	return m.Apply(context.Background(), []byte(alice), p)
}

func TestApplyProducesTheMutatedTarget(t *testing.T) {
	tests := []struct {
		name   string
		target *arbiterv1alpha1.Target
		params string
		want   map[string]any
	}{{
		name: "JSON Patch with a passing test op",
		target: withPatch(
			arbiterv1alpha1.JSONPatchOperation{Op: "test", Path: "/spec/frozen", Value: raw("false")},
			arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/spec/frozen", Value: raw("true")}),
		want: map[string]any{"owner": "alice", "balance": 100.0, "frozen": true},
	}, {
		name:   "merge patch",
		target: account(func(t *arbiterv1alpha1.Target) { t.MergePatch = raw(`{"spec":{"owner":"bob","frozen":null}}`) }),
		want:   map[string]any{"owner": "bob", "balance": 100.0},
	}, {
		name:   "CEL credit with integer arithmetic on the object and params",
		target: withExpression(`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`),
		params: `{"amount": 25}`,
		want:   map[string]any{"owner": "alice", "balance": 125.0, "frozen": false},
	}, {
		name: "CEL with several operations and a conditional",
		target: withExpression(`[
			JSONPatch{op: "replace", path: "/spec/frozen", value: object.spec.balance < params.limit},
			JSONPatch{op: "add", path: "/spec/note", value: "checked " + params.who}]`),
		params: `{"limit": 500, "who": "audit"}`,
		want:   map[string]any{"owner": "alice", "balance": 100.0, "frozen": true, "note": "checked audit"},
	}, {
		name:   "CEL with no params reads the object alone",
		target: withExpression(`[JSONPatch{op: "replace", path: "/spec/owner", value: object.spec.owner + "-jr"}]`),
		want:   map[string]any{"owner": "alice-jr", "balance": 100.0, "frozen": false},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := compileAndApply(t, tt.target, tt.params)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got := spec(t, out)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("spec = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileRefusesMalformedMutations(t *testing.T) {
	tests := []struct {
		name    string
		target  *arbiterv1alpha1.Target
		wantErr string
	}{
		{"replace without value", withPatch(arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/spec/frozen"}),
			"jsonPatch[0].value: required for replace"},
		{"remove with a value", withPatch(arbiterv1alpha1.JSONPatchOperation{Op: "remove", Path: "/spec/frozen", Value: raw("1")}),
			"jsonPatch[0].value: not allowed for remove"},
		{"CEL syntax error", withExpression(`[JSONPatch{op: "replace", path: "/spec/balance", value: }]`),
			"expression: ERROR"},
		{"CEL undeclared variable", withExpression(`[JSONPatch{op: "replace", path: "/spec/balance", value: oldObject.spec.balance}]`),
			"undeclared reference to 'oldObject'"},
		{"CEL returning a number", withExpression(`1 + 2`),
			"must return a list of JSONPatch"},
		{"no mutation", account(func(*arbiterv1alpha1.Target) {}),
			"one of jsonPatch, mergePatch or expression must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.target)
			var merr *MutationError
			if !errors.As(err, &merr) {
				t.Fatalf("Compile error = %v, want a *MutationError", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "Account/alice") {
				t.Errorf("Compile error = %q, want it to name Account/alice and contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestApplyFailsCleanlyAtRunTime(t *testing.T) {
	bigList := "[" + strings.Repeat("1,", 3000) + "1]"
	tests := []struct {
		name         string
		target       *arbiterv1alpha1.Target
		params       string
		wantErr      string
		precondition bool
	}{
		{name: "false test op", target: withPatch(
			arbiterv1alpha1.JSONPatchOperation{Op: "test", Path: "/spec/frozen", Value: raw("true")},
			arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/spec/frozen", Value: raw("false")}),
			wantErr: "testing value /spec/frozen failed", precondition: true},
		{name: "replace of a missing path", target: withPatch(
			arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/spec/limits/daily", Value: raw("5")}),
			wantErr: "missing"},
		{name: "CEL reading a missing field", target: withExpression(
			`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.overdraft + 1}]`),
			wantErr: "no such key: overdraft"},
		{name: "CEL reading missing params", target: withExpression(
			`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`),
			wantErr: "no such key: amount"},
		{name: "CEL mixing int and string", target: withExpression(
			`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`),
			params: `{"amount": "ten"}`, wantErr: "no such overload"},
		{name: "CEL over its cost limit", target: withExpression(
			`[JSONPatch{op: "replace", path: "/spec/balance", value: params.xs.map(x, params.xs.map(y, x * y)).size()}]`),
			params: `{"xs": ` + bigList + `}`, wantErr: "cost limit exceeded"},
		{name: "a patch that renames the target", target: account(func(t *arbiterv1alpha1.Target) {
			t.MergePatch = raw(`{"metadata":{"name":"mallory"}}`)
		}), wantErr: "must not change apiVersion, kind, metadata.name"},
		{name: "a patch that moves the target to another namespace", target: withPatch(
			arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/metadata/namespace", Value: raw(`"other"`)}),
			wantErr: "must not change"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := compileAndApply(t, tt.target, tt.params)
			if err == nil {
				t.Fatalf("Apply succeeded with %s, want an error", out)
			}
			var merr *MutationError
			if !errors.As(err, &merr) {
				t.Errorf("error %v is not a *MutationError", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrPreconditionFailed); got != tt.precondition {
				t.Errorf("errors.Is(err, ErrPreconditionFailed) = %v, want %v", got, tt.precondition)
			}
		})
	}
}
