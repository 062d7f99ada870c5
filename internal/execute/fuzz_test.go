package execute

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// FuzzMutation feeds hostile mutations and params to Compile and Apply: they
// must never panic, fail only with a *MutationError, and on success return a
// JSON object that is still the same target.
func FuzzMutation(f *testing.F) {
	f.Add(`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`, `{"amount": 5}`, `{"spec":{"owner":"x"}}`)
	f.Add(`[JSONPatch{op: "add", path: "/metadata/name", value: "mallory"}]`, `{}`, `{"metadata":{"name":"mallory"}}`)
	f.Add(`params.xs.map(x, params.xs.map(y, [JSONPatch{op: "remove", path: "/spec"}]))[0][0]`, `{"xs": [1,2,3]}`, `null`)
	f.Add(`[JSONPatch{op: "test", path: "/spec/frozen", value: true}]`, `{"a": {"b": {"c": {"d": [[[[1]]]]}}}}`, `[]`)
	f.Add(`"x".repeat(100000)`, `1`, `{"spec":{"balance":-1e308}}`)
	f.Fuzz(func(t *testing.T, expression, params, mergePatch string) {
		for _, target := range []*arbiterv1alpha1.Target{
			withExpression(expression),
			account(func(tg *arbiterv1alpha1.Target) { tg.MergePatch = &apiextensionsv1.JSON{Raw: []byte(mergePatch)} }),
		} {
			m, err := Compile(target)
			if err != nil {
				var merr *MutationError
				if !errors.As(err, &merr) {
					t.Fatalf("Compile error %v is not a *MutationError", err)
				}
				continue
			}
			out, err := m.Apply(context.Background(), []byte(alice), []byte(params))
			if err != nil {
				var merr *MutationError
				if !errors.As(err, &merr) {
					t.Fatalf("Apply error %v is not a *MutationError", err)
				}
				continue
			}
			var obj map[string]any
			if err := json.Unmarshal(out, &obj); err != nil {
				t.Fatalf("Apply returned no JSON object: %v", err)
			}
			if err := sameIdentity([]byte(alice), out); err != nil {
				t.Fatalf("Apply changed the target's identity: %s", out)
			}
		}
	})
}
