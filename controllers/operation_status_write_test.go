package controllers

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("Status writes", func() {
	// patchStatus asks the API server for the operation's metadata alone in
	// answer; the copy it wrote from must still be the stored object, and
	// carry the new resourceVersion its next optimistic write needs.
	It("leave the copy they were written from equal to the stored operation, so that the next write from it lands", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		op := credit(ns, "credit", 5, 10, "alice")
		create(op)
		Eventually(func() arbiterv1alpha1.OperationPhase { return get(op).Status.Phase }, util.LongTimeout, util.Interval).
			Should(Equal(arbiterv1alpha1.PhaseSucceeded))

		r := &OperationReconciler{Client: k8sClient}
		copied := get(op)
		read := copied.ResourceVersion
		for _, message := range []string{"first write", "second write, from the same copy"} {
			Expect(r.patchStatus(ctx, copied, func(o *arbiterv1alpha1.ConflictResolutionOperation) { o.Status.Message = message })).To(Succeed())
		}
		stored := &arbiterv1alpha1.ConflictResolutionOperation{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), stored)).To(Succeed())
		Expect(copied.ResourceVersion).NotTo(Equal(read))
		Expect(copied.ResourceVersion).To(Equal(stored.ResourceVersion))
		Expect(stored.Status.Message).To(Equal("second write, from the same copy"))
		Expect(copied.Status.Phase).To(Equal(stored.Status.Phase))
		Expect(copied.Status.Conditions).To(HaveLen(len(stored.Status.Conditions)))
		Expect(copied.Status.Targets).To(Equal(stored.Status.Targets))

		// A copy left behind by a newer write meets a 409, never overwrites it.
		stale := copied.DeepCopy()
		stale.ResourceVersion = read
		Expect(r.patchStatus(ctx, stale, func(o *arbiterv1alpha1.ConflictResolutionOperation) { o.Status.Message = "stale" })).
			To(MatchError(ContainSubstring("the object has been modified")))
		Expect(get(op).Status.Message).To(Equal("second write, from the same copy"))
	})
})
