package execute

import (
	"strings"
	"testing"
)

func TestCheckParams(t *testing.T) {
	nested := func(depth int) string {
		return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	}
	for _, tc := range []struct {
		name, params, wantErr string
	}{
		{name: "empty", params: ``},
		{name: "flat", params: `{"amount": 5, "note": "x"}`},
		{name: "deepest allowed", params: nested(MaxParamsDepth)},
		{name: "arrays count as levels", params: `{"a":` + strings.Repeat("[", MaxParamsDepth) + strings.Repeat("]", MaxParamsDepth) + `}`,
			wantErr: "more than 32 levels deep"},
		{name: "one level too deep", params: nested(MaxParamsDepth + 1), wantErr: "more than 32 levels deep"},
		{name: "largest allowed", params: `{"s":"` + strings.Repeat("x", MaxParamsBytes-8) + `"}`},
		{name: "one byte too large", params: `{"s":"` + strings.Repeat("x", MaxParamsBytes-7) + `"}`,
			wantErr: "is 262145 bytes of JSON; at most 262144 are allowed"},
		{name: "broken JSON", params: `{"a":`, wantErr: "is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckParams([]byte(tc.params))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("CheckParams: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("CheckParams error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
