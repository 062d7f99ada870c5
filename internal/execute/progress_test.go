package execute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// fakeTargets is a fake API holding the given ConfigMaps in namespace
// default; conflict, when set, answers an update of a ConfigMap with a 409
// while it returns true.
type fakeTargets struct {
	client.Client
	updates  int
	conflict func(name string) bool
	refuse   func(name string) error
}

func newFakeTargets(t *testing.T, cms ...*corev1.ConfigMap) *fakeTargets {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &fakeTargets{}
	objs := make([]client.Object, len(cms))
	for i, cm := range cms {
		cm.Namespace = "default"
		objs[i] = cm
	}
	f.Client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			f.updates++
			if f.conflict != nil && f.conflict(obj.GetName()) {
				return apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, obj.GetName(), errors.New("changed"))
			}
			if f.refuse != nil {
				if err := f.refuse(obj.GetName()); err != nil {
					return err
				}
			}
			return c.Update(ctx, obj, opts...)
		}}).Build()
	return f
}

func (f *fakeTargets) configMap(t *testing.T, name string) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := f.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

func cm(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
}

func patchTarget(name string, ops ...arbiterv1alpha1.JSONPatchOperation) arbiterv1alpha1.Target {
	return arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: name, JSONPatch: ops}
}

func replaceData(key, value string) arbiterv1alpha1.JSONPatchOperation {
	return arbiterv1alpha1.JSONPatchOperation{Op: arbiterv1alpha1.JSONPatchOpReplace, Path: "/data/" + key, Value: raw(fmt.Sprintf("%q", value))}
}

func requestFor(targets ...arbiterv1alpha1.Target) Request {
	return Request{UID: "uid-1", Namespace: "default", Targets: targets,
		Backoff: Backoff{MaxRetries: 3, Base: time.Hour, Factor: 1, Max: time.Hour},
		Stop:    func() (*Failure, error) { return nil, nil }}
}

func TestExecuteBacksOffWithoutWaitingAndGoesOnWhereItStopped(t *testing.T) {
	conflicts := 2
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	f.conflict = func(name string) bool {
		if name == "b" && conflicts > 0 {
			conflicts--
			return true
		}
		return false
	}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	e := &Executor{Reader: f, Writer: f, Clock: clk}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	var p Progress

	// An hour's backoff returns at once: nothing sleeps in the caller.
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil || res.Failure != nil {
		t.Fatalf("Execute = %v, %v", res.Failure, err)
	}
	if res.Done() || !res.RetryAt.After(clk.Now()) {
		t.Fatalf("RetryAt = %v, want a time after %v", res.RetryAt, clk.Now())
	}
	if len(p.Targets) != 1 || p.Conflicts != 1 {
		t.Fatalf("progress = %d targets, %d conflicts; want a written, 1 conflict on b", len(p.Targets), p.Conflicts)
	}
	// Called again before the backoff ends: no write.
	updates := f.updates
	if res, err = e.Execute(context.Background(), req, &p); err != nil || res.Done() || f.updates != updates {
		t.Fatalf("early call: done %v, err %v, %d new updates; want none", res.Done(), err, f.updates-updates)
	}
	for !res.Done() {
		clk.SetTime(res.RetryAt)
		if res, err = e.Execute(context.Background(), req, &p); err != nil {
			t.Fatal(err)
		}
	}
	if res.Failure != nil || len(res.Targets) != 2 {
		t.Fatalf("Failure = %v, %d targets; want both applied", res.Failure, len(res.Targets))
	}
	// a was written once, b three times (two 409s, then the write).
	if res.Attempts != 4 || f.updates != 4 {
		t.Fatalf("attempts %d, updates %d; want 4 and 4", res.Attempts, f.updates)
	}
	if f.configMap(t, "a").Data["k"] != "2" || f.configMap(t, "b").Data["k"] != "2" {
		t.Fatal("a target was not written")
	}
}

// aWrittenThenBAlwaysConflicting is a two-target execution whose second
// target meets a 409 at every write.
func aWrittenThenBAlwaysConflicting(t *testing.T) (*fakeTargets, *clocktesting.FakePassiveClock, *Executor, Request) {
	t.Helper()
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	f.conflict = func(name string) bool { return name == "b" }
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	return f, clk, &Executor{Reader: f, Writer: f, Clock: clk},
		requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
}

func TestExecuteEndsConflictRetriesExhaustedAndRollsBack(t *testing.T) {
	f, clk, e, req := aWrittenThenBAlwaysConflicting(t)
	var p Progress
	res, err := e.Execute(context.Background(), req, &p)
	for ; err == nil && !res.Done(); res, err = e.Execute(context.Background(), req, &p) {
		clk.SetTime(res.RetryAt)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack || !strings.Contains(res.Failure.Message, "rolled back ConfigMap default/a") {
		t.Fatalf("Failure = %v, want RolledBack with a rolled back", res.Failure)
	}
	if !strings.Contains(res.Failure.Message, "4 attempts (maxRetries 3)") {
		t.Fatalf("message %q does not count the attempts", res.Failure.Message)
	}
	if got := f.configMap(t, "a"); got.Data["k"] != "1" || got.Annotations[arbiterv1alpha1.AppliedAnnotation] != "" {
		t.Fatalf("a not restored: %v %v", got.Data, got.Annotations)
	}
}

// Params are checked and mutations compiled once an execution: the calls
// that any edit of the operation brings during a backoff do not scan them
// again (the spec is immutable, so they cannot change).
func TestAnExecutionChecksItsParamsOnce(t *testing.T) {
	_, _, e, req := aWrittenThenBAlwaysConflicting(t)
	req.Params = []byte(`{"amount": 1}`)
	var p Progress
	if res, err := e.Execute(context.Background(), req, &p); err != nil || res.Done() {
		t.Fatalf("want a backoff, got done %v, err %v", res.Done(), err)
	}
	// Params no check could pass: a second check would end the execution.
	req.Params = []byte(`[` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40) + `]`)
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil || res.Done() {
		t.Fatalf("a call during the backoff: done %v (failure %v), err %v; want the backoff, params not checked again", res.Done(), res.Failure, err)
	}
}

func TestExecuteStopsDuringBackoffAndRollsBack(t *testing.T) {
	f, _, e, req := aWrittenThenBAlwaysConflicting(t)
	var p Progress
	if res, err := e.Execute(context.Background(), req, &p); err != nil || res.Done() {
		t.Fatalf("want a backoff, got done %v, err %v", res.Done(), err)
	}
	// Preempted in the middle of the backoff: the call ends it at once.
	req.Stop = func() (*Failure, error) {
		return &Failure{Reason: arbiterv1alpha1.ReasonPreempted, Message: "Preempted by x"}, nil
	}
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil || !res.Done() {
		t.Fatalf("done %v, err %v", res.Done(), err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonPreempted || !strings.Contains(res.Failure.Message, "rolled back ConfigMap default/a") {
		t.Fatalf("Failure = %v, want Preempted with a rolled back", res.Failure)
	}
	if f.configMap(t, "a").Data["k"] != "1" {
		t.Fatal("a not restored")
	}
}

// A Stop that cannot be answered (the requester's access review failed)
// holds the next write back rather than let it pass: Execute returns the
// error with the first target written and the second untouched, and goes
// on once Stop answers.
func TestAnUnansweredStopHoldsTheNextWriteBack(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	asked := 0
	unavailable := apierrors.NewServiceUnavailable("subjectaccessreviews unavailable")
	req.Stop = func() (*Failure, error) {
		if asked++; asked == 2 {
			return nil, unavailable
		}
		return nil, nil
	}
	var p Progress
	if _, err := e.Execute(context.Background(), req, &p); !errors.Is(err, unavailable) {
		t.Fatalf("Execute with Stop unanswered before b = %v, want its error", err)
	}
	if got := f.configMap(t, "b").Data["k"]; got != "1" {
		t.Fatalf("b written to %q while Stop was unanswered", got)
	}
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil || res.Failure != nil || len(res.Targets) != 2 {
		t.Fatalf("once Stop answers: failure %v, err %v, targets %+v; want both applied", res.Failure, err, res.Targets)
	}
	if f.configMap(t, "a").Data["k"] != "2" || f.configMap(t, "b").Data["k"] != "2" {
		t.Fatal("a and b are not both written once")
	}
	if f.updates != 2 {
		t.Fatalf("%d updates, want 2", f.updates)
	}
}

func TestExecuteFindsWhatLandedBeforeItAsksWhetherToStop(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}))
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")))
	if res, err := e.Execute(context.Background(), req, &Progress{}); err != nil || res.Failure != nil {
		t.Fatalf("first run: %v, %v", res.Failure, err)
	}
	// A re-run after the status write failed, by now past the timeout: the
	// write landed, so the operation is applied, not timed out.
	req.Stop = func() (*Failure, error) {
		return &Failure{Reason: arbiterv1alpha1.ReasonTimeout, Message: "timed out"}, nil
	}
	res, err := e.Execute(context.Background(), req, &Progress{})
	if err != nil || res.Failure != nil || len(res.Targets) != 1 || !res.Targets[0].Recovered {
		t.Fatalf("re-run: failure %v, err %v, targets %+v; want applied, recovered", res.Failure, err, res.Targets)
	}
	if f.updates != 1 {
		t.Fatalf("%d updates, want 1", f.updates)
	}
}

func TestExecuteRollsBackAMutationThatCreatedTheAnnotations(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	f.refuse = refusing("b", nil)
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(
		patchTarget("a", arbiterv1alpha1.JSONPatchOperation{Op: arbiterv1alpha1.JSONPatchOpAdd, Path: "/metadata/annotations", Value: raw(`{"team":"payments"}`)}),
		patchTarget("b", replaceData("k", "2")))
	res, err := e.Execute(context.Background(), req, &Progress{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack {
		t.Fatalf("Failure = %v, want RolledBack", res.Failure)
	}
	if a := f.configMap(t, "a"); len(a.Annotations) != 0 {
		t.Fatalf("a keeps annotations %v after the rollback", a.Annotations)
	}
}

func TestExecuteFailsACopyBombWithoutWriting(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": strings.Repeat("x", 1024)}))
	e := &Executor{Reader: f, Writer: f}
	var ops []arbiterv1alpha1.JSONPatchOperation
	for i := range 30 {
		// Each copy doubles /data: 2^30 KiB if nothing bounds it.
		ops = append(ops, arbiterv1alpha1.JSONPatchOperation{Op: arbiterv1alpha1.JSONPatchOpCopy, From: "/data", Path: fmt.Sprintf("/data/c%d", i)})
	}
	res, err := e.Execute(context.Background(), requestFor(patchTarget("a", ops...)), &Progress{})
	expectTooLargeWithNothingWritten(t, f, res, err)
}

// expectTooLargeWithNothingWritten checks that an execution failed
// MutationTooLarge, naming arbiter's bound, without a single update.
func expectTooLargeWithNothingWritten(t *testing.T, f *fakeTargets, res Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonMutationTooLarge || !strings.Contains(res.Failure.Message, "1.5 MiB") {
		t.Fatalf("Failure = %v, want MutationTooLarge naming the 1.5 MiB bound", res.Failure)
	}
	if f.updates != 0 {
		t.Fatalf("%d updates, want none", f.updates)
	}
}

func TestMutationsAreBounded(t *testing.T) {
	big := strings.Repeat("x", 600<<10)
	object, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "a", "namespace": "default"}, "data": map[string]any{"big": big}})
	var copies []arbiterv1alpha1.JSONPatchOperation
	for i := range 3 {
		copies = append(copies, arbiterv1alpha1.JSONPatchOperation{Op: arbiterv1alpha1.JSONPatchOpCopy, From: "/data/big", Path: fmt.Sprintf("/data/c%d", i)})
	}
	for name, target := range map[string]arbiterv1alpha1.Target{
		"JSON Patch copies":    patchTarget("a", copies...),
		"a CEL list of values": {APIVersion: "v1", Kind: "ConfigMap", Name: "a", Expression: `[1, 2, 3].map(i, JSONPatch{op: "add", path: "/data/c" + string(i), value: object.data.big})`},
		"a merge patch result": {APIVersion: "v1", Kind: "ConfigMap", Name: "a", MergePatch: raw(fmt.Sprintf(`{"data":{"c1":%q,"c2":%q}}`, big, big))},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := Compile(&target)
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Apply(context.Background(), object, nil)
			var tooLarge *TooLargeError
			if !errors.As(err, &tooLarge) {
				t.Fatalf("Apply = %v, want a TooLargeError", err)
			}
		})
	}
}

func TestCELEvaluationStopsWithItsContext(t *testing.T) {
	target := arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "a",
		Expression: strings.ReplaceAll(`[JSONPatch{op: "add", path: "/data/n", value: string(L.map(i, L.map(j, L.map(k, i * j * k))).size())}]`,
			"L", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")}
	m, err := Compile(&target)
	if err != nil {
		t.Fatal(err)
	}
	object := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{}}`)
	if _, err := m.Apply(context.Background(), object, nil); err != nil {
		t.Fatalf("the expression fails on its own: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Apply(ctx, object, nil); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Apply under a cancelled context = %v, want it interrupted", err)
	}
}

func TestBackoffDelaysGrowByTheFactorUpToTheCap(t *testing.T) {
	b := Backoff{Base: 10 * time.Millisecond, Factor: 2, Max: 100 * time.Millisecond}.delays()
	for i, base := range []time.Duration{10, 20, 40, 80, 100, 100, 100} {
		base *= time.Millisecond
		if d := b.Step(); d < base || d > base+base/5 {
			t.Errorf("delay %d = %v, want %v plus at most 20%%", i, d, base)
		}
	}
}

// A call after the outcome (its status write failed) returns the outcome
// again: it never goes on past a rollback to apply what is left.
func TestExecuteKeepsItsOutcome(t *testing.T) {
	f, clk, e, req := aWrittenThenBAlwaysConflicting(t)
	var p Progress
	res, err := e.Execute(context.Background(), req, &p)
	for ; err == nil && !res.Done(); res, err = e.Execute(context.Background(), req, &p) {
		clk.SetTime(res.RetryAt)
	}
	if err != nil || res.Failure == nil {
		t.Fatalf("Execute = %v, %v; want a failure", res.Failure, err)
	}
	// The writer that beat b is gone: a new run would now succeed.
	f.conflict = nil
	updates := f.updates
	again, err := e.Execute(context.Background(), req, &p)
	if err != nil || again.Failure == nil || again.Failure.Reason != res.Failure.Reason {
		t.Fatalf("second call = %v, %v; want the same failure %v", again.Failure, err, res.Failure)
	}
	if f.updates != updates {
		t.Fatalf("%d more updates after the outcome, want none", f.updates-updates)
	}
	if f.configMap(t, "a").Data["k"] != "1" || f.configMap(t, "b").Data["k"] != "1" {
		t.Fatal("a target was written after the rollback")
	}
}

// A write whose answer was lost but which landed is rolled back like any
// other: this execution knows what it sent.
func TestExecuteRollsBackAWriteWhoseAnswerWasLost(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	lost := true
	f.refuse = refusing("b", nil)
	e := &Executor{Reader: f, Writer: lostAnswers{fakeTargets: f, lose: losingOnce("a", &lost)}}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	var p Progress
	if _, err := e.Execute(context.Background(), req, &p); err == nil {
		t.Fatal("the lost answer is not reported as transient")
	}
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack {
		t.Fatalf("Failure = %v, want RolledBack", res.Failure)
	}
	if got := f.configMap(t, "a"); got.Data["k"] != "1" || got.Annotations[arbiterv1alpha1.AppliedAnnotation] != "" {
		t.Fatalf("a not restored: %v %v", got.Data, got.Annotations)
	}
}

// executeUntilDone calls Execute at most calls times, each at the time the
// last asked to be called again, until it is done without an error.
func executeUntilDone(e *Executor, clk *clocktesting.FakePassiveClock, req Request, p *Progress, calls int) (Result, error) {
	res, err := e.Execute(context.Background(), req, p)
	for range calls {
		if err == nil && res.Done() {
			break
		}
		if !res.RetryAt.IsZero() {
			clk.SetTime(res.RetryAt)
		}
		res, err = e.Execute(context.Background(), req, p)
	}
	return res, err
}

// failingOnce fails the first write with err, whatever its target.
func failingOnce(err error) func(string) error {
	failed := false
	return func(string) error {
		if failed {
			return nil
		}
		failed = true
		return err
	}
}

// cancelled is the Stop of an operation deleted while it executes.
func cancelled() (*Failure, error) {
	return &Failure{Reason: arbiterv1alpha1.ReasonCancelled, Message: "Deleted while executing"}, nil
}

// loseTheAnswer runs the first call of an execution whose write's answer
// the test's fake API loses: a transient error, no outcome.
func loseTheAnswer(t *testing.T, e *Executor, req Request, p *Progress) {
	t.Helper()
	if res, err := e.Execute(context.Background(), req, p); err == nil {
		t.Fatalf("the lost answer is not reported as transient: %v", res.Failure)
	}
}

// refusing refuses every write of the target name as invalid (a failure
// that makes an operation roll back what it wrote), calling then first when
// it is set.
func refusing(name string, then func()) func(string) error {
	return func(n string) error {
		if n != name {
			return nil
		}
		if then != nil {
			then()
		}
		return apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, n, nil)
	}
}

// losingOnce loses the answer to the next write of the target name while
// *armed is set, and disarms it.
func losingOnce(name string, armed *bool) func(string) bool {
	return func(n string) bool {
		if n == name && *armed {
			*armed = false
			return true
		}
		return false
	}
}

// lostAnswers writes through to the fake API, then loses the answer for
// the targets lose names, as a timed-out request whose write landed.
type lostAnswers struct {
	*fakeTargets
	lose func(name string) bool
}

func (l lostAnswers) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := l.fakeTargets.Update(ctx, obj, opts...); err != nil {
		return err
	}
	if l.lose(obj.GetName()) {
		return apierrors.NewServerTimeout(schema.GroupResource{Resource: "configmaps"}, "update", 1)
	}
	return nil
}

// A rollback that a transient error interrupts is not an outcome: the
// next call goes on restoring, and the operation ends RolledBack with every
// target as it was, whether the error came on the restore's read, on its
// write before it landed, or after it landed with the answer lost.
func TestARollbackInterruptedByATransientErrorGoesOn(t *testing.T) {
	unavailable := apierrors.NewServiceUnavailable("etcd leader changed")
	for name, tc := range map[string]struct {
		// interrupt arranges, once b has been refused, that the next
		// restore of a meets a transient error.
		interrupt func(f *fakeTargets, reads *flakyReads, lost *bool)
	}{
		"on the read": {func(_ *fakeTargets, reads *flakyReads, _ *bool) { reads.failures = 1 }},
		"on the write, before it landed": {func(f *fakeTargets, _ *flakyReads, _ *bool) {
			failures := 1
			f.refuse = func(name string) error {
				if name == "a" && failures > 0 {
					failures--
					return unavailable
				}
				return nil
			}
		}},
		"on the write, after it landed": {func(_ *fakeTargets, _ *flakyReads, lost *bool) { *lost = true }},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
			reads := &flakyReads{Reader: f, name: "a", err: unavailable}
			lost := false
			f.refuse = refusing("b", func() { tc.interrupt(f, reads, &lost) })
			e := &Executor{Reader: reads, Writer: lostAnswers{fakeTargets: f, lose: losingOnce("a", &lost)}}
			req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
			var p Progress
			res, err := e.Execute(context.Background(), req, &p)
			if err == nil {
				t.Fatalf("the interrupted rollback ended the operation: %v", res.Failure)
			}
			updates := f.updates
			res, err = e.Execute(context.Background(), req, &p)
			if err != nil {
				t.Fatal(err)
			}
			if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack || !strings.Contains(res.Failure.Message, "rolled back ConfigMap default/a") {
				t.Fatalf("Failure = %v, want RolledBack naming a", res.Failure)
			}
			if got := f.configMap(t, "a"); got.Data["k"] != "1" || got.Annotations[arbiterv1alpha1.AppliedAnnotation] != "" {
				t.Fatalf("a not restored: %v %v", got.Data, got.Annotations)
			}
			if got := f.configMap(t, "b"); got.Data["k"] != "1" {
				t.Fatalf("b written after the failure: %v", got.Data)
			}
			// The call that went on restored a, and wrote nothing else.
			if f.updates-updates > 1 {
				t.Fatalf("%d updates on the second call, want at most the restore of a", f.updates-updates)
			}
		})
	}
}

// flakyReads fails the next failures reads of the target name with err.
type flakyReads struct {
	client.Reader
	name     string
	err      error
	failures int
}

func (r *flakyReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if key.Name == r.name && r.failures > 0 {
		r.failures--
		return r.err
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// A target that stays unreadable (a 500 from a conversion webhook that is
// down) does not hold the operation forever: once Stop says its deadline
// passed, the execution ends and what it wrote is rolled back.
func TestAnUnreadableTargetDoesNotOutliveTheDeadline(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	reads := &flakyReads{Reader: f, name: "b", err: apierrors.NewInternalError(errors.New("conversion webhook unavailable")), failures: 1 << 30}
	e := &Executor{Reader: reads, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	var p Progress
	for range 3 {
		if _, err := e.Execute(context.Background(), req, &p); err == nil {
			t.Fatal("Execute with b unreadable returned no error; want a transient one")
		}
	}
	if f.configMap(t, "a").Data["k"] != "2" {
		t.Fatal("a is not written before b's reads fail")
	}
	req.Stop = func() (*Failure, error) {
		return &Failure{Reason: arbiterv1alpha1.ReasonTimeout, Message: "timed out"}, nil
	}
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil || !res.Done() || res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonTimeout {
		t.Fatalf("past the deadline with b still unreadable: failure %v, err %v; want Timeout", res.Failure, err)
	}
	if !strings.Contains(res.Failure.Message, "rolled back ConfigMap default/a") || f.configMap(t, "a").Data["k"] != "1" {
		t.Fatalf("a not rolled back: %q, a = %q", res.Failure.Message, f.configMap(t, "a").Data["k"])
	}
}

// A restore that meets a 409 is retried in its worker at most
// rollbackBackoff.MaxRetries times, then left for a human.
func TestARestoreRetriesAConflictAFewTimesThenGivesUp(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	written := false
	restores := 0
	f.conflict = func(name string) bool {
		if name == "a" && written {
			restores++
			return true
		}
		written = written || name == "a"
		return false
	}
	f.refuse = refusing("b", nil)
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	res, err := e.Execute(context.Background(), req, &Progress{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRollbackFailed || !strings.Contains(res.Failure.Message, "changed under every one of 6 attempts") {
		t.Fatalf("Failure = %v, want RollbackFailed after 6 attempts", res.Failure)
	}
	if want := rollbackBackoff.MaxRetries + 1; restores != want {
		t.Fatalf("%d restore attempts, want %d", restores, want)
	}
}

// A restore whose answer was lost is taken as landed only when the target
// shows it: the record gone and the values back. Another writer that
// dropped the record alone (rewriting the annotations) leaves the values
// the operation wrote, and the next call restores them.
func TestALostRestoreIsTakenAsLandedOnlyWhenTheValuesAreBack(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	unavailable := apierrors.NewServiceUnavailable("etcd leader changed")
	restoreFails := false
	f.refuse = func(name string) error {
		switch {
		case name == "b":
			restoreFails = true
			return apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, name, nil)
		case name == "a" && restoreFails:
			restoreFails = false
			return unavailable // the restore does not land
		}
		return nil
	}
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	var p Progress
	if _, err := e.Execute(context.Background(), req, &p); err == nil {
		t.Fatal("the interrupted rollback ended the operation")
	}
	// Another writer rewrites a's annotations, the record with them.
	a := f.configMap(t, "a")
	a.Annotations = map[string]string{"owner": "someone"}
	if err := f.Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack {
		t.Fatalf("Failure = %v, want RolledBack", res.Failure)
	}
	if got := f.configMap(t, "a"); got.Data["k"] != "1" {
		t.Fatalf("a reported rolled back but holds %v", got.Data)
	}
}

// A rollback goes on through transient errors for rollbackRetryWindow from
// the first, then leaves what it could not restore to a human: an error
// that lasts must not hold the operation and its targets forever.
func TestARollbackThroughTransientErrorsIsBounded(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	reads := &flakyReads{Reader: f, name: "a", err: apierrors.NewServiceUnavailable("conversion webhook down")}
	f.refuse = refusing("b", func() { reads.failures = 1 << 30 }) // every read of a from now on
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	e := &Executor{Reader: reads, Writer: f, Clock: clk}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	var p Progress
	for range 3 {
		if res, err := e.Execute(context.Background(), req, &p); err == nil {
			t.Fatalf("within the window, the rollback ended: %v", res.Failure)
		}
		clk.SetTime(clk.Now().Add(rollbackRetryWindow / 3))
	}
	clk.SetTime(clk.Now().Add(time.Second))
	res, err := e.Execute(context.Background(), req, &p)
	if err != nil {
		t.Fatalf("past the window: %v, want an outcome", err)
	}
	if res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRollbackFailed || !strings.Contains(res.Failure.Message, "ConfigMap default/a (conversion webhook down)") {
		t.Fatalf("Failure = %v, want RollbackFailed naming a and the error", res.Failure)
	}
}

// An execution this manager began wrote every record of it there is: a
// record it did not write was added by someone who may update the target
// (to have arbiter skip it and report it applied). The target is written,
// and the record holds the operation once. An execution that may have
// begun in a manager before this one trusts the record, as recovery needs.
func TestARecordThisExecutionDidNotWriteIsNotTrusted(t *testing.T) {
	forged := cm("b", map[string]string{"k": "1"})
	forged.Annotations = map[string]string{arbiterv1alpha1.AppliedAnnotation: "uid-1"}
	f := newFakeTargets(t, forged)
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("b", replaceData("k", "2")))
	res, err := e.Execute(context.Background(), req, &Progress{StartedHere: true})
	if err != nil || res.Failure != nil {
		t.Fatalf("Execute = %v, %v", res.Failure, err)
	}
	got := f.configMap(t, "b")
	if got.Data["k"] != "2" || res.Targets[0].Recovered {
		t.Fatalf("b holds %v, recovered %v; want it written by this execution", got.Data, res.Targets[0].Recovered)
	}
	if rec := got.Annotations[arbiterv1alpha1.AppliedAnnotation]; rec != "uid-1" {
		t.Fatalf("record %q, want the operation once", rec)
	}
	// A manager recovering an execution trusts the record: no second write.
	updates := f.updates
	res, err = e.Execute(context.Background(), req, &Progress{})
	if err != nil || res.Failure != nil || !res.Targets[0].Recovered || f.updates != updates {
		t.Fatalf("recovered execution: failure %v, err %v, recovered %v, %d writes; want it applied without a write",
			res.Failure, err, res.Targets[0].Recovered, f.updates-updates)
	}
}

// lateLanding holds the first update of target name without an answer and
// lands it only when the next update of it arrives: a write that timed out
// while the API server was still committing it.
type lateLanding struct {
	*fakeTargets
	name    string
	held    client.Object
	landed  int // updates of name that landed
	started bool
}

// lateWriteOfA is a write of ConfigMap a=1 to a=2 through a lateLanding
// writer, and the executor, clock and request that make it.
func lateWriteOfA(t *testing.T) (*lateLanding, *Executor, *clocktesting.FakePassiveClock, Request) {
	t.Helper()
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}))
	w := &lateLanding{fakeTargets: f, name: "a"}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	return w, &Executor{Reader: f, Writer: w, Clock: clk}, clk, requestFor(patchTarget("a", replaceData("k", "2")))
}

// land commits the held write now.
func (l *lateLanding) land(ctx context.Context) error {
	if l.held == nil {
		return nil
	}
	err := l.fakeTargets.Update(ctx, l.held)
	l.held = nil
	l.landed++
	return err
}

func (l *lateLanding) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if obj.GetName() != l.name {
		return l.fakeTargets.Update(ctx, obj, opts...)
	}
	if !l.started {
		l.started, l.held = true, obj.DeepCopyObject().(client.Object)
		return apierrors.NewTimeoutError("the write is still being committed", 1)
	}
	if l.held != nil {
		if err := l.fakeTargets.Update(ctx, l.held); err != nil {
			return err
		}
		l.held = nil
		l.landed++
	}
	if err := l.fakeTargets.Update(ctx, obj, opts...); err != nil {
		return err
	}
	l.landed++
	return nil
}

// A write whose answer was lost and that lands only after the next read
// is this execution's own when a later read finds it: the target is
// written once, however the retries fall.
func TestAWriteThatLandsLateIsNotWrittenAgain(t *testing.T) {
	w, e, clk, req := lateWriteOfA(t)
	p := &Progress{StartedHere: true}
	res, err := e.Execute(context.Background(), req, p)
	if err == nil {
		t.Fatalf("the lost answer is not reported as transient: %v", res.Failure)
	}
	// The retry reads before the first write shows, and meets its 409.
	for range 10 {
		if res, err = e.Execute(context.Background(), req, p); err != nil {
			t.Fatal(err)
		}
		if res.Done() {
			break
		}
		clk.SetTime(res.RetryAt)
	}
	if !res.Done() || res.Failure != nil {
		t.Fatalf("done %v, failure %v; want applied", res.Done(), res.Failure)
	}
	if w.landed != 1 {
		t.Fatalf("%d writes of a landed, want 1", w.landed)
	}
}

// A write whose answer was lost, unseen when the operation is stopped, may
// still land: the rollback looks again until the API server's request
// timeout has passed. It restores the write if it lands; if it never does,
// nothing is rolled back and the operation ends with the reason that
// stopped it.
func TestARollbackWaitsForALostWriteThatMayStillLand(t *testing.T) {
	for _, lands := range []bool{true, false} {
		t.Run(fmt.Sprintf("lands %v", lands), func(t *testing.T) {
			w, e, clk, req := lateWriteOfA(t)
			p := &Progress{StartedHere: true}
			loseTheAnswer(t, e, req, p)
			req.Stop = cancelled
			if res, err := e.Execute(context.Background(), req, p); err == nil {
				t.Fatalf("the rollback gave up on a write that may still land: %v", res.Failure)
			}
			want := "rolled back ConfigMap default/a"
			if lands {
				if err := w.land(context.Background()); err != nil {
					t.Fatal(err)
				}
				clk.SetTime(clk.Now().Add(time.Second))
			} else {
				w.held, want = nil, "Deleted while executing"
				clk.SetTime(clk.Now().Add(lostWriteLandsWithin))
			}
			res, err := e.Execute(context.Background(), req, p)
			if err != nil || res.Failure == nil || !strings.Contains(res.Failure.Message, want) {
				t.Fatalf("failure %v, err %v; want %q", res.Failure, err, want)
			}
			if !lands && (res.Failure.Reason != arbiterv1alpha1.ReasonCancelled || len(res.Targets) != 0) {
				t.Fatalf("failure %v, targets %+v; want Cancelled with no target", res.Failure, res.Targets)
			}
			if got := w.configMap(t, "a"); got.Data["k"] != "1" || got.Annotations[arbiterv1alpha1.AppliedAnnotation] != "" {
				t.Fatalf("a holds %v %v after the rollback", got.Data, got.Annotations)
			}
		})
	}
}

// The 409 that an operation's own late-landing write causes is not one of
// its conflicts: with no retries left, the operation still finds its write.
func TestItsOwnLateWriteDoesNotUseUpAConflictRetry(t *testing.T) {
	w, e, clk, req := lateWriteOfA(t)
	req.Backoff.MaxRetries = 0
	p := &Progress{StartedHere: true}
	res, err := executeUntilDone(e, clk, req, p, 5)
	if err != nil || !res.Done() || res.Failure != nil || w.landed != 1 {
		t.Fatalf("failure %v, err %v, %d writes landed; want applied once", res.Failure, err, w.landed)
	}
}

// A target deleted after a write whose answer was lost holds nothing to
// roll back: the operation ends TargetNotFound, not RollbackFailed.
func TestALostWriteOnATargetDeletedSinceLeavesNothingToRollBack(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}))
	f.refuse = failingOnce(apierrors.NewServiceUnavailable("overloaded"))
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")))
	p := &Progress{StartedHere: true}
	loseTheAnswer(t, e, req, p)
	if err := f.Delete(context.Background(), f.configMap(t, "a")); err != nil {
		t.Fatal(err)
	}
	res, err := e.Execute(context.Background(), req, p)
	if err != nil || res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonTargetNotFound {
		t.Fatalf("failure %v, err %v; want TargetNotFound", res.Failure, err)
	}
}

// Waiting for a lost write that may still land takes nothing from the
// window the other targets' restores have for transient errors.
func TestWaitingForALostWriteLeavesTheOtherTargetsTheirWindow(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}), cm("b", map[string]string{"k": "1"}))
	lost := 1
	f.refuse = func(name string) error {
		if name == "b" && lost > 0 {
			lost--
			return apierrors.NewTimeoutError("no answer", 1) // and it does not land
		}
		return nil
	}
	reads := &flakyReads{Reader: f, name: "a", err: apierrors.NewServiceUnavailable("overloaded")}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	e := &Executor{Reader: reads, Writer: f, Clock: clk}
	req := requestFor(patchTarget("a", replaceData("k", "2")), patchTarget("b", replaceData("k", "2")))
	p := &Progress{StartedHere: true}
	loseTheAnswer(t, e, req, p)
	req.Stop = cancelled
	if _, err := e.Execute(context.Background(), req, p); err == nil {
		t.Fatal("the rollback did not wait for b's write, which may still land")
	}
	clk.SetTime(clk.Now().Add(lostWriteLandsWithin))
	reads.failures = 1 // a's restore meets one 503, past the first minute
	if res, err := e.Execute(context.Background(), req, p); err == nil {
		t.Fatalf("a's first transient error ended the rollback: %v", res.Failure)
	}
	res, err := e.Execute(context.Background(), req, p)
	if err != nil || res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonRolledBack || !strings.Contains(res.Failure.Message, "rolled back ConfigMap default/a") {
		t.Fatalf("failure %v, err %v; want RolledBack with a restored", res.Failure, err)
	}
	if f.configMap(t, "a").Data["k"] != "1" || f.configMap(t, "b").Data["k"] != "1" {
		t.Fatal("a target still written")
	}
}

// A lost write excuses the 409s that follow only until it can no longer
// land: a 409 that does not move the target (an admission webhook's) is
// counted after that, and the operation ends ConflictRetriesExhausted.
func TestALostWriteExcusesConflictsOnlyWhileItMayLand(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}))
	lost := 1
	f.refuse = func(string) error {
		if lost > 0 {
			lost--
			return apierrors.NewTimeoutError("no answer", 1)
		}
		return nil
	}
	f.conflict = func(string) bool { return lost == 0 }
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	e := &Executor{Reader: f, Writer: f, Clock: clk}
	req := requestFor(patchTarget("a", replaceData("k", "2")))
	p := &Progress{StartedHere: true}
	res, err := executeUntilDone(e, clk, req, p, 20)
	if err != nil || !res.Done() || res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonConflictRetriesExhausted {
		t.Fatalf("done %v, failure %v, err %v; want ConflictRetriesExhausted", res.Done(), res.Failure, err)
	}
}

// A write the API server answered with an error (a failing admission
// webhook, say) did not land and will not: a stop then ends the operation
// at once, with nothing to wait for.
func TestAStopAfterAnAnsweredWriteErrorDoesNotWait(t *testing.T) {
	f := newFakeTargets(t, cm("a", map[string]string{"k": "1"}))
	f.refuse = failingOnce(apierrors.NewInternalError(errors.New("failed calling webhook")))
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(patchTarget("a", replaceData("k", "2")))
	p := &Progress{StartedHere: true}
	loseTheAnswer(t, e, req, p)
	req.Stop = cancelled
	res, err := e.Execute(context.Background(), req, p)
	if err != nil || res.Failure == nil || res.Failure.Reason != arbiterv1alpha1.ReasonCancelled {
		t.Fatalf("failure %v, err %v; want Cancelled at once", res.Failure, err)
	}
}
