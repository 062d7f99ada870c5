package controllers

import (
	"fmt"
	"slices"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientevents "k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

func createPolicy(ns, name string, mutate func(*arbiterv1alpha1.CleanupPolicySpec)) *arbiterv1alpha1.CleanupPolicy {
	GinkgoHelper()
	p := &arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	return p
}

// rejectedOn makes n operations contend for one account in one batch and
// returns the rejected ones once they are recorded, and the winner.
func rejectedOn(ns, account string, n int, labels map[string]string) (losers []*arbiterv1alpha1.ConflictResolutionOperation, winner *arbiterv1alpha1.ConflictResolutionOperation) {
	GinkgoHelper()
	var ops []*arbiterv1alpha1.ConflictResolutionOperation
	for i := range n + 1 {
		op := credit(ns, fmt.Sprintf("%s-%d-%d", account, time.Now().UnixNano()%100000, i), int32(i%10+1), 1, account)
		op.Labels = labels
		op.Spec.Staging.Window = duration(time.Second)
		ops = append(ops, op)
	}
	create(ops...)
	Eventually(func(g Gomega) {
		losers, winner = nil, nil
		for _, op := range ops {
			got := &arbiterv1alpha1.ConflictResolutionOperation{}
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(op), got)
			if apierrors.IsNotFound(err) { // already cleaned
				losers = append(losers, op)
				continue
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Status.Phase.IsTerminal()).To(BeTrue())
			if got.Status.Phase == arbiterv1alpha1.PhaseSucceeded {
				winner = got
			} else {
				losers = append(losers, got)
			}
		}
	}, util.LongTimeout, util.Interval).Should(Succeed())
	return losers, winner
}

func exists(op client.Object) bool {
	GinkgoHelper()
	err := k8sClient.Get(ctx, client.ObjectKeyFromObject(op), &arbiterv1alpha1.ConflictResolutionOperation{})
	if apierrors.IsNotFound(err) {
		return false
	}
	Expect(err).NotTo(HaveOccurred())
	return true
}

func policyStatus(p *arbiterv1alpha1.CleanupPolicy) arbiterv1alpha1.CleanupPolicyStatus {
	GinkgoHelper()
	got := &arbiterv1alpha1.CleanupPolicy{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), got)).To(Succeed())
	return got.Status
}

// expectFastBeforeSlow waits until every quick zombie is gone and then
// expects most of the waiting ones (removed one a second) still there.
func expectFastBeforeSlow(waiting, quick []*arbiterv1alpha1.ConflictResolutionOperation) {
	GinkgoHelper()
	Eventually(func() bool {
		return slices.ContainsFunc(quick, func(z *arbiterv1alpha1.ConflictResolutionOperation) bool { return exists(z) })
	}, util.LongTimeout, util.Interval).Should(BeFalse())
	left := 0
	for _, z := range waiting {
		if exists(z) {
			left++
		}
	}
	Expect(left).To(BeNumerically(">", len(waiting)/2), "the other namespace's removals waited for the slow policy")
}

// auditedIn returns the audit records the manager wrote about the
// operations of a namespace, by UID.
func auditedIn(ns string) map[string][]logRecord {
	byUID := map[string][]logRecord{}
	for _, rec := range auditLog.all() {
		if op, ok := rec.Values["operation"].(map[string]any); ok && op["namespace"] == ns {
			uid, _ := rec.Values["uid"].(string)
			byUID[uid] = append(byUID[uid], rec)
		}
	}
	return byUID
}

// failedOn creates an operation on an account that does not exist: it ends
// Failed/TargetNotFound.
func failedOn(ns, name string) *arbiterv1alpha1.ConflictResolutionOperation {
	GinkgoHelper()
	op := credit(ns, name, 5, 1, "nobody")
	create(op)
	got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
	Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonTargetNotFound))
	return got
}

var _ = Describe("Cleanup", func() {
	It("Immediate: writes the Rejected status first, then removes the zombie", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })
		wc, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: testScheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &arbiterv1alpha1.ConflictResolutionOperationList{}, client.InNamespace(ns))
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()

		loser := credit(ns, "loser", 1, 1, "alice")
		winner := credit(ns, "winner", 9, 1, "alice")
		for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{loser, winner} {
			op.Spec.Staging.Window = duration(time.Second)
		}
		create(loser, winner)

		var seen []string
		Eventually(func(g Gomega) {
			for {
				select {
				case e := <-w.ResultChan():
					if op, ok := e.Object.(*arbiterv1alpha1.ConflictResolutionOperation); ok && op.Name == "loser" {
						seen = append(seen, fmt.Sprintf("%s:%s", e.Type, op.Status.Phase))
					}
					continue
				default:
				}
				break
			}
			g.Expect(seen).To(ContainElement("DELETED:Rejected"))
		}, util.LongTimeout, util.Interval).Should(Succeed())
		Expect(seen).To(ContainElement("MODIFIED:Rejected"), "the Rejected status was observable before the delete")
		Expect(exists(winner)).To(BeTrue(), "Succeeded operations are kept")
		Eventually(func(g Gomega) {
			s := policyStatus(&arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "immediate"}})
			g.Expect(s.CleanedTotal).To(BeEquivalentTo(1))
			g.Expect(s.Zombies).To(BeEquivalentTo(0))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthHealthy))
			g.Expect(s.CleanupLatency).NotTo(BeNil())
			g.Expect(s.CleanupLatency.P99.Duration).To(BeNumerically(">=", s.CleanupLatency.P50.Duration))
			g.Expect(meta.IsStatusConditionTrue(s.Conditions, arbiterv1alpha1.PolicyReady)).To(BeTrue())
			g.Expect(events(ns, "immediate", corev1.EventTypeNormal)).To(ContainElement("Cleaned: Removed 1 zombie(s) since the last report"))
			g.Expect(events(ns, "loser", corev1.EventTypeNormal)).To(BeEmpty(), "no event per zombie, nor for losing its batch")
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("Immediate: removes 1000 rejected operations, every one", func() {
		ns := newNamespace()
		p := createPolicy(ns, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.MaxDeletionsPerSecond = 1000
		})
		// Six operations per target: even if slow creation split a target's
		// operations over two batches, at least four of six lose.
		const targets, perTarget = 250, 6
		var wg sync.WaitGroup
		for t := range targets {
			wg.Go(func() {
				defer GinkgoRecover()
				createAccount(ns, fmt.Sprintf("acct-%d", t), 0)
				for i := range perTarget {
					op := credit(ns, fmt.Sprintf("op-%d-%d", t, i), int32(i+1), 1, fmt.Sprintf("acct-%d", t))
					op.Spec.Staging.Window = duration(5 * time.Second)
					create(op)
				}
			})
		}
		wg.Wait()
		start := time.Now()
		var succeeded int
		Eventually(func(g Gomega) {
			var list arbiterv1alpha1.ConflictResolutionOperationList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			succeeded = 0
			for _, op := range list.Items {
				g.Expect(op.Status.Phase).To(Equal(arbiterv1alpha1.PhaseSucceeded), "%s is still here", op.Name)
				succeeded++
			}
			g.Expect(policyStatus(p).CleanedTotal).To(BeEquivalentTo(targets*perTarget - succeeded))
		}, 3*util.LongTimeout, 500*time.Millisecond).Should(Succeed())
		Expect(targets*perTarget - succeeded).To(BeNumerically(">=", 1000))
		fmt.Fprintf(GinkgoWriter, "%d rejected operations removed; all gone %s after the last was created\n",
			targets*perTarget-succeeded, time.Since(start).Round(time.Second))
	})

	It("Deferred: keeps a zombie for its retention, then removes it", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "deferred", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Retention = duration(3 * time.Second) })
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		zombie := get(losers[0])
		expires := zombie.Status.CompletedAt.Add(3 * time.Second)

		Consistently(func() bool { return exists(zombie) }, time.Until(expires)-300*time.Millisecond, util.Interval).Should(BeTrue())
		Eventually(func() bool { return exists(zombie) }, util.Timeout, util.Interval).Should(BeFalse())
		Expect(time.Now()).To(BeTemporally(">=", expires))
	})

	It("retentionByOutcome: each outcome goes at its own retention, the most specific entry winning", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "by-outcome", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.RetentionByOutcome = []arbiterv1alpha1.OutcomeRetention{
				{Phase: "Rejected", Retention: metav1.Duration{Duration: time.Second}},
				{Phase: "Failed", Reason: arbiterv1alpha1.ReasonTargetNotFound, Retention: metav1.Duration{Duration: 4 * time.Second}},
				{Phase: "Failed", Retention: metav1.Duration{Duration: time.Hour}},
			}
		})
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		notFound := failedOn(ns, "not-found")
		invalid := credit(ns, "invalid", 5, 1, "alice")
		invalid.Spec.Params.Raw = []byte(`{"amount": "ten"}`) // Failed/InvalidMutation
		create(invalid)
		Expect(eventuallyPhase(invalid, arbiterv1alpha1.PhaseFailed).Status.Reason).To(Equal(arbiterv1alpha1.ReasonInvalidMutation))

		// Rejected: 1s; Failed/TargetNotFound: 4s, and not before.
		Eventually(func() bool { return exists(losers[0]) }, util.Timeout, util.Interval).Should(BeFalse())
		expires := notFound.Status.CompletedAt.Add(4 * time.Second)
		Consistently(func() bool { return exists(notFound) }, time.Until(expires)-300*time.Millisecond, util.Interval).Should(BeTrue())
		Eventually(func() bool { return exists(notFound) }, util.Timeout, util.Interval).Should(BeFalse())
		Expect(time.Now()).To(BeTemporally(">=", expires))
		// Failed for another reason: the phase's entry, an hour.
		Expect(exists(invalid)).To(BeTrue())
	})

	It("retentionByOutcome under Immediate: rejections go at once, failures wait for their entry", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.RetentionByOutcome = []arbiterv1alpha1.OutcomeRetention{{Phase: "Failed", Retention: metav1.Duration{Duration: time.Hour}}}
		})
		failed := failedOn(ns, "kept-for-inspection")
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Eventually(func() bool { return exists(losers[0]) }, util.Timeout, util.Interval).Should(BeFalse())
		Consistently(func() bool { return exists(failed) }, 2*time.Second, util.Interval).Should(BeTrue())
	})

	It("Lazy: keeps zombies until a new operation meets their target, then removes those older than the retention", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createAccount(ns, "bob", 0)
		createPolicy(ns, "lazy", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupLazy
			s.Retention = duration(time.Second)
		})
		onAlice, _ := rejectedOn(ns, "alice", 2, nil)
		onBob, _ := rejectedOn(ns, "bob", 1, nil)

		// Past their retention, nothing removes them: no timer runs.
		Consistently(func() bool { return exists(onAlice[0]) && exists(onAlice[1]) && exists(onBob[0]) },
			2*time.Second, util.Interval).Should(BeTrue())

		create(credit(ns, "meets-alice", 5, 1, "alice"))
		Eventually(func() bool { return exists(onAlice[0]) || exists(onAlice[1]) }, util.Timeout, util.Interval).Should(BeFalse())
		Expect(exists(onBob[0])).To(BeTrue(), "bob's zombie was not met")
	})

	It("historyLimit: keeps at most that many zombies per target, removing the oldest", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "history", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.HistoryLimit = ptr.To[int32](2)
		})
		var zombies []*arbiterv1alpha1.ConflictResolutionOperation
		for range 4 {
			losers, _ := rejectedOn(ns, "alice", 1, nil)
			zombies = append(zombies, losers...)
		}
		Eventually(func(g Gomega) {
			for i, z := range zombies {
				err := k8sClient.Get(ctx, client.ObjectKeyFromObject(z), &arbiterv1alpha1.ConflictResolutionOperation{})
				if i < 2 {
					g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s (old) should be gone", z.Name)
				} else {
					g.Expect(err).NotTo(HaveOccurred(), "%s (among the newest 2) should be kept", z.Name)
				}
			}
		}, util.LongTimeout, util.Interval).Should(Succeed())
	})

	It("historyLimit: counts and removes only the zombies its policy governs", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		audit := map[string]string{"team": "audit"}
		createPolicy(ns, "audit", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: audit}
			s.Retention = duration(time.Hour)
		})
		// Newer than "audit", or as old and after it by name: "audit" governs
		// what both select.
		createPolicy(ns, "history", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.HistoryLimit = ptr.To[int32](1)
		})
		audited, _ := rejectedOn(ns, "alice", 4, audit)
		var mine []*arbiterv1alpha1.ConflictResolutionOperation
		for range 2 {
			losers, _ := rejectedOn(ns, "alice", 1, nil)
			mine = append(mine, losers...)
		}
		// The oldest zombie "history" governs goes, so its limit was enforced;
		// every one of the older zombies "audit" governs stays.
		Eventually(func() bool { return exists(mine[0]) }, util.LongTimeout, util.Interval).Should(BeFalse())
		Expect(exists(mine[1])).To(BeTrue())
		for _, z := range audited {
			Expect(exists(z)).To(BeTrue(), "%s is governed by audit, kept for an hour", z.Name)
		}
	})

	It("holds kept and unacknowledged RollbackFailed zombies, counts them, and lets them go once released", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createAccount(ns, "carol", 100)
		createAccount(ns, "dave", 50)
		p := createPolicy(ns, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })

		kept := credit(ns, "kept", 1, 1, "alice")
		kept.Annotations = map[string]string{arbiterv1alpha1.KeepAnnotation: "true"}
		plain := credit(ns, "plain", 2, 1, "alice")
		winner := credit(ns, "winner", 9, 1, "alice")
		for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{kept, plain, winner} {
			op.Spec.Staging.Window = duration(time.Second)
		}
		// dave's leg takes 60 from 50 and is refused; restoring carol's leg
		// meets a 409 every time: RollbackFailed.
		stuck := operation(ns, "stuck", 5, 20,
			accountTarget("carol", `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance - params.amount}]`),
			accountTarget("dave", `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance - params.amount * 3}]`))
		stuck.Spec.OCC.MaxRetries = ptr.To[int32](2)
		stuck.Spec.Staging.Window = duration(500 * time.Millisecond)
		create(stuck, kept, plain, winner)
		faults.conflictOnRollback(string(get(stuck).UID))
		DeferCleanup(faults.clear, string(get(stuck).UID))
		// The policy removes what it may: the plain loser, not the one kept.
		Eventually(func() bool { return exists(plain) }, util.LongTimeout, util.Interval).Should(BeFalse())
		Eventually(func(g Gomega) {
			got := &arbiterv1alpha1.ConflictResolutionOperation{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(kept), got); apierrors.IsNotFound(err) {
				StopTrying("the kept zombie was removed").Now()
			}
			g.Expect(got.Status.Phase).To(Equal(arbiterv1alpha1.PhaseRejected))
		}, util.Timeout, util.Interval).Should(Succeed())
		Eventually(func(g Gomega) {
			got := &arbiterv1alpha1.ConflictResolutionOperation{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(stuck), got); apierrors.IsNotFound(err) {
				StopTrying("the unacknowledged RollbackFailed zombie was removed").Now()
			}
			g.Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonRollbackFailed))
		}, util.LongTimeout, util.Interval).Should(Succeed())
		// Held zombies count, in their own count and sentence; the one a
		// human must acknowledge makes the policy Degraded.
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.Zombies).To(BeEquivalentTo(2), "held zombies still count")
			g.Expect(s.HeldZombies).To(BeEquivalentTo(2))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthDegraded))
			g.Expect(s.Issues).To(ConsistOf("2 zombie(s) held from cleanup: 1 Failed/RollbackFailed awaiting arbiter.dev/acknowledged=true, 1 arbiter.dev/keep=true"))
			healthy := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyHealthy)
			g.Expect(healthy).NotTo(BeNil())
			g.Expect(healthy.Reason).To(Equal(arbiterv1alpha1.ReasonAwaitingAcknowledgement))
		}, util.Timeout, util.Interval).Should(Succeed())
		Consistently(func() bool { return exists(kept) && exists(stuck) }, 2*time.Second, util.Interval).Should(BeTrue())

		// An annotation added or dropped later releases them.
		acknowledged := get(stuck)
		acknowledged.Annotations = map[string]string{arbiterv1alpha1.AcknowledgedAnnotation: "true"}
		Expect(k8sClient.Update(ctx, acknowledged)).To(Succeed())
		Eventually(func() bool { return exists(stuck) }, util.Timeout, util.Interval).Should(BeFalse())
		Expect(exists(kept)).To(BeTrue())
		// A kept zombie alone leaves the policy Healthy, still listed.
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.HeldZombies).To(BeEquivalentTo(1))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthHealthy))
			g.Expect(s.Issues).To(ConsistOf("1 zombie(s) held from cleanup: 1 arbiter.dev/keep=true"))
		}, util.Timeout, util.Interval).Should(Succeed())
		released := get(kept)
		delete(released.Annotations, arbiterv1alpha1.KeepAnnotation)
		Expect(k8sClient.Update(ctx, released)).To(Succeed())
		Eventually(func() bool { return exists(kept) }, util.Timeout, util.Interval).Should(BeFalse())
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.HeldZombies).To(BeZero())
			g.Expect(s.Issues).To(BeEmpty())
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("Immediate: a slow policy's zombies in one namespace do not hold back removals in another", func() {
		slow, fast := newNamespace(), newNamespace()
		createAccount(slow, "alice", 0)
		createAccount(fast, "bob", 0)
		for _, ns := range []string{slow, fast} {
			createPolicy(ns, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) {
				s.Strategy = arbiterv1alpha1.CleanupImmediate
				if ns == slow {
					s.MaxDeletionsPerSecond = 1
				}
			})
		}
		waiting, _ := rejectedOn(slow, "alice", 30, nil)
		quick, _ := rejectedOn(fast, "bob", 5, nil)
		expectFastBeforeSlow(waiting, quick)
	})

	It("Lazy: a slow policy's met zombies in one namespace do not hold back removals in another", func() {
		slow, fast := newNamespace(), newNamespace()
		createAccount(slow, "alice", 0)
		createAccount(fast, "bob", 0)
		for _, ns := range []string{slow, fast} {
			createPolicy(ns, "lazy", func(s *arbiterv1alpha1.CleanupPolicySpec) {
				s.Strategy = arbiterv1alpha1.CleanupLazy
				s.Retention = duration(time.Millisecond)
				if ns == slow {
					s.MaxDeletionsPerSecond = 1
				}
			})
		}
		waiting, _ := rejectedOn(slow, "alice", 30, nil)
		quick, _ := rejectedOn(fast, "bob", 5, nil)
		create(credit(slow, "meets-alice", 5, 1, "alice"))
		// The slow namespace's target is met first and its removals started.
		Eventually(func() bool {
			return slices.ContainsFunc(waiting, func(z *arbiterv1alpha1.ConflictResolutionOperation) bool { return !exists(z) })
		}, util.Timeout, util.Interval).Should(BeTrue())
		create(credit(fast, "meets-bob", 5, 1, "bob"))
		expectFastBeforeSlow(waiting, quick)
	})

	It("succeededRetention: removes Succeeded operations after it; without it they are kept", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "ttl", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.SucceededRetention = duration(time.Second) })
		op := credit(ns, "done", 5, 1, "alice")
		create(op)
		eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Eventually(func() bool { return exists(op) }, util.Timeout, util.Interval).Should(BeFalse())

		ns2 := newNamespace()
		createAccount(ns2, "alice", 0)
		createPolicy(ns2, "no-ttl", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })
		kept := credit(ns2, "done", 5, 1, "alice")
		create(kept)
		eventuallyPhase(kept, arbiterv1alpha1.PhaseSucceeded)
		Consistently(func() bool { return exists(kept) }, 2*time.Second, util.Interval).Should(BeTrue())
	})

	It("selector: governs only the operations it selects", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createAccount(ns, "bob", 0)
		createPolicy(ns, "audit-only", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "audit"}}
		})
		selected, _ := rejectedOn(ns, "alice", 1, map[string]string{"team": "audit"})
		other, _ := rejectedOn(ns, "bob", 1, nil)
		Eventually(func() bool { return exists(selected[0]) }, util.Timeout, util.Interval).Should(BeFalse())
		Consistently(func() bool { return exists(other[0]) }, time.Second, util.Interval).Should(BeTrue())
	})

	It("overlapping policies: the oldest governs, the others say so", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		createPolicy(ns, "first", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })
		// Created after "first", or in the same second (creationTimestamp has a
		// one-second resolution) and then ordered after it by name.
		second := createPolicy(ns, "second", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Retention = duration(time.Hour) })
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Eventually(func() bool { return exists(losers[0]) }, util.Timeout, util.Interval).Should(BeFalse(), "first (Immediate) governs")
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(policyStatus(second).Conditions, arbiterv1alpha1.PolicyOverlapping)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("first"))
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("dryRun: reports what it would remove and removes nothing", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		p := createPolicy(ns, "dry", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.DryRun = true
		})
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Eventually(func(g Gomega) {
			g.Expect(events(ns, losers[0].Name, corev1.EventTypeNormal)).To(ContainElement(HavePrefix("WouldClean:")))
			g.Expect(policyStatus(p).CleanedTotal).To(BeEquivalentTo(1))
		}, util.Timeout, util.Interval).Should(Succeed())
		Consistently(func() bool { return exists(losers[0]) }, time.Second, util.Interval).Should(BeTrue())
	})

	It("audit: one record per removed zombie, under Immediate, historyLimit and dryRun", func() {
		immediate, history, dry := newNamespace(), newNamespace(), newNamespace()
		createAccount(immediate, "alice", 0)
		createAccount(history, "bob", 0)
		createAccount(dry, "carol", 0)
		createPolicy(immediate, "immediate", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })
		createPolicy(history, "history", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.HistoryLimit = ptr.To[int32](1)
		})
		createPolicy(dry, "dry", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.DryRun = true
		})
		removed, immediateWinner := rejectedOn(immediate, "alice", 5, nil)
		var overHistory []*arbiterv1alpha1.ConflictResolutionOperation
		for range 3 {
			losers, _ := rejectedOn(history, "bob", 1, nil)
			overHistory = append(overHistory, losers...)
		}
		reported, _ := rejectedOn(dry, "carol", 3, nil)

		expectOnce := func(g Gomega, ns string, ops []*arbiterv1alpha1.ConflictResolutionOperation, msg, why string, dryRun bool) {
			records := auditedIn(ns)
			g.Expect(records).To(HaveLen(len(ops)), "records for exactly the removed zombies of %s", ns)
			for _, op := range ops {
				g.Expect(records[string(op.UID)]).To(HaveLen(1), "one record for %s", op.Name)
				rec := records[string(op.UID)][0]
				g.Expect(rec.Level).To(BeZero(), "at info")
				g.Expect(rec.Msg).To(Equal(msg))
				g.Expect(rec.Values).To(HaveLen(17))
				g.Expect(rec.Values).To(HaveKeyWithValue("dryRun", dryRun))
				g.Expect(rec.Values).To(HaveKeyWithValue("phase", "Rejected"))
				g.Expect(rec.Values).To(HaveKeyWithValue("reason", arbiterv1alpha1.ReasonLostStaging))
				g.Expect(rec.Values).To(HaveKeyWithValue("function", "credit-account"))
				g.Expect(op.Spec.RequestedBy).NotTo(BeNil(), "stamped at admission")
				g.Expect(rec.Values).To(HaveKeyWithValue("requester", op.Spec.RequestedBy.Username))
				g.Expect(rec.Values).To(HaveKeyWithValue("createdAt", op.CreationTimestamp.UTC().Format(time.RFC3339Nano)))
				g.Expect(rec.Values).To(HaveKeyWithValue("winner", Not(BeEmpty())))
				g.Expect(rec.Values).To(HaveKeyWithValue("why", ContainSubstring(why)))
			}
		}
		check := func(g Gomega) {
			expectOnce(g, immediate, removed, "Operation removed by cleanup", "Immediate strategy", false)
			expectOnce(g, history, overHistory[:2], "Operation removed by cleanup", "historyLimit 1 on bob", false)
			expectOnce(g, dry, reported, "Operation would be removed by cleanup (dry run)", "Immediate strategy", true)
		}
		Eventually(check, util.LongTimeout, util.Interval).Should(Succeed())
		Expect(exists(immediateWinner)).To(BeTrue())
		Expect(exists(overHistory[2])).To(BeTrue())
		// Judged again (a policy edit re-judges every zombie), none is
		// recorded twice.
		for _, name := range []string{"history", "dry"} {
			ns := map[string]string{"history": history, "dry": dry}[name]
			p := &arbiterv1alpha1.CleanupPolicy{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p)).To(Succeed())
			edited := p.DeepCopy()
			edited.Spec.MaxDeletionsPerSecond = 100
			Expect(k8sClient.Patch(ctx, edited, client.MergeFrom(p))).To(Succeed())
		}
		Consistently(check, 2*time.Second, util.Interval).Should(Succeed())
	})

	It("never deletes an operation that changed since it was judged", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		// Judged under a Deferred policy with a long retention, so that
		// only the call below could delete it.
		p := createPolicy(ns, "slow", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Retention = duration(time.Hour) })
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		judged := get(losers[0])

		changed := judged.DeepCopy()
		changed.Labels = map[string]string{"keep": "for-audit"}
		Expect(k8sClient.Update(ctx, changed)).To(Succeed())

		cleaner := newCleanupReconciler(k8sClient, clientevents.NewFakeRecorder(10), 1, DefaultStrategyNone)
		Expect(cleaner.remove(ctx, p, judged, "test")).To(BeZero())
		Expect(exists(judged)).To(BeTrue())

		// Judged afresh, the same call deletes it.
		Expect(cleaner.remove(ctx, p, get(judged), "test")).To(BeZero())
		Expect(exists(judged)).To(BeFalse())
	})

	It("health: Degraded above maxZombies", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		p := createPolicy(ns, "keep", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.Health.MaxZombies = ptr.To[int32](2)
		})
		rejectedOn(ns, "alice", 3, nil)
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.Zombies).To(BeEquivalentTo(3))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthDegraded))
			g.Expect(s.Issues).To(ContainElement("High zombie count: 3 (threshold 2)"))
			g.Expect(meta.IsStatusConditionFalse(s.Conditions, arbiterv1alpha1.PolicyHealthy)).To(BeTrue())
			g.Expect(s.LastSweepTime).NotTo(BeNil())
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("health: Degraded as soon as the oldest zombie passes maxZombieAge", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		p := createPolicy(ns, "aging", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.Health.MaxZombieAge = duration(5 * time.Second)
		})
		rejectedOn(ns, "alice", 1, nil)
		// No event follows the zombie's last change: the report is refreshed
		// when the age passes, well before its 30 s timer.
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthDegraded))
			healthy := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyHealthy)
			g.Expect(healthy).NotTo(BeNil())
			g.Expect(healthy.Reason).To(Equal(arbiterv1alpha1.ReasonZombieTooOld))
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("health: Unhealthy when deletions fail", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		p := createPolicy(ns, "failing", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate })
		losers, _ := rejectedOn(ns, "alice", 1, map[string]string{UndeletableLabel: "true"})
		Eventually(func(g Gomega) {
			s := policyStatus(p)
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthUnhealthy))
			g.Expect(s.CleanupFailuresTotal).To(BeNumerically(">", 0))
			g.Expect(s.CleanupFailureRatePercent).To(BeEquivalentTo(100))
			g.Expect(events(ns, losers[0].Name, corev1.EventTypeWarning)).To(ContainElement(HavePrefix("CleanupFailed:")))
		}, util.LongTimeout, util.Interval).Should(Succeed())
		// Let the suite's namespace cleanup delete it.
		u := get(losers[0])
		delete(u.Labels, UndeletableLabel)
		Expect(k8sClient.Update(ctx, u)).To(Succeed())
	})

	It("rolls back partial work through the finalizer when an executing operation is deleted", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		createAccount(ns, "bob", 100)
		op := operation(ns, "two-legs", 5, 10, accountTarget("alice", creditExpression), accountTarget("bob", creditExpression))
		op.Spec.Staging.Window = duration(500 * time.Millisecond)
		op.Spec.OCC.MaxRetries = ptr.To[int32](100)
		op.Spec.OCC.MaxDelay = duration(100 * time.Millisecond)
		create(op)
		uid := string(get(op).UID)
		faults.conflictAfter(uid, 1) // alice's leg lands, bob's meets contention
		DeferCleanup(faults.clear, uid)

		Eventually(func() int64 { return balanceOf(ns, "alice") }, util.LongTimeout, util.Interval).Should(BeEquivalentTo(110))
		Expect(get(op).Finalizers).To(ContainElement(arbiterv1alpha1.CleanupFinalizer))
		Expect(k8sClient.Delete(ctx, op)).To(Succeed())

		Eventually(func() bool { return exists(op) }, util.LongTimeout, util.Interval).Should(BeFalse())
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(100), "alice's leg was rolled back")
		Expect(balanceOf(ns, "bob")).To(BeEquivalentTo(100))
		Expect(getAccount(ns, "alice").GetAnnotations()).NotTo(HaveKey(arbiterv1alpha1.AppliedAnnotation))
	})
})
