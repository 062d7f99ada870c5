package controllers

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("Staging", func() {
	It("gives five simultaneous operations on one target exactly one winner, the highest priority, and rejects the rest naming it", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		priorities := []int32{2, 8, 5, 8, 3}
		ops := make([]*arbiterv1alpha1.ConflictResolutionOperation, len(priorities))
		var wg sync.WaitGroup
		for i, p := range priorities {
			ops[i] = credit(ns, fmt.Sprintf("credit-%d", i), p, 10*(i+1), "alice")
			ops[i].Spec.Staging.Window = duration(time.Second)
			wg.Go(func() {
				defer GinkgoRecover()
				create(ops[i])
			})
		}
		wg.Wait()

		var winner *arbiterv1alpha1.ConflictResolutionOperation
		var losers []*arbiterv1alpha1.ConflictResolutionOperation
		Eventually(func(g Gomega) {
			winner, losers = nil, nil
			for _, op := range ops {
				got := &arbiterv1alpha1.ConflictResolutionOperation{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), got)).To(Succeed())
				g.Expect(got.Status.Phase.IsTerminal()).To(BeTrue(), "%s is %s", got.Name, got.Status.Phase)
				if got.Status.Phase == arbiterv1alpha1.PhaseSucceeded {
					winner = got
				} else {
					losers = append(losers, got)
				}
			}
		}, util.LongTimeout, util.Interval).Should(Succeed())

		Expect(winner).NotTo(BeNil())
		Expect(winner.Status.EffectivePriority).To(BeEquivalentTo(8))
		Expect(losers).To(HaveLen(4))
		for _, l := range losers {
			Expect(l.Status.Phase).To(Equal(arbiterv1alpha1.PhaseRejected))
			Expect(l.Status.Reason).To(Equal(arbiterv1alpha1.ReasonLostStaging))
			Expect(l.Status.Winner).To(Equal(winner.Name))
			Expect(l.Status.Message).To(ContainSubstring(winner.Name))
			Expect(meta.IsStatusConditionTrue(l.Status.Conditions, arbiterv1alpha1.OperationRejected)).To(BeTrue())
			Expect(l.Status.CompletedAt).NotTo(BeNil())
			if l.Status.EffectivePriority == 8 {
				// The tie goes to the earliest staged.
				Expect(winner.Status.StagedAt.Time).NotTo(BeTemporally(">", l.Status.StagedAt.Time))
			}
		}
		Expect(meta.IsStatusConditionTrue(winner.Status.Conditions, arbiterv1alpha1.OperationSucceeded)).To(BeTrue())

		// The target changed exactly once, by the winner.
		var params struct{ Amount int64 }
		Expect(json.Unmarshal(winner.Spec.Params.Raw, &params)).To(Succeed())
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(100 + params.Amount))
		Expect(getAccount(ns, "alice").GetAnnotations()[arbiterv1alpha1.AppliedAnnotation]).To(Equal(string(winner.UID)))
		Expect(winner.Status.Targets).To(HaveLen(1))
		Expect(winner.Status.Targets[0].Applied).To(BeTrue())
		Expect(winner.Status.Targets[0].ResourceVersionAfter).To(Equal(getAccount(ns, "alice").GetResourceVersion()))
	})

	It("applies every operation of a Queue batch, one at a time, in priority order", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for i, p := range []int32{3, 9, 1, 6, 4} {
			op := credit(ns, fmt.Sprintf("queued-%d", i), p, 1<<i, "alice")
			op.Spec.Staging.Window = duration(time.Second)
			op.Spec.Staging.OnConflict = arbiterv1alpha1.ConflictPolicyQueue
			ops = append(ops, op)
		}
		create(ops...)

		var done []*arbiterv1alpha1.ConflictResolutionOperation
		for _, op := range ops {
			done = append(done, eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded))
		}
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(1 + 2 + 4 + 8 + 16))
		sort.Slice(done, func(i, j int) bool { return done[i].Status.StartedAt.Before(done[j].Status.StartedAt) })
		var order []int32
		for _, op := range done {
			order = append(order, op.Spec.Priority)
		}
		Expect(order).To(Equal([]int32{9, 6, 4, 3, 1}))
		// The batch's one event is on its winner.
		Eventually(func(g Gomega) {
			g.Expect(events(ns, done[0].Name, corev1.EventTypeNormal)).To(ConsistOf(HavePrefix("Won: Won staging among")))
		}, util.Timeout, util.Interval).Should(Succeed())
		for _, op := range done[1:] {
			Expect(events(ns, op.Name, corev1.EventTypeNormal)).To(BeEmpty(), "%s: status and conditions tell its outcome", op.Name)
		}
	})

	It("lets a parent raise its children's effective priority, and fails a parentRef cycle", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createAccount(ns, "bob", 0)
		// The parent lends its priority while it has not finished: a long
		// window keeps it pending while its child is staged.
		parent := credit(ns, "batch", 9, 0, "bob")
		parent.Spec.Staging.Window = duration(5 * time.Second)
		child := credit(ns, "child", 2, 1, "alice")
		child.Spec.ParentRef = &arbiterv1alpha1.OperationReference{Name: "batch"}
		child.Spec.Staging.Window = duration(time.Second)
		rival := credit(ns, "rival", 8, 100, "alice")
		rival.Spec.Staging.Window = duration(time.Second)
		create(parent, child, rival)

		got := eventuallyPhase(child, arbiterv1alpha1.PhaseSucceeded)
		Expect(got.Status.EffectivePriority).To(BeEquivalentTo(9))
		Expect(eventuallyPhase(rival, arbiterv1alpha1.PhaseRejected).Status.Winner).To(Equal("child"))

		a := credit(ns, "loop-a", 5, 1, "alice")
		a.Spec.ParentRef = &arbiterv1alpha1.OperationReference{Name: "loop-b"}
		b := credit(ns, "loop-b", 5, 1, "alice")
		b.Spec.ParentRef = &arbiterv1alpha1.OperationReference{Name: "loop-a"}
		create(a, b)
		got = eventuallyPhase(a, arbiterv1alpha1.PhaseFailed)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonInvalidParent))
		Expect(got.Status.Message).To(ContainSubstring("cycle"))
	})
})

var _ = Describe("Optimistic concurrency", func() {
	It("retries after conflicts with an external writer and loses no update", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 1000)
		const externalWrites = 60
		writerDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(writerDone)
			// The writer retries until it lands: arbiter's ten operations
			// write the account as fast as it does, and retry.DefaultRetry's
			// five tries can all lose to them on a busy machine.
			persistent := wait.Backoff{Steps: 1000, Duration: 10 * time.Millisecond, Factor: 1.0, Jitter: 0.5}
			for range externalWrites {
				Expect(retry.RetryOnConflict(persistent, func() error {
					u := getAccount(ns, "alice")
					b, _, _ := unstructured.NestedInt64(u.Object, "spec", "balance")
					Expect(unstructured.SetNestedField(u.Object, b+1, "spec", "balance")).To(Succeed())
					return k8sClient.Update(ctx, u)
				})).To(Succeed())
			}
		}()
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range 10 {
			op := credit(ns, fmt.Sprintf("contended-%d", i), 5, 100, "alice")
			op.Spec.Staging.OnConflict = arbiterv1alpha1.ConflictPolicyQueue
			op.Spec.OCC.MaxRetries = ptr.To[int32](100)
			ops = append(ops, op)
		}
		create(ops...)
		var attempts int32
		for _, op := range ops {
			attempts += eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded).Status.Attempts
		}
		Eventually(writerDone, util.LongTimeout).Should(BeClosed())
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(1000 + externalWrites + 10*100))
		fmt.Fprintf(GinkgoWriter, "10 operations took %d write attempts against %d external writes\n", attempts, externalWrites)
	})

	It("retries a 409 from a fresh read and succeeds when the contention ends", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		op := credit(ns, "retried", 5, 5, "alice")
		op.Spec.OCC.BaseDelay = duration(time.Millisecond)
		op.Spec.Staging.Window = duration(500 * time.Millisecond)
		create(op)
		// The injector needs the UID, which exists only once created; the
		// window gives it time to arm before the first write.
		faults.conflictOnApply(string(get(op).UID), 3)
		DeferCleanup(faults.clear, string(get(op).UID))
		got := eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Expect(got.Status.Attempts).To(BeEquivalentTo(4))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(105))
	})

	It("ends ConflictRetriesExhausted with nothing written when every attempt conflicts", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		rv := getAccount(ns, "alice").GetResourceVersion()
		op := credit(ns, "no-retries", 5, 5, "alice")
		op.Spec.OCC.MaxRetries = ptr.To[int32](0)
		op.Spec.Staging.Window = duration(500 * time.Millisecond)
		create(op)
		faults.conflictOnApply(string(get(op).UID), forever)
		DeferCleanup(faults.clear, string(get(op).UID))

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonConflictRetriesExhausted))
		Expect(got.Status.Attempts).To(BeEquivalentTo(1))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, arbiterv1alpha1.OperationFailed)).To(BeTrue())
		Expect(getAccount(ns, "alice").GetResourceVersion()).To(Equal(rv))
	})
})

var _ = Describe("Multi-target operations", func() {
	transfer := func(ns, name string, amount int) *arbiterv1alpha1.ConflictResolutionOperation {
		op := operation(ns, name, 5, amount,
			accountTarget("alice", `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance - params.amount}]`),
			accountTarget("bob", `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance - params.amount * 3}]`))
		op.Spec.Function = "transfer"
		return op
	}

	It("roll back the targets already written when a later one fails", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		createAccount(ns, "bob", 50)
		// bob's leg takes 60 from 50: the API server refuses a negative balance.
		op := transfer(ns, "overdraw", 20)
		create(op)

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonRolledBack))
		Expect(got.Status.Message).To(ContainSubstring("Account " + ns + "/bob"))
		Expect(got.Status.Message).To(ContainSubstring("rolled back Account " + ns + "/alice"))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(100))
		Expect(balanceOf(ns, "bob")).To(BeEquivalentTo(50))
		Expect(getAccount(ns, "alice").GetAnnotations()).NotTo(HaveKey(arbiterv1alpha1.AppliedAnnotation))
		Expect(got.Status.Targets[0].Applied).To(BeFalse())
	})

	It("apply to every target when every leg succeeds", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		createAccount(ns, "bob", 50)
		op := transfer(ns, "fits", 10)
		create(op)
		got := eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(90))
		Expect(balanceOf(ns, "bob")).To(BeEquivalentTo(20))
		Expect(got.Status.Targets).To(HaveLen(2))
		Expect(got.Status.Targets[0].Applied && got.Status.Targets[1].Applied).To(BeTrue())
	})

	It("end RollbackFailed, with a Warning naming what needs a human, when a restore cannot be written", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		createAccount(ns, "bob", 50)
		op := transfer(ns, "stuck", 20)
		op.Spec.OCC.MaxRetries = ptr.To[int32](2)
		op.Spec.Staging.Window = duration(500 * time.Millisecond)
		create(op)
		faults.conflictOnRollback(string(get(op).UID))
		DeferCleanup(faults.clear, string(get(op).UID))

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonRollbackFailed))
		Expect(got.Status.Message).To(ContainSubstring("could not restore Account " + ns + "/alice"))
		Expect(got.Status.Message).To(ContainSubstring("a human must check"))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(80), "the debit that could not be restored stays, and status says so")
		Eventually(func(g Gomega) {
			g.Expect(events(ns, "stuck", corev1.EventTypeWarning)).To(ContainElement(ContainSubstring("RollbackFailed")))
		}, util.Timeout, util.Interval).Should(Succeed())
	})
})

var _ = Describe("Preemption", func() {
	It("waits out the executor's grace period, then preempts it for a higher priority; the rest is arbitrated as usual", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		a := credit(ns, "a-executing", 5, 1, "alice")
		a.Spec.GracePeriod = duration(2 * time.Second)
		a.Spec.Staging.Window = duration(300 * time.Millisecond)
		a.Spec.OCC.MaxRetries = ptr.To[int32](100)
		a.Spec.OCC.MaxDelay = duration(20 * time.Millisecond)
		create(a)
		uid := string(get(a).UID)
		faults.conflictOnApply(uid, forever) // A meets contention on every write
		DeferCleanup(faults.clear, uid)
		executing := eventuallyPhase(a, arbiterv1alpha1.PhaseExecuting)

		b := credit(ns, "b-lower", 3, 10, "alice")
		c := credit(ns, "c-higher", 8, 100, "alice")
		create(b, c)

		// Inside A's grace period nothing happens to it.
		graceEnds := executing.Status.StartedAt.Add(2 * time.Second)
		Consistently(func(g Gomega) {
			g.Expect(get(a).Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting))
		}, time.Until(graceEnds)-200*time.Millisecond, util.Interval).Should(Succeed())

		got := eventuallyPhase(a, arbiterv1alpha1.PhaseRejected)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonPreempted))
		Expect(got.Status.Winner).To(Equal("c-higher"))
		Expect(got.Status.CompletedAt.Time).To(BeTemporally(">=", graceEnds))
		Expect(got.Status.Attempts).To(BeNumerically(">", 1))

		Expect(eventuallyPhase(c, arbiterv1alpha1.PhaseSucceeded).Status.EffectivePriority).To(BeEquivalentTo(8))
		lost := eventuallyPhase(b, arbiterv1alpha1.PhaseRejected)
		Expect(lost.Status.Reason).To(Equal(arbiterv1alpha1.ReasonLostStaging))
		Expect(lost.Status.Winner).To(Equal("c-higher"))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(200), "only C applied")
	})
})

var _ = Describe("Timeout and cancel", func() {
	It("cancels a waiting operation on request and times out one that waits too long", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		holder := credit(ns, "holder", 9, 1, "alice")
		holder.Spec.Staging.Window = duration(300 * time.Millisecond)
		holder.Spec.OCC.MaxRetries = ptr.To[int32](100)
		// 100 retries of up to 100ms outlast the 4s timeout.
		holder.Spec.OCC.MaxDelay = duration(100 * time.Millisecond)
		holder.Spec.OCC.BaseDelay = duration(50 * time.Millisecond)
		holder.Spec.Timeout = duration(4 * time.Second)
		create(holder)
		uid := string(get(holder).UID)
		faults.conflictOnApply(uid, forever)
		DeferCleanup(faults.clear, uid)
		eventuallyPhase(holder, arbiterv1alpha1.PhaseExecuting)

		cancelled := credit(ns, "cancelled", 1, 1, "alice")
		impatient := credit(ns, "impatient", 1, 1, "alice")
		impatient.Spec.Timeout = duration(time.Second)
		create(cancelled, impatient)

		patch := client.MergeFrom(get(cancelled))
		withAnnotation := get(cancelled)
		withAnnotation.Annotations = map[string]string{arbiterv1alpha1.CancelAnnotation: "true"}
		Expect(k8sClient.Patch(ctx, withAnnotation, patch)).To(Succeed())
		Expect(eventuallyPhase(cancelled, arbiterv1alpha1.PhaseCancelled).Status.Reason).To(Equal(arbiterv1alpha1.ReasonCancelled))

		Expect(eventuallyPhase(impatient, arbiterv1alpha1.PhaseFailed).Status.Reason).To(Equal(arbiterv1alpha1.ReasonTimeout))
		// The executing holder times out too, and has written nothing.
		Expect(eventuallyPhase(holder, arbiterv1alpha1.PhaseFailed).Status.Reason).To(Equal(arbiterv1alpha1.ReasonTimeout))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(100))
	})
})

var _ = Describe("Run-time bad input", func() {
	DescribeTable("ends Failed with a precise reason and leaves the target untouched",
		func(target arbiterv1alpha1.Target, params, reason, message string) {
			ns := newNamespace()
			createAccount(ns, "alice", 100)
			rv := getAccount(ns, "alice").GetResourceVersion()
			op := operation(ns, "bad", 5, 0, target)
			op.Spec.Params = &apiextensionsv1.JSON{Raw: []byte(params)}
			create(op)
			got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
			Expect(got.Status.Reason).To(Equal(reason))
			Expect(got.Status.Message).To(ContainSubstring(message))
			Expect(getAccount(ns, "alice").GetResourceVersion()).To(Equal(rv))
		},
		Entry("a CEL run-time error", accountTarget("alice", creditExpression), `{"amount": "ten"}`,
			arbiterv1alpha1.ReasonInvalidMutation, "no such overload"),
		Entry("CEL reading a missing field", accountTarget("alice", `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.limit}]`), `{}`,
			arbiterv1alpha1.ReasonInvalidMutation, "no such key: limit"),
		Entry("a patch path that does not exist", arbiterv1alpha1.Target{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice",
			JSONPatch: []arbiterv1alpha1.JSONPatchOperation{{Op: "replace", Path: "/spec/limits/daily", Value: &apiextensionsv1.JSON{Raw: []byte("5")}}}}, `{}`,
			arbiterv1alpha1.ReasonInvalidMutation, "missing"),
		Entry("a test op that is false", arbiterv1alpha1.Target{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice",
			JSONPatch: []arbiterv1alpha1.JSONPatchOperation{
				{Op: "test", Path: "/spec/owner", Value: &apiextensionsv1.JSON{Raw: []byte(`"mallory"`)}},
				{Op: "replace", Path: "/spec/balance", Value: &apiextensionsv1.JSON{Raw: []byte("0")}}}}, `{}`,
			arbiterv1alpha1.ReasonInvalidMutation, execute.ErrPreconditionFailed.Error()),
		Entry("an absent target", accountTarget("nobody", creditExpression), `{"amount": 1}`,
			arbiterv1alpha1.ReasonTargetNotFound, "Account bank-"),
		Entry("an unknown kind", arbiterv1alpha1.Target{APIVersion: "bank.example.com/v1", Kind: "Vault", Name: "alice",
			MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{"open":true}}`)}}, `{}`,
			arbiterv1alpha1.ReasonTargetNotFound, "not served"),
		Entry("a result the API server refuses", accountTarget("alice", `[JSONPatch{op: "replace", path: "/spec/balance", value: -1}]`), `{}`,
			arbiterv1alpha1.ReasonInvalidMutation, "spec.balance"),
	)
})

var _ = Describe("Exactly once", func() {
	It("never applies twice nor forgets an operation when the manager stops between the target write and the status write", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		op := credit(ns, "interrupted", 5, 25, "alice")
		op.Spec.Staging.Window = duration(500 * time.Millisecond)
		create(op)
		uid := string(get(op).UID)
		faults.refuseSucceeded(uid, true)
		DeferCleanup(faults.clear, uid)

		// The target write lands; the Succeeded status write never does.
		Eventually(func() bool {
			return slices.Contains(applied(mustJSON(getAccount(ns, "alice"))), uid)
		}, util.LongTimeout, util.Interval).Should(BeTrue())
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(125))
		Expect(get(op).Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting))

		stopManager()
		faults.refuseSucceeded(uid, false)
		stopManager = startManager()

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(125), "applied exactly once")
		Expect(faults.writesApplying(uid)).To(Equal(1))
		Expect(got.Status.Targets[0].Applied).To(BeTrue())
	})
})

func mustJSON(u *unstructured.Unstructured) []byte {
	GinkgoHelper()
	b, err := u.MarshalJSON()
	Expect(err).NotTo(HaveOccurred())
	return b
}
