package e2e

import (
	"bytes"
	"os/exec"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("The manager binary", func() {
	It("serves health, readiness and metrics", func() {
		Expect(util.HTTPGet("http://" + manager.probeAddr + "/healthz")).To(Equal("ok"))
		Expect(util.HTTPGet("http://" + manager.probeAddr + "/readyz")).To(Equal("ok"))
		metrics, err := util.HTTPGet("http://" + manager.metricsAddr + "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(metrics).To(ContainSubstring("controller_runtime_"))
	})

	DescribeTable("refuses a bad flag, naming it",
		func(flag, message string) {
			cmd := exec.Command(managerBin, "--kubeconfig", kubeconfig, flag)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			Expect(err).To(BeAssignableToTypeOf(exitErr), "the manager did not exit with an error")
			Expect(stderr.String()).To(ContainSubstring(message))
		},
		Entry("unknown cleanup strategy", "--default-cleanup-strategy=Sometimes", "--default-cleanup-strategy"),
		Entry("no operation workers", "--operation-workers=0", "--operation-workers"),
		Entry("negative QPS", "--kube-api-qps=-1", "--kube-api-qps"),
		Entry("negative graceful shutdown", "--graceful-shutdown-timeout=-1s", "--graceful-shutdown-timeout"),
	)
})

var _ = Describe("kubectl", func() {
	It("lists both kinds by category and short name", func() {
		out, err := kubectl("get", "arbiter", "-A")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).NotTo(ContainSubstring("error"))
		_, err = kubectl("get", "cro,opcp", "-A")
		Expect(err).NotTo(HaveOccurred())
	})

	It("applies the samples and shows them with their printer columns", func() {
		_, err := kubectl("apply", "--server-side", "--force-conflicts", "-k", "config/samples")
		Expect(err).NotTo(HaveOccurred())

		out, err := kubectl("get", "cro", "-n", "bank")
		Expect(err).NotTo(HaveOccurred())
		header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
		Expect(header).To(Equal([]string{"NAME", "PHASE", "FUNCTION", "TARGET", "PRIORITY", "WINNER", "ATTEMPTS", "AGE"}))
		Expect(out).To(ContainSubstring("credit-alice"))
		Expect(out).To(ContainSubstring("freeze-bob"))

		out, err = kubectl("get", "opcp", "-n", "bank", "-o", "wide")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("Deferred"))

		out, err = kubectl("get", "arbiter", "-n", "bank", "-o", "name")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("conflictresolutionoperation.arbiter.dev/credit-alice"))
		Expect(out).To(ContainSubstring("cleanuppolicy.arbiter.dev/default"))
	})

	It("refuses an invalid operation the way a user sees it, naming the field", func() {
		_, err := kubectlWithInput(`
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: bad, namespace: default}
spec:
  function: update-account
  priority: 11
  targets:
  - {apiVersion: bank.example.com/v1, kind: Account, name: alice, mergePatch: {spec: {frozen: true}}}
`, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec.priority: Invalid value: 11"))
	})

	It("refuses an operation whose CEL does not compile, through the manager's webhook", func() {
		_, err := kubectlWithInput(`
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: bad-cel, namespace: default}
spec:
  function: update-account
  targets:
  - apiVersion: bank.example.com/v1
    kind: Account
    name: alice
    expression: '[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance ++ 1}]'
`, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec.targets[0].expression"))
		Expect(err.Error()).To(ContainSubstring("Syntax error"))
	})

	It("explains every field from the API documentation", func() {
		out, err := kubectl("explain", "cro.spec.staging.onConflict")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("Queue"))
		out, err = kubectl("explain", "opcp.spec.retention")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("Deferred"))
		out, err = kubectl("explain", "clustercleanuppolicy.spec.namespaceSelector")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("namespaceSelector chooses"))
		Expect(out).To(ContainSubstring("matchLabels"))
		out, err = kubectl("explain", "opcp.spec.retentionByOutcome")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(MatchRegexp(`most\s+specific\s+entry\s+wins`))
		out, err = kubectl("explain", "ocpp.status.heldZombies")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(MatchRegexp(`held\s+from\s+cleanup`))
	})
})

var _ = Describe("config/default", func() {
	It("renders with kustomize and passes a server-side dry run", func() {
		// A dry run creates nothing, so the namespace its objects live in
		// must exist for them to be validated.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "arbiter-system"}}
		if err := k8sClient.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		rendered, err := kubectl("kustomize", "config/default")
		Expect(err).NotTo(HaveOccurred())
		Expect(rendered).To(ContainSubstring("kind: Deployment"))
		Expect(rendered).To(ContainSubstring("name: arbiter-manager-role"))

		// cert-manager's kinds cannot be checked on a cluster without it;
		// everything else is.
		Expect(rendered).To(ContainSubstring("kind: Certificate"))
		var checkable []string
		for _, doc := range strings.Split(rendered, "\n---\n") {
			if !strings.Contains(doc, "apiVersion: cert-manager.io/") {
				checkable = append(checkable, doc)
			}
		}
		out, err := kubectlWithInput(strings.Join(checkable, "\n---\n"), "apply", "--server-side", "--dry-run=server", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("deployment.apps/arbiter-controller-manager serverside-applied (server dry run)"))
		Expect(out).To(ContainSubstring("poddisruptionbudget.policy/arbiter-controller-manager serverside-applied (server dry run)"))
		Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/conflictresolutionoperations.arbiter.dev"))
		Expect(out).To(ContainSubstring("validatingwebhookconfiguration.admissionregistration.k8s.io/arbiter-validating-webhook-configuration"))
	})
})
