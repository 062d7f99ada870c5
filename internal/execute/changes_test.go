package execute

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestDiffAndRevert(t *testing.T) {
	const big = int64(1<<60 + 1) // not a float64: rounds to 1<<60
	for _, tc := range []struct {
		name        string
		before      map[string]any
		after       map[string]any
		current     map[string]any // the target at rollback time
		wantChanged []string
		wantDoc     map[string]any
	}{
		{
			name:    "a replaced leaf is restored",
			before:  map[string]any{"spec": map[string]any{"balance": int64(100), "owner": "alice"}},
			after:   map[string]any{"spec": map[string]any{"balance": float64(200), "owner": "alice"}},
			current: map[string]any{"spec": map[string]any{"balance": int64(200), "owner": "alice"}},
			wantDoc: map[string]any{"spec": map[string]any{"balance": int64(100), "owner": "alice"}},
		},
		{
			name:        "a leaf changed since is left alone and named",
			before:      map[string]any{"spec": map[string]any{"balance": int64(100)}},
			after:       map[string]any{"spec": map[string]any{"balance": int64(200)}},
			current:     map[string]any{"spec": map[string]any{"balance": int64(250)}},
			wantChanged: []string{"/spec/balance"},
			wantDoc:     map[string]any{"spec": map[string]any{"balance": int64(250)}},
		},
		{
			name:        "large integers are compared exactly",
			before:      map[string]any{"spec": map[string]any{"n": int64(1)}},
			after:       map[string]any{"spec": map[string]any{"n": big}},
			current:     map[string]any{"spec": map[string]any{"n": big - 1}},
			wantChanged: []string{"/spec/n"},
			wantDoc:     map[string]any{"spec": map[string]any{"n": big - 1}},
		},
		{
			name:    "an added key is removed, keys with / and ~ escaped",
			before:  map[string]any{"data": map[string]any{}},
			after:   map[string]any{"data": map[string]any{"a/b~c": "x"}},
			current: map[string]any{"data": map[string]any{"a/b~c": "x"}},
			wantDoc: map[string]any{"data": map[string]any{}},
		},
		{
			name:   "a created annotations map is removed, with arbiter's record in it",
			before: map[string]any{"metadata": map[string]any{"name": "a"}},
			after:  map[string]any{"metadata": map[string]any{"name": "a", "annotations": map[string]any{"team": "payments"}}},
			current: map[string]any{"metadata": map[string]any{"name": "a", "resourceVersion": "9",
				"annotations": map[string]any{"team": "payments", "arbiter.dev/applied": "uid-1"}}},
			wantDoc: map[string]any{"metadata": map[string]any{"name": "a", "resourceVersion": "9"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changes := diff(tc.before, tc.after)
			changed := revert(tc.current, changes)
			if !slices.Equal(changed, tc.wantChanged) {
				t.Fatalf("revert named %v, want %v (changes %s)", changed, tc.wantChanged, describe(changes))
			}
			if !equalJSON(tc.current, tc.wantDoc) {
				t.Fatalf("after revert %v, want %v", tc.current, tc.wantDoc)
			}
		})
	}
	if got := (change{path: []string{"data", "a/b~c"}}).pointer(); got != "/data/a~1b~0c" {
		t.Errorf("pointer = %q", got)
	}
}

func equalJSON(a, b any) bool {
	return fmtJSON(normalize(a)) == fmtJSON(normalize(b))
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
