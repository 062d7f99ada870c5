package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/authz"
	"github.com/arbiter-dev/arbiter/internal/kinds"
	"github.com/arbiter-dev/arbiter/internal/staging"
)

// A namespace's census is taken a second after an event, unless its last
// census was costly: then reportSpacing times that cost after, but never
// later than the timer would.
func TestRefreshDelaySpacesCostlyCensuses(t *testing.T) {
	r := &CleanupReconciler{censuses: map[string]*namespaceCensus{
		"cheap":  {cost: 10 * time.Millisecond},
		"costly": {cost: 300 * time.Millisecond},
		"huge":   {cost: 5 * time.Second},
	}}
	for _, tc := range []struct {
		namespace string
		want      time.Duration
	}{
		{"new", policyRefreshDelay},
		{"cheap", policyRefreshDelay},
		{"costly", 6 * time.Second},
		{"huge", healthRefresh},
	} {
		if got := r.refreshDelay(tc.namespace); got != tc.want {
			t.Errorf("refreshDelay(%s) = %v, want %v", tc.namespace, got, tc.want)
		}
	}
}

// A census is charged what it took, but a stall does not count against a
// small namespace: a census of ten operations that took 1.5 s (the process
// descheduled) still lets the next come a second after an event, while one
// of 50,000 that took as long spaces the next to the timer.
func TestCensusCostBoundsAStall(t *testing.T) {
	for _, tc := range []struct {
		took       time.Duration
		operations int
		want       time.Duration
	}{
		{10 * time.Millisecond, 50_000, 10 * time.Millisecond},
		{1500 * time.Millisecond, 50_000, 1500 * time.Millisecond},
		{1500 * time.Millisecond, 10, 11 * censusCostPerOperation},
		{1500 * time.Millisecond, 0, censusCostPerOperation},
	} {
		if got := censusCost(tc.took, tc.operations); got != tc.want {
			t.Errorf("censusCost(%v, %d) = %v, want %v", tc.took, tc.operations, got, tc.want)
		}
	}
	r := &CleanupReconciler{censuses: map[string]*namespaceCensus{
		"small": {cost: censusCost(1500*time.Millisecond, 10)},
		"large": {cost: censusCost(1500*time.Millisecond, 50_000)},
	}}
	if got := r.refreshDelay("small"); got != policyRefreshDelay {
		t.Errorf("after a stalled census of 10 operations, refreshDelay = %v, want %v", got, policyRefreshDelay)
	}
	if got := r.refreshDelay("large"); got != healthRefresh {
		t.Errorf("after a 1.5 s census of 50,000 operations, refreshDelay = %v, want %v", got, healthRefresh)
	}
}

// Before recovery is done, a finished operation is still let go (its
// finalizer released), while an unfinished one waits for recovery: after a
// restart among thousands of zombies, they must not spin on notReadyRetry.
func TestFinishedOperationsDoNotWaitForRecovery(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	finished := &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "rejected", Finalizers: []string{arbiterv1alpha1.CleanupFinalizer}},
		Status:     arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: arbiterv1alpha1.PhaseRejected},
	}
	pending := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "pending"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(finished, pending).
		WithStatusSubresource(&arbiterv1alpha1.ConflictResolutionOperation{}).Build()
	r := &OperationReconciler{Client: c, Arbiter: staging.NewArbiter()} // not ready: recovery is running

	res, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(finished)})
	if err != nil || res.RequeueAfter != 0 {
		t.Fatalf("finished operation: got %+v, %v; want it let go at once", res, err)
	}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(finished), finished); err != nil {
		t.Fatal(err)
	}
	if len(finished.Finalizers) != 0 {
		t.Errorf("finished operation keeps finalizers %v before recovery is done", finished.Finalizers)
	}

	res, err = r.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pending)})
	if err != nil || res.RequeueAfter != notReadyRetry {
		t.Errorf("pending operation: got %+v, %v; want it to wait %v for recovery", res, err, notReadyRetry)
	}
}

// A chain of parents is read at most maxParentDepth long: a tenant who
// builds a long one, one operation at a time, gets its operations failed
// InvalidParent after as many reads, not a walk of the whole chain on the
// shared workers for each.
func TestParentChainsAreBounded(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	requester := &arbiterv1alpha1.RequesterInfo{Username: "alice", UID: "1"}
	chain := func(length int, missingParent bool) []client.Object {
		// op-0 names op-1 as parent, ... op-(length-1) names none, or one
		// that does not exist.
		var ops []client.Object
		for i := range length {
			op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: fmt.Sprintf("op-%d", i)},
				Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Priority: int32(i), RequestedBy: requester}}
			if i+1 < length || missingParent {
				op.Spec.ParentRef = &arbiterv1alpha1.OperationReference{Name: fmt.Sprintf("op-%d", i+1)}
			}
			ops = append(ops, op)
		}
		return ops
	}
	for _, tc := range []struct {
		length        int
		missingParent bool
		priority      int32 // 0: InvalidParent
	}{
		{maxParentDepth + 1, false, maxParentDepth}, // op-0 and its 32 parents
		{maxParentDepth + 1, true, maxParentDepth},  // the last names one that does not exist
		{maxParentDepth + 2, false, 0},
		{10_000, false, 0},
	} {
		ops := chain(tc.length, tc.missingParent)
		reads := 0
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ops...).WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				reads++
				return c.Get(ctx, key, obj, opts...)
			}}).Build()
		r := &OperationReconciler{Client: c}
		priority, _, err := r.effectivePriority(t.Context(), ops[0].(*arbiterv1alpha1.ConflictResolutionOperation))
		invalid := (*invalidParentError)(nil)
		switch {
		case tc.priority != 0 && (err != nil || priority != tc.priority):
			t.Errorf("a chain of %d parents: priority %d, %v; want %d", tc.length-1, priority, err, tc.priority)
		case tc.priority == 0 && !errors.As(err, &invalid):
			t.Errorf("a chain of %d parents: priority %d, %v; want InvalidParent", tc.length-1, priority, err)
		case tc.priority == 0 && !strings.Contains(err.Error(), "spec.parentRef"):
			t.Errorf("the error %q does not name spec.parentRef", err)
		}
		if reads > maxParentDepth+1 {
			t.Errorf("a chain of %d parents took %d reads, want at most %d", tc.length-1, reads, maxParentDepth+1)
		}
	}
}

// A queued operation is written once when it is queued, not again each
// time its target changes hands while it waits: a queue of N would cost
// N²/2 status writes. Its status keeps naming the batch that queued it.
func TestRequeuingAQueuedOperationWritesNothing(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "waiter", Generation: 1},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Priority: 1}}
	patches := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(op).WithStatusSubresource(op).WithInterceptorFuncs(interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			patches++
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		}}).Build()
	r := &OperationReconciler{Client: c, Arbiter: staging.NewArbiter()}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(op), op); err != nil {
		t.Fatal(err)
	}
	// The arbiter's staging time has nanoseconds; status keeps microseconds.
	st := staged{priority: 1, at: time.Unix(1000, 123456789)}
	for i, winner := range []string{"first", "second", "third"} {
		// Each turn reads the operation afresh, as the cache holds it.
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(op), op); err != nil {
			t.Fatal(err)
		}
		v := staging.Verdict{Kind: staging.Queue, Winner: types.NamespacedName{Namespace: "a", Name: winner}, StagedAt: st.at, Priority: 1}
		if _, err := r.onQueued(t.Context(), op, st, v); err != nil {
			t.Fatalf("queued behind %s: %v", winner, err)
		}
		if patches != 1 {
			t.Fatalf("after %d queuings, %d status writes; want 1", i+1, patches)
		}
	}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(op), op); err != nil {
		t.Fatal(err)
	}
	if op.Status.Phase != arbiterv1alpha1.PhaseQueued || op.Status.Winner != "first" || !strings.Contains(op.Status.Message, "losing a batch to first") {
		t.Fatalf("status %s, winner %q, message %q; want Queued naming the batch that queued it", op.Status.Phase, op.Status.Winner, op.Status.Message)
	}
	// A change that matters is written: a new effective priority.
	st.priority = 5
	if _, err := r.onQueued(t.Context(), op, st, staging.Verdict{Kind: staging.Queue, Winner: types.NamespacedName{Namespace: "a", Name: "fourth"}, StagedAt: st.at, Priority: 5}); err != nil {
		t.Fatal(err)
	}
	if patches != 2 {
		t.Fatalf("a new effective priority made %d status writes in all, want 2", patches)
	}
}

// An object named twice, in two versions of its group, is refused before
// anything is written: it would be written twice, the second time found
// applied by the first write's record.
func TestAnObjectTargetedInTwoVersionsIsRefused(t *testing.T) {
	r := &OperationReconciler{Kinds: &kinds.Mapper{Discover: func() (meta.RESTMapper, error) {
		m := meta.NewDefaultRESTMapper(nil)
		for _, v := range []string{"v1", "v2"} {
			m.Add(schema.GroupVersionKind{Group: "autoscaling", Version: v, Kind: "HorizontalPodAutoscaler"}, meta.RESTScopeNamespace)
		}
		return m, nil
	}}}
	op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "scale"}}
	for _, v := range []string{"autoscaling/v1", "autoscaling/v2"} {
		op.Spec.Targets = append(op.Spec.Targets, arbiterv1alpha1.Target{APIVersion: v, Kind: "HorizontalPodAutoscaler", Name: "web",
			MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{"minReplicas":2}}`)}})
	}
	f, err := r.checkTargets(t.Context(), op)
	if err != nil {
		t.Fatal(err)
	}
	if f == nil || f.Reason != arbiterv1alpha1.ReasonInvalidMutation || !strings.Contains(f.Message, "spec.targets[1] names the same object as spec.targets[0]") {
		t.Fatalf("failure %v, want InvalidMutation naming spec.targets[1]", f)
	}
}

// Before every target write the requester's access is asked again; when
// the review cannot be made, the write waits for an answer instead of
// passing unchecked, and a refusal stops the execution as Forbidden.
func TestAWriteWaitsWhileTheRequestersAccessCannotBeChecked(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{arbiterv1alpha1.AddToScheme, authorizationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "credit", CreationTimestamp: metav1.Now()},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{RequestedBy: &arbiterv1alpha1.RequesterInfo{Username: "alice"},
			Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "account"}}}}
	answer := func(*authorizationv1.SubjectAccessReview) error {
		return apierrors.NewServiceUnavailable("the authorizer is down")
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(op).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if sar, ok := obj.(*authorizationv1.SubjectAccessReview); ok {
				return answer(sar)
			}
			return c.Create(ctx, obj, opts...)
		}}).Build()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	r := &OperationReconciler{Client: c, Arbiter: staging.NewArbiter(), Authz: &authz.Checker{Client: c, Mapper: mapper}}
	f, err := r.stopReason(t.Context(), op)
	if f != nil || !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("with the review unanswered: failure %v, error %v; want the error, for the write to wait", f, err)
	}
	answer = func(sar *authorizationv1.SubjectAccessReview) error {
		sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: false, Reason: "no RBAC policy matched"}
		return nil
	}
	f, err = r.stopReason(t.Context(), op)
	if err != nil || f == nil || f.Reason != arbiterv1alpha1.ReasonForbidden {
		t.Fatalf("with the review refused: failure %v, error %v; want Forbidden", f, err)
	}
	// A kind no longer served cannot be asked about, ever: the write does
	// not wait for its timeout, the target is gone.
	r.Authz = &authz.Checker{Client: c, Mapper: meta.NewDefaultRESTMapper(nil)}
	f, err = r.stopReason(t.Context(), op)
	if err != nil || f == nil || f.Reason != arbiterv1alpha1.ReasonTargetNotFound {
		t.Fatalf("with the kind no longer served: failure %v, error %v; want TargetNotFound", f, err)
	}
}

// The execution is this manager's from before its Executing write is sent:
// when that write lands but its answer is lost, the next call still ignores
// a record on a target that this execution did not write.
func TestAnExecutionIsThisManagersEvenWhenItsExecutingWriteIsLost(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "credit", UID: "uid-1", Generation: 1},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Priority: 1, Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "account"}}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(op).WithStatusSubresource(op).WithInterceptorFuncs(interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if err := c.SubResource(sub).Patch(ctx, obj, patch, opts...); err != nil {
				return err
			}
			return errors.New("connection reset by peer") // landed, answer lost
		}}).Build()
	r := &OperationReconciler{Client: c, Arbiter: staging.NewArbiter()}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(op), op); err != nil {
		t.Fatal(err)
	}
	v := staging.Verdict{Kind: staging.Win, StagedAt: time.Now(), Priority: 1}
	if _, err := r.onWon(t.Context(), op, staged{priority: 1, at: v.StagedAt}, v); err == nil {
		t.Fatal("onWon with its Executing write's answer lost returned no error")
	}
	stored := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(op), stored); err != nil || stored.Status.Phase != arbiterv1alpha1.PhaseExecuting {
		t.Fatalf("stored phase %q (%v); the test's write should have landed", stored.Status.Phase, err)
	}
	if !r.executions.of(stored).StartedHere {
		t.Fatal("the execution whose Executing write landed with its answer lost is not this manager's")
	}
	// A write the API server refused did not land: the execution is not
	// taken as this manager's until its Executing write is.
	refused := op.DeepCopy()
	refused.Name, refused.UID = "refused", "uid-2"
	refused.Status = arbiterv1alpha1.ConflictResolutionOperationStatus{}
	c2 := fake.NewClientBuilder().WithScheme(scheme).WithObjects(refused).WithStatusSubresource(refused).WithInterceptorFuncs(interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return apierrors.NewConflict(schema.GroupResource{Group: "arbiter.dev", Resource: "conflictresolutionoperations"}, "refused", errors.New("stale"))
		}}).Build()
	r.Client = c2
	if err := c2.Get(t.Context(), client.ObjectKeyFromObject(refused), refused); err != nil {
		t.Fatal(err)
	}
	if _, err := r.onWon(t.Context(), refused, staged{priority: 1, at: v.StagedAt}, v); err == nil {
		t.Fatal("onWon with its Executing write refused returned no error")
	}
	if r.executions.of(refused).StartedHere {
		t.Fatal("an execution whose Executing write was refused is taken as this manager's")
	}
}

// A parent lends its priority only to an operation of the same requester in
// the same groups: a group that admission policies reserve high priorities
// to, lost since the parent was created, lends nothing.
func TestAParentLendsOnlyToItsRequesterInTheSameGroups(t *testing.T) {
	op := func(groups ...string) *arbiterv1alpha1.ConflictResolutionOperation {
		return &arbiterv1alpha1.ConflictResolutionOperation{Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			RequestedBy: &arbiterv1alpha1.RequesterInfo{Username: "alice", UID: "1", Groups: groups}}}
	}
	for _, c := range []struct {
		parent, child *arbiterv1alpha1.ConflictResolutionOperation
		lends         bool
	}{
		{op("dev", "oncall"), op("oncall", "dev"), true},
		{op("dev", "oncall"), op("dev"), false},
		{op("dev"), op("dev", "oncall"), false},
	} {
		if why := whyNotLending(c.child, c.parent); (why == "") != c.lends {
			t.Errorf("parent in %v, child in %v: %q, want lending %v", c.parent.Spec.RequestedBy.Groups, c.child.Spec.RequestedBy.Groups, why, c.lends)
		}
	}
}
