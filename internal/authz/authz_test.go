package authz

import (
	"context"
	"errors"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// A storm from one requester costs one review per verb and target, and a
// revoked permission takes effect once the TTL has passed.
func TestAnswersAreReusedForTheirTTL(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	allowed, reviews := true, 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			sar, ok := obj.(*authorizationv1.SubjectAccessReview)
			if !ok {
				return errors.New("unexpected create")
			}
			reviews++
			sar.Status.Allowed = allowed
			return nil
		}}).Build()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	checker := &Checker{Client: c, Mapper: mapper, Clock: clk, TTL: 10 * time.Second}
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	op.Namespace = "team"
	op.Spec.RequestedBy = &arbiterv1alpha1.RequesterInfo{Username: "pat"}
	op.Spec.Targets = []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "settings"}}

	for range 100 {
		if err := checker.Check(context.Background(), op); err != nil {
			t.Fatal(err)
		}
	}
	if reviews != len(Verbs) {
		t.Fatalf("%d reviews for 100 checks, want %d (one per verb)", reviews, len(Verbs))
	}
	allowed = false // revoked
	clk.SetTime(clk.Now().Add(9 * time.Second))
	if err := checker.Check(context.Background(), op); err != nil {
		t.Fatalf("within the TTL the answer is reused: %v", err)
	}
	clk.SetTime(clk.Now().Add(2 * time.Second))
	var denied *Denied
	if err := checker.Check(context.Background(), op); !errors.As(err, &denied) {
		t.Fatalf("past the TTL, Check = %v, want Denied", err)
	}
}

func TestNoRequesterFailsClosed(t *testing.T) {
	var denied *Denied
	if err := (&Checker{}).Check(context.Background(), &arbiterv1alpha1.ConflictResolutionOperation{}); !errors.As(err, &denied) {
		t.Fatalf("Check = %v, want Denied", err)
	}
}
