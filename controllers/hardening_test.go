package controllers

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// What a tenant who may create operations in one namespace, or an unlucky
// order of faults, can do to the guarantees: each spec is an attack or a
// fault that once broke one.
var _ = Describe("Hardening", func() {
	It("holds no worker in a backoff: operations backing off do not delay one in another namespace, and end at their timeout", func() {
		stalled, other := newNamespace(), newNamespace()
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range 10 {
			account := fmt.Sprintf("acct-%d", i)
			createAccount(stalled, account, 0)
			op := credit(stalled, "slow-"+account, 5, 1, account)
			// The longest delays the schema allows, against a writer that
			// always wins: more operations than the manager has workers.
			op.Spec.OCC = arbiterv1alpha1.OCCSpec{MaxRetries: ptr.To[int32](100), BaseDelay: duration(10 * time.Second), MaxDelay: duration(time.Minute)}
			op.Spec.Timeout = duration(20 * time.Second)
			op.Spec.Staging.Window = duration(2 * time.Second)
			ops = append(ops, op)
		}
		create(ops...)
		for _, op := range ops {
			uid := string(get(op).UID)
			faults.conflictOnApply(uid, forever)
			DeferCleanup(faults.clear, uid)
		}
		Eventually(func(g Gomega) {
			for _, op := range ops {
				g.Expect(faults.conflicts(string(get(op).UID))).To(BeNumerically(">=", 1), "%s has not met its first 409", op.Name)
			}
		}, util.Timeout, util.Interval).Should(Succeed())

		createAccount(other, "alice", 0)
		unrelated := credit(other, "unrelated", 5, 7, "alice")
		create(unrelated)
		eventuallyPhase(unrelated, arbiterv1alpha1.PhaseSucceeded)
		for _, op := range ops {
			Expect(get(op).Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting), "%s should still be backing off", op.Name)
		}
		for _, op := range ops {
			got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
			Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonTimeout))
			Expect(balanceOf(stalled, op.Spec.Targets[0].Name)).To(BeZero())
		}
	})

	It("ends an operation whose write landed Succeeded, even when its status could first be written only after its timeout", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		op := credit(ns, "late-status", 5, 5, "alice")
		op.Spec.Timeout = duration(3 * time.Second)
		op.Spec.Staging.Window = duration(time.Second)
		create(op)
		uid := string(get(op).UID)
		faults.refuseSucceeded(uid, true)
		DeferCleanup(faults.clear, uid)

		Eventually(func() int64 { return balanceOf(ns, "alice") }, util.Timeout, util.Interval).Should(BeEquivalentTo(105))
		deadline := get(op).Deadline()
		Eventually(func() bool { return time.Now().After(deadline) }, util.Timeout, util.Interval).Should(BeTrue())
		faults.refuseSucceeded(uid, false)

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonApplied))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(105))
	})

	It("refuses a cluster-scoped target, whatever RBAC a namespace grants", func() {
		ns := newNamespace()
		op := operation(ns, "cluster-wide", 5, 0, arbiterv1alpha1.Target{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "admin",
			MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"metadata":{"labels":{"owned":"yes"}}}`)}})
		create(op)
		got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonClusterScopedTarget))
		Expect(got.Status.Message).To(ContainSubstring("ClusterRole admin is cluster-scoped"))
		role := &rbacv1.ClusterRole{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "admin"}, role)).To(Succeed())
		Expect(role.Labels).NotTo(HaveKey("owned"))
	})

	Context("with two users who may both update the target", func() {
		var ns string
		var pat, sam client.Client
		BeforeEach(func() {
			ns = newNamespace()
			createAccount(ns, "alice", 0)
			createAccount(ns, "bob", 0)
			for _, user := range []string{"pat", "sam"} {
				grant(ns, user, arbiterv1alpha1.GroupVersion.Group, "conflictresolutionoperations", "create", "get", "list", "watch")
				grant(ns, user, "bank.example.com", "accounts", "get", "update")
			}
			pat, sam = userClient("pat"), userClient("sam")
		})

		It("lends no priority across requesters through parentRef", func() {
			// pat's live, high-priority operation, pending on bob.
			parent := credit(ns, "pats-batch", 10, 0, "bob")
			parent.Spec.Staging.Window = duration(5 * time.Second)
			Expect(pat.Create(ctx, parent)).To(Succeed())
			// sam names it as parent to borrow its priority against pat's rival.
			borrower := credit(ns, "borrower", 1, 1000, "alice")
			borrower.Spec.ParentRef = &arbiterv1alpha1.OperationReference{Name: "pats-batch"}
			borrower.Spec.Staging.Window = duration(time.Second)
			rival := credit(ns, "rival", 5, 1, "alice")
			rival.Spec.Staging.Window = duration(time.Second)
			Expect(sam.Create(ctx, borrower)).To(Succeed())
			Expect(pat.Create(ctx, rival)).To(Succeed())

			lost := eventuallyPhase(borrower, arbiterv1alpha1.PhaseRejected)
			Expect(lost.Status.Winner).To(Equal("rival"))
			Expect(lost.Status.EffectivePriority).To(BeEquivalentTo(1))
			staged := meta.FindStatusCondition(lost.Status.Conditions, arbiterv1alpha1.OperationStaged)
			Expect(staged).NotTo(BeNil())
			Expect(staged.Message).To(ContainSubstring("parentRef pats-batch lends no priority: it was requested by someone else"))
			eventuallyPhase(rival, arbiterv1alpha1.PhaseSucceeded)
			Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(1))
		})

		It("checks access again when a queued operation's turn comes", func() {
			holder := credit(ns, "holder", 9, 1, "alice")
			waiter := credit(ns, "waiter", 1, 1000, "alice")
			for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{holder, waiter} {
				op.Spec.Staging.OnConflict = arbiterv1alpha1.ConflictPolicyQueue
				op.Spec.Staging.Window = duration(2 * time.Second)
				op.Spec.OCC = arbiterv1alpha1.OCCSpec{MaxRetries: ptr.To[int32](100), BaseDelay: duration(100 * time.Millisecond), MaxDelay: duration(100 * time.Millisecond)}
			}
			Expect(pat.Create(ctx, holder)).To(Succeed())
			Expect(sam.Create(ctx, waiter)).To(Succeed())
			// The holder executes until the test lets it write.
			holderUID := string(get(holder).UID)
			faults.conflictOnApply(holderUID, forever)
			DeferCleanup(faults.clear, holderUID)
			eventuallyPhase(waiter, arbiterv1alpha1.PhaseQueued)
			Expect(get(holder).Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting))

			// sam loses the right to update accounts while waiting.
			revokeAccounts(ns, "sam")
			faults.clear(holderUID)

			eventuallyPhase(holder, arbiterv1alpha1.PhaseSucceeded)
			got := eventuallyPhase(waiter, arbiterv1alpha1.PhaseFailed)
			Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonForbidden))
			Expect(got.Status.Message).To(ContainSubstring(`User "sam" may not get Account ` + ns + "/alice"))
			Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(1))
		})

		It("stops an executing operation whose requester lost the right while it backed off", func() {
			op := credit(ns, "backing-off", 1, 1000, "alice")
			op.Spec.Timeout = duration(5 * time.Minute)
			op.Spec.OCC = arbiterv1alpha1.OCCSpec{MaxRetries: ptr.To[int32](100), BaseDelay: duration(100 * time.Millisecond), MaxDelay: duration(100 * time.Millisecond)}
			Expect(sam.Create(ctx, op)).To(Succeed())
			// Every write meets a 409 until the test lets it through.
			uid := string(get(op).UID)
			faults.conflictOnApply(uid, forever)
			DeferCleanup(faults.clear, uid)
			eventuallyPhase(op, arbiterv1alpha1.PhaseExecuting)

			revokeAccounts(ns, "sam")
			faults.clear(uid)

			got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
			Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonForbidden))
			Expect(got.Status.Message).To(ContainSubstring(`User "sam" may not get Account ` + ns + "/alice"))
			Expect(balanceOf(ns, "alice")).To(BeZero())
		})
	})
})

// revokeAccounts takes user's right to get and update accounts in ns (the
// RoleBinding grant made), and returns once the API server denies it and
// the suite's answer TTL of a second has passed: from then on, arbiter's
// access checks see the revocation.
func revokeAccounts(ns, user string) {
	GinkgoHelper()
	Expect(k8sClient.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-accounts-get-update"}})).To(Succeed())
	Eventually(func(g Gomega) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "bank.example.com", Resource: "accounts", Name: "alice"}}}
		g.Expect(k8sClient.Create(ctx, sar)).To(Succeed())
		g.Expect(sar.Status.Allowed).To(BeFalse())
	}, util.Timeout, util.Interval).Should(Succeed())
	revoked := time.Now()
	Eventually(func() time.Duration { return time.Since(revoked) }, util.Timeout, util.Interval).Should(BeNumerically(">", 2*time.Second))
}

var _ = Describe("Target kinds", func() {
	// A tenant who named a new unserved group in every operation once made
	// the manager send a discovery request for each, under the lock every
	// mapping waits on. The answers now come from a snapshot of discovery
	// taken at most four times a second (internal/kinds' unit tests count them); this spec shows
	// they stay right.
	It("fails operations on kinds that are not served, and finds a kind installed just before an operation", func() {
		ns := newNamespace()
		var ghosts []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range 50 {
			op := operation(ns, fmt.Sprintf("ghost-%d", i), 5, 0, arbiterv1alpha1.Target{
				APIVersion: fmt.Sprintf("ghost-%d.example.com/v1", i), Kind: "Ghost", Name: "nobody",
				MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{}}`)}})
			ghosts = append(ghosts, op)
		}
		create(ghosts...)
		for _, op := range ghosts {
			got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
			Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonTargetNotFound))
			Expect(got.Status.Message).To(ContainSubstring("the kind is not served"))
		}

		// The manager's snapshot predates this kind: the operation made
		// right after it is served must still find it.
		vaults := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": "vaults.late.example.com"},
			"spec": map[string]any{
				"group": "late.example.com", "scope": "Namespaced",
				"names": map[string]any{"plural": "vaults", "singular": "vault", "kind": "Vault", "listKind": "VaultList"},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
			},
		}}
		Expect(k8sClient.Create(ctx, vaults)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, vaults))).To(Succeed()) })
		vaultGVK := schema.GroupVersionKind{Group: "late.example.com", Version: "v1", Kind: "Vault"}
		vault := &unstructured.Unstructured{}
		vault.SetGroupVersionKind(vaultGVK)
		vault.SetNamespace(ns)
		vault.SetName("main")
		Eventually(func() error { return k8sClient.Create(ctx, vault) }, util.Timeout, util.Interval).Should(Succeed())
		open := operation(ns, "open-vault", 5, 0, arbiterv1alpha1.Target{APIVersion: "late.example.com/v1", Kind: "Vault", Name: "main",
			MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{"open":true}}`)}})
		create(open)
		eventuallyPhase(open, arbiterv1alpha1.PhaseSucceeded)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(vault), vault)).To(Succeed())
		opened, _, err := unstructured.NestedBool(vault.Object, "spec", "open")
		Expect(err).NotTo(HaveOccurred())
		Expect(opened).To(BeTrue())
	})
})
