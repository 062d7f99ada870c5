package execute

import (
	"context"
	"testing"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// BenchmarkMutation measures evaluating each kind of mutation on an Account.
func BenchmarkMutation(b *testing.B) {
	targets := map[string]*arbiterv1alpha1.Target{
		"jsonPatch": withPatch(
			arbiterv1alpha1.JSONPatchOperation{Op: "test", Path: "/spec/frozen", Value: raw("false")},
			arbiterv1alpha1.JSONPatchOperation{Op: "replace", Path: "/spec/frozen", Value: raw("true")}),
		"mergePatch":    account(func(t *arbiterv1alpha1.Target) { t.MergePatch = raw(`{"spec":{"owner":"bob"}}`) }),
		"celExpression": withExpression(`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`),
	}
	params := []byte(`{"amount": 25}`)
	for name, t := range targets {
		b.Run("compile/"+name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Compile(t); err != nil {
					b.Fatal(err)
				}
			}
		})
		m, err := Compile(t)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("apply/"+name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Apply(context.Background(), []byte(alice), params); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
