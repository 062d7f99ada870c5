package v1alpha1

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// The defaults in Go and the `default:` the API server applies from the
// generated CRD must be one and the same.
func TestDefaultsMatchTheCRD(t *testing.T) {
	spec := operationSchema(t).Properties["spec"]
	crdDefault := func(path ...string) string {
		s := spec
		for _, p := range path {
			s = s.Properties[p]
		}
		if s.Default == nil {
			t.Fatalf("spec.%v has no default in the CRD", path)
		}
		var v any
		if err := yaml.Unmarshal(s.Default.Raw, &v); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(v)
	}
	duration := func(path ...string) time.Duration {
		d, err := time.ParseDuration(crdDefault(path...))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var empty ConflictResolutionOperationSpec
	for name, tc := range map[string]struct{ crd, code any }{
		"timeout":            {duration("timeout"), empty.TimeoutOrDefault()},
		"gracePeriod":        {duration("gracePeriod"), empty.GracePeriodOrDefault()},
		"staging.window":     {duration("staging", "window"), empty.Staging.WindowOrDefault()},
		"occ.baseDelay":      {duration("occ", "baseDelay"), empty.OCC.BaseDelayOrDefault()},
		"occ.maxDelay":       {duration("occ", "maxDelay"), empty.OCC.MaxDelayOrDefault()},
		"occ.maxRetries":     {crdDefault("occ", "maxRetries"), strconv.Itoa(empty.OCC.MaxRetriesOrDefault())},
		"occ.backoffFactor":  {crdDefault("occ", "backoffFactor"), strconv.FormatFloat(empty.OCC.BackoffFactorOrDefault(), 'f', -1, 64)},
		"staging.onConflict": {crdDefault("staging", "onConflict"), string(ConflictPolicyReject)},
		"priority":           {crdDefault("priority"), strconv.Itoa(int(PriorityNormal))},
	} {
		if tc.crd != tc.code {
			t.Errorf("spec.%s: the CRD defaults to %v, the code to %v", name, tc.crd, tc.code)
		}
	}
}

// operationSchema is the schema of the generated operation CRD in
// config/crd/bases, as the API server is given it.
func operationSchema(tb testing.TB) *apiextensionsv1.JSONSchemaProps {
	raw, err := os.ReadFile("../../config/crd/bases/arbiter.dev_conflictresolutionoperations.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		tb.Fatal(err)
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
}
