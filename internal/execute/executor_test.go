package execute

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// executorOn is an Executor over a fake API holding ConfigMap default/cm;
// updates go through onUpdate when it is set. It counts the updates made.
func executorOn(t *testing.T, onUpdate func() error) (*Executor, client.Client, *int) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	updates := 0
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cm"}, Data: map[string]string{"k": "before"}}).
		WithInterceptorFuncs(interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			updates++
			if onUpdate != nil {
				if err := onUpdate(); err != nil {
					return err
				}
			}
			return c.Update(ctx, obj, opts...)
		}}).Build()
	return &Executor{Reader: c, Writer: c}, c, &updates
}

func mergeRequest(params string) Request {
	return Request{
		UID: "uid-1", Namespace: "default", Params: []byte(params),
		Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm",
			Expression: `[JSONPatch{op: "replace", path: "/data/k", value: "after"}]`}},
		Backoff: Backoff{MaxRetries: 3},
		Stop:    func() (*Failure, error) { return nil, nil },
	}
}

// expectUntouched fails unless default/cm still holds its first value.
func expectUntouched(t *testing.T, c client.Client) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "cm"}, cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["k"] != "before" || cm.Annotations[arbiterv1alpha1.AppliedAnnotation] != "" {
		t.Fatalf("target was written: data %v, annotations %v", cm.Data, cm.Annotations)
	}
}

func TestExecuteRefusesOversizedParamsWithoutWriting(t *testing.T) {
	e, c, updates := executorOn(t, nil)
	res, err := e.Execute(context.Background(), mergeRequest(strings.Repeat("[", MaxParamsDepth+1)+strings.Repeat("]", MaxParamsDepth+1)), &Progress{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonInvalidMutation || !strings.Contains(res.Failure.Message, "spec.params") {
		t.Fatalf("Failure = %v, want InvalidMutation naming spec.params", res.Failure)
	}
	if *updates != 0 {
		t.Fatalf("%d updates made, want none", *updates)
	}
	expectUntouched(t, c)
}

func TestExecuteFailsAtOnceWhenTheTargetIsTooLargeToStore(t *testing.T) {
	e, c, updates := executorOn(t, func() error {
		return apierrors.NewRequestEntityTooLargeError("limit is 3145728")
	})
	res, err := e.Execute(context.Background(), mergeRequest(`{}`), &Progress{})
	if err != nil {
		t.Fatalf("a target too large to store is permanent, not transient: %v", err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonInvalidMutation || !strings.Contains(res.Failure.Message, "larger than the API server stores") {
		t.Fatalf("Failure = %v, want InvalidMutation saying the target is too large", res.Failure)
	}
	if *updates != 1 {
		t.Fatalf("%d updates tried, want 1: a refused size is not retried", *updates)
	}
	expectUntouched(t, c)
}
