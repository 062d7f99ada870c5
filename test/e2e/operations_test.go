package e2e

import (
	"os"
	"os/exec"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("Operations applied with kubectl", Ordered, func() {
	BeforeAll(func() {
		_, err := kubectl("apply", "--server-side", "--force-conflicts", "-k", "config/samples")
		Expect(err).NotTo(HaveOccurred())
	})

	It("can be waited for with kubectl wait, on a condition, on any outcome and on a phase", func() {
		_, err := kubectl("wait", "-n", "bank", "--for=condition=Succeeded", "cro/credit-alice", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl("wait", "-n", "bank", "--for=jsonpath={.status.phase}=Rejected", "cro/transfer-ownership-alice", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred())
		out, err := kubectl("get", "cro", "-n", "bank", "transfer-ownership-alice", "-o", "jsonpath={.status.winner}")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(Equal("credit-alice"))
		// Finished is True whatever the outcome: a winner and a loser alike.
		for _, op := range []string{"cro/credit-alice", "cro/transfer-ownership-alice"} {
			_, err = kubectl("wait", "-n", "bank", "--for=condition=Finished", op, "--timeout=60s")
			Expect(err).NotTo(HaveOccurred())
		}
		out, err = kubectl("get", "cro", "-n", "bank", "transfer-ownership-alice", "-o", `jsonpath={.status.conditions[?(@.type=="Finished")].reason}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(Equal("Rejected"))
	})

	It("arbitrates five simultaneous credits: one winner, four rejected naming it, the account changed once", func() {
		before, err := kubectl("get", "account", "-n", "bank", "alice", "-o", "jsonpath={.spec.balance}")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl("create", "-f", "config/samples/demo/storm.yaml")
		Expect(err).NotTo(HaveOccurred())

		var phases []string
		Eventually(func(g Gomega) {
			out, err := kubectl("get", "cro", "-n", "bank", "-l", "demo=storm",
				"-o", `jsonpath={range .items[*]}{.status.phase}/{.status.winner}/{.status.effectivePriority}{"\n"}{end}`)
			g.Expect(err).NotTo(HaveOccurred())
			phases = strings.Fields(out)
			g.Expect(phases).To(HaveLen(5))
			for _, p := range phases {
				g.Expect(p).To(Or(HavePrefix("Succeeded/"), HavePrefix("Rejected/")))
			}
		}, util.LongTimeout, util.Interval).Should(Succeed())

		winner, err := kubectl("get", "cro", "-n", "bank", "-l", "demo=storm",
			"-o", `jsonpath={.items[?(@.status.phase=="Succeeded")].metadata.name}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(winner).To(HavePrefix("storm-critical-"))
		Expect(phases).To(ContainElement("Succeeded//10"))
		Expect(phases).To(HaveEach(Or(Equal("Succeeded//10"), HavePrefix("Rejected/"+winner+"/"))))

		after, err := kubectl("get", "account", "-n", "bank", "alice", "-o", "jsonpath={.spec.balance}")
		Expect(err).NotTo(HaveOccurred())
		Expect(atoi(after)-atoi(before)).To(Equal(10), "only the priority-10 credit of 10 applied")
	})

	It("reports outcomes in the manager's metrics", func() {
		Eventually(func(g Gomega) {
			metrics, err := util.HTTPGet("http://" + manager.metricsAddr + "/metrics")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(metrics).To(ContainSubstring(`arbiter_operations_total{function="credit-account",namespace="bank",phase="Rejected",reason="LostStaging"} 4`))
			g.Expect(metrics).To(ContainSubstring("arbiter_staging_batch_size_count"))
			g.Expect(metrics).To(ContainSubstring("arbiter_operation_duration_seconds_count"))
		}, util.Timeout, util.Interval).Should(Succeed())
	})
})

func atoi(s string) int {
	GinkgoHelper()
	n := 0
	for _, r := range strings.TrimSpace(s) {
		Expect(r).To(BeNumerically(">=", '0'))
		Expect(r).To(BeNumerically("<=", '9'))
		n = n*10 + int(r-'0')
	}
	return n
}

var _ = Describe("Uninstalling after the manager is gone", func() {
	It("leaves no operation stuck in Terminating once hack/remove-finalizers.sh has run", func() {
		manager.stop()
		defer func() { manager = startManager() }()

		// Without the manager its webhook cannot admit operations; an
		// uninstall has removed it anyway.
		validating := &admissionregistrationv1.ValidatingWebhookConfigurationList{}
		mutating := &admissionregistrationv1.MutatingWebhookConfigurationList{}
		Expect(k8sClient.List(ctx, validating)).To(Succeed())
		Expect(k8sClient.List(ctx, mutating)).To(Succeed())
		var webhooks []client.Object
		for i := range validating.Items {
			webhooks = append(webhooks, &validating.Items[i])
		}
		for i := range mutating.Items {
			webhooks = append(webhooks, &mutating.Items[i])
		}
		for _, w := range webhooks {
			Expect(k8sClient.Delete(ctx, w)).To(Succeed())
			DeferCleanup(func() {
				w.SetResourceVersion("")
				w.SetUID("")
				Expect(k8sClient.Create(ctx, w)).To(Succeed())
			})
		}

		_, err := kubectlWithInput(`
apiVersion: v1
kind: Namespace
metadata: {name: uninstall}
---
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: held, namespace: uninstall, finalizers: [arbiter.dev/cleanup]}
spec:
  function: update-account
  targets: [{apiVersion: bank.example.com/v1, kind: Account, name: alice, mergePatch: {spec: {frozen: true}}}]
`, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl("delete", "cro", "-n", "uninstall", "held", "--wait=false")
		Expect(err).NotTo(HaveOccurred())
		out, err := kubectl("get", "cro", "-n", "uninstall", "held", "-o", "jsonpath={.metadata.deletionTimestamp}")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).NotTo(BeEmpty(), "held in Terminating by its finalizer")

		script := exec.Command("bash", util.Path("hack", "remove-finalizers.sh"))
		script.Env = append(os.Environ(), "KUBECTL="+kubectlBin, "KUBECONFIG="+kubeconfig)
		output, err := script.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(output))
		Eventually(func() error {
			_, err := kubectl("get", "cro", "-n", "uninstall", "held")
			return err
		}, util.Timeout, util.Interval).Should(MatchError(ContainSubstring("NotFound")))
	})
})
