package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// kill ends the manager with SIGKILL, as a crash or an OOM kill would.
func (m *managerProcess) kill() {
	_ = m.cmd.Process.Kill()
	Eventually(m.done, util.Timeout).Should(BeClosed())
}

var _ = Describe("Faults", Label("faults"), func() {
	DescribeTable("surviving a storm of SIGKILLs: each target holds exactly its Succeeded credits, none applied twice, none lost",
		func(ns string, onConflict arbiterv1alpha1.ConflictPolicy) {
			const accounts, operations, kills = 10, 200, 8
			Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
			createAccounts(ns, accounts)

			ops := make([]*arbiterv1alpha1.ConflictResolutionOperation, operations)
			for i := range ops {
				ops[i] = creditOperation(ns, i, accounts, onConflict)
			}
			// Create the operations in waves, and kill the manager at a random
			// instant after each, so that every kill meets work in flight.
			var terminalAtKills []int
			wave := operations / kills
			for k := range kills {
				var wg sync.WaitGroup
				for w := range 4 {
					wg.Go(func() {
						defer GinkgoRecover()
						for i := k*wave + w; i < (k+1)*wave; i += 4 {
							Expect(k8sClient.Create(ctx, ops[i])).To(Succeed())
						}
					})
				}
				wg.Wait()
				time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
				manager.kill()
				terminalAtKills = append(terminalAtKills, len(terminal(ns)))
				manager = startManager()
			}

			var done map[string]arbiterv1alpha1.OperationPhase
			Eventually(func(g Gomega) {
				done = terminal(ns)
				g.Expect(done).To(HaveLen(operations))
			}, 2*util.LongTimeout, util.Interval).Should(Succeed())

			want := make([]int64, accounts)
			succeeded := 0
			for i, op := range ops {
				switch phase := done[op.Name]; {
				case phase == arbiterv1alpha1.PhaseSucceeded:
					want[i%accounts] += int64(i + 1)
					succeeded++
				case onConflict == arbiterv1alpha1.ConflictPolicyQueue:
					Fail(fmt.Sprintf("%s ended %s: a queued credit must apply", op.Name, phase))
				default:
					Expect(phase).To(Equal(arbiterv1alpha1.PhaseRejected), op.Name)
				}
			}

			expectBalances(ns, want)
			fmt.Fprintf(GinkgoWriter, "%s: kills survived: %d (operations terminal at each kill: %v), operations: %d, succeeded: %d, lost: 0, applied twice: 0\n",
				onConflict, kills, terminalAtKills, operations, succeeded)
		},
		Entry("Queue: every credit applies", "killstorm-queue", arbiterv1alpha1.ConflictPolicyQueue),
		Entry("Reject: the rejected leave no trace", "killstorm-reject", arbiterv1alpha1.ConflictPolicyReject),
	)
})

// expectAllSucceeded waits until all n operations of ns have ended, and
// checks that every one Succeeded.
func expectAllSucceeded(ns string, n int) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		done := terminal(ns)
		g.Expect(done).To(HaveLen(n))
		for name, phase := range done {
			g.Expect(phase).To(Equal(arbiterv1alpha1.PhaseSucceeded), name)
		}
	}, 2*util.LongTimeout, util.Interval).Should(Succeed())
}

// terminal maps the finished operations of a namespace to their phase.
func terminal(ns string) map[string]arbiterv1alpha1.OperationPhase {
	GinkgoHelper()
	var list arbiterv1alpha1.ConflictResolutionOperationList
	Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	out := map[string]arbiterv1alpha1.OperationPhase{}
	for _, op := range list.Items {
		if op.Status.Phase.IsTerminal() {
			out[op.Name] = op.Status.Phase
		}
	}
	return out
}

var _ = Describe("Leader failover", Label("faults"), func() {
	It("hands the work to the standby replica when the leader dies; nothing is lost or applied twice", func() {
		const ns, accounts, operations = "failover", 5, 100
		manager.stop()
		leaderArgs := []string{"--leader-elect", "--leader-election-namespace=default"}
		leader := startManager(leaderArgs...)
		lease := &coordinationv1.Lease{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "arbiter.arbiter.dev"}, lease)).To(Succeed())
			g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
		}, util.LongTimeout, util.Interval).Should(Succeed())
		leaderID := *lease.Spec.HolderIdentity
		// The standby serves its webhook on a port of its own; the API server
		// calls the leader's.
		standby := startManager(append(leaderArgs, "--webhook-port", strings.Split(freeAddr(), ":")[1])...)
		manager = standby
		defer func() { manager.stop(); manager = startManager() }()

		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		want := make([]int64, accounts)
		createAccounts(ns, accounts)
		for i := range operations {
			want[i%accounts] += int64(i + 1)
			Expect(k8sClient.Create(ctx, creditOperation(ns, i, accounts, arbiterv1alpha1.ConflictPolicyQueue))).To(Succeed())
		}

		killed := time.Now()
		leader.kill()
		doneAtKill := len(terminal(ns))
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "arbiter.arbiter.dev"}, lease)).To(Succeed())
			g.Expect(*lease.Spec.HolderIdentity).NotTo(Equal(leaderID))
		}, util.LongTimeout, 100*time.Millisecond).Should(Succeed())
		// How fast is a figure to report, not to assert: machines here are noisy.
		failover := time.Since(killed)

		expectAllSucceeded(ns, operations)
		expectBalances(ns, want)
		fmt.Fprintf(GinkgoWriter, "failover: %s with a %ds lease (operations terminal when the leader died: %d of %d), lost: 0, applied twice: 0\n",
			failover.Round(100*time.Millisecond), *lease.Spec.LeaseDurationSeconds, doneAtKill, operations)
	})
})

// createAccounts creates accounts acct-0 to acct-(n-1) with a zero balance.
func createAccounts(ns string, n int) {
	GinkgoHelper()
	for a := range n {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("bank.example.com/v1")
		u.SetKind("Account")
		u.SetNamespace(ns)
		u.SetName(fmt.Sprintf("acct-%d", a))
		Expect(unstructured.SetNestedField(u.Object, int64(0), "spec", "balance")).To(Succeed())
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
	}
}

// creditOperation is credit number i: it adds i+1 to account acct-(i mod
// accounts), with a timeout long enough to outlast the faults.
func creditOperation(ns string, i, accounts int, onConflict arbiterv1alpha1.ConflictPolicy) *arbiterv1alpha1.ConflictResolutionOperation {
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("credit-%d", i)},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			Function: "credit-account",
			Priority: int32(i%10 + 1),
			Params:   &apiextensionsv1.JSON{Raw: fmt.Appendf(nil, `{"amount": %d}`, i+1)},
			Staging:  arbiterv1alpha1.StagingSpec{OnConflict: onConflict},
			Timeout:  &metav1.Duration{Duration: 10 * time.Minute},
			Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: fmt.Sprintf("acct-%d", i%accounts),
				Expression: `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`}},
		},
	}
}

// expectBalances checks that account acct-a holds want[a]: exactly its
// Succeeded credits, each applied once.
func expectBalances(ns string, want []int64) {
	GinkgoHelper()
	for a := range want {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("bank.example.com/v1")
		u.SetKind("Account")
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("acct-%d", a)}, u)).To(Succeed())
		balance, _, _ := unstructured.NestedInt64(u.Object, "spec", "balance")
		Expect(balance).To(Equal(want[a]), "acct-%d holds exactly its Succeeded credits, each once", a)
	}
}
