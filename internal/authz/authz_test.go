package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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

// authorizer answers SubjectAccessReviews on a fake API: allow decides
// each, and reviews counts them.
type authorizer struct {
	mu      sync.Mutex
	reviews int
	allow   func(authorizationv1.ResourceAttributes) bool
	// allowSpec, when set, decides instead of allow, seeing who asks.
	allowSpec func(authorizationv1.SubjectAccessReviewSpec) bool
	// gate, when set, holds every review until it is closed.
	gate chan struct{}
}

func (a *authorizer) checker(t *testing.T, clk *clocktesting.FakePassiveClock) *Checker {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			sar, ok := obj.(*authorizationv1.SubjectAccessReview)
			if !ok {
				return errors.New("unexpected create")
			}
			if a.gate != nil {
				<-a.gate
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			a.reviews++
			if a.allowSpec != nil {
				sar.Status.Allowed = a.allowSpec(sar.Spec)
			} else {
				sar.Status.Allowed = a.allow(*sar.Spec.ResourceAttributes)
			}
			return nil
		}}).Build()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	return &Checker{Client: c, Mapper: mapper, Clock: clk, TTL: 10 * time.Second}
}

func (a *authorizer) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reviews
}

func operationOn(names ...string) *arbiterv1alpha1.ConflictResolutionOperation {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	op.Namespace = "team"
	op.Spec.RequestedBy = &arbiterv1alpha1.RequesterInfo{Username: "pat"}
	for _, n := range names {
		op.Spec.Targets = append(op.Spec.Targets, arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: n})
	}
	return op
}

// A storm from one requester costs one review per verb for the whole
// namespace, and a revoked permission takes effect once the TTL has passed.
func TestAnswersAreReusedForTheirTTL(t *testing.T) {
	allowed := true
	a := &authorizer{allow: func(authorizationv1.ResourceAttributes) bool { return allowed }}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	checker := a.checker(t, clk)
	op := operationOn("settings")

	for i := range 100 {
		if err := checker.Check(context.Background(), operationOn(fmt.Sprintf("cm-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if a.count() != len(Verbs) {
		t.Fatalf("%d reviews for 100 targets, want %d (one per verb, for the namespace)", a.count(), len(Verbs))
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

// A role limited to resourceNames allows the one object, not the namespace.
func TestAPerNameRoleIsAskedAboutTheName(t *testing.T) {
	a := &authorizer{allow: func(attrs authorizationv1.ResourceAttributes) bool { return attrs.Name == "settings" }}
	checker := a.checker(t, clocktesting.NewFakePassiveClock(time.Unix(1000, 0)))
	if err := checker.Check(context.Background(), operationOn("settings")); err != nil {
		t.Fatalf("Check(settings) = %v, want allowed by name", err)
	}
	var denied *Denied
	if err := checker.Check(context.Background(), operationOn("other")); !errors.As(err, &denied) {
		t.Fatalf("Check(other) = %v, want Denied", err)
	}
}

// Concurrent checks of the same question share one review.
func TestConcurrentChecksShareOneReview(t *testing.T) {
	a := &authorizer{allow: func(authorizationv1.ResourceAttributes) bool { return true }, gate: make(chan struct{})}
	checker := a.checker(t, clocktesting.NewFakePassiveClock(time.Unix(1000, 0)))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := checker.Check(context.Background(), operationOn("settings")); err != nil {
				t.Error(err)
			}
		})
	}
	// Every checker waits on the first review of get; let them all in.
	close(a.gate)
	wg.Wait()
	if a.count() != len(Verbs) {
		t.Fatalf("%d reviews for 20 concurrent checks, want %d", a.count(), len(Verbs))
	}
}

func TestNoRequesterFailsClosed(t *testing.T) {
	var denied *Denied
	if err := (&Checker{}).Check(context.Background(), &arbiterv1alpha1.ConflictResolutionOperation{}); !errors.As(err, &denied) {
		t.Fatalf("Check = %v, want Denied", err)
	}
}

// Requesters who differ only in how their groups or extra would join into
// one string are asked about separately: an answer for the groups ["a,b"]
// (an LDAP name holds commas) is not reused for ["a", "b"].
func TestRequestersWhoseGroupsJoinAlikeAreAskedSeparately(t *testing.T) {
	a := &authorizer{allowSpec: func(spec authorizationv1.SubjectAccessReviewSpec) bool {
		return slices.Equal(spec.Groups, []string{"a", "b"}) && len(spec.Extra["scopes"]) == 2
	}}
	checker := a.checker(t, clocktesting.NewFakePassiveClock(time.Unix(1000, 0)))
	as := func(groups []string, scopes ...string) error {
		op := operationOn("settings")
		op.Spec.RequestedBy.Groups = groups
		op.Spec.RequestedBy.Extra = map[string][]string{"scopes": scopes}
		return checker.Check(context.Background(), op)
	}
	var denied *Denied
	if err := as([]string{"a,b"}, "x", "y"); !errors.As(err, &denied) {
		t.Fatalf("groups [a,b]: %v, want Denied", err)
	}
	if err := as([]string{"a", "b"}, "x y"); !errors.As(err, &denied) {
		t.Fatalf("extra scopes [x y]: %v, want Denied", err)
	}
	if err := as([]string{"a", "b"}, "x", "y"); err != nil {
		t.Fatalf("groups [a b] with scopes [x y] were given another requester's answer: %v", err)
	}
}
