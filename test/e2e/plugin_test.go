package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/arbiter-dev/arbiter/test/util"
)

var pluginBin = util.Path("bin", "kubectl-arbiter")

// kubectlArbiter runs `kubectl arbiter ...` as a user does: kubectl finds
// bin/kubectl-arbiter on the PATH, and both read KUBECONFIG.
func kubectlArbiter(args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"arbiter"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+util.Path("bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	return util.Output(cmd, "kubectl arbiter "+strings.Join(args, " "))
}

// pluginReport is the part of the plugin's -o json output the specs read.
type pluginReport struct {
	Executing   []struct{ Name string } `json:"executing"`
	Waiting     []struct{ Name string } `json:"waiting"`
	Recent      []struct{ Name string } `json:"recent"`
	Explanation []string                `json:"explanation"`
	Namespaces  []struct {
		Namespace string
		Health    string
		Zombies   int
		Policies  []struct {
			Name     string
			Strategy string
		}
	} `json:"namespaces"`
	Note string `json:"note"`
}

func pluginJSON(g Gomega, args ...string) pluginReport {
	out, err := kubectlArbiter(append(args, "-o", "json")...)
	g.Expect(err).NotTo(HaveOccurred())
	var r pluginReport
	g.Expect(json.Unmarshal([]byte(out), &r)).To(Succeed(), out)
	return r
}

func nameList(items []struct{ Name string }) []string {
	names := []string{}
	for _, i := range items {
		names = append(names, i.Name)
	}
	return names
}

// blockedLabel marks the ConfigMaps whose updates blockUpdates refuses.
const blockedLabel = "e2e.arbiter.dev/blocked"

// blockUpdates makes every update of a ConfigMap labelled blockedLabel in
// ns fail, as an unreachable admission webhook makes it fail: a transient
// error, so the operation writing it stays Executing and holds its target.
// It returns the function that lifts the block (idempotent), once updates
// go through again.
func blockUpdates(ns, probe string) func() {
	GinkgoHelper()
	url := "https://" + freeAddr() + "/block" // nobody listens there
	w := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-block-" + ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "block.e2e.arbiter.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"},
					Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{blockedLabel: "true"}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To(int32(2)),
		}},
	}
	Expect(k8sClient.Create(ctx, w)).To(Succeed())
	touch := func() error {
		_, err := kubectl("annotate", "configmap", "-n", ns, probe, "--overwrite", "e2e.arbiter.dev/probe="+fmt.Sprint(GinkgoRandomSeed()))
		return err
	}
	Eventually(touch, util.Timeout, util.Interval).Should(MatchError(ContainSubstring("failed calling webhook")))
	lifted := false
	return func() {
		GinkgoHelper()
		if lifted {
			return
		}
		lifted = true
		Expect(k8sClient.Delete(ctx, w)).To(Succeed())
		Eventually(touch, util.Timeout, util.Interval).Should(Succeed())
	}
}

// queued is an operation that sets data.v of ConfigMap target and waits its
// turn when it loses.
func queued(ns, name, target string, priority int, extra string) string {
	return fmt.Sprintf(`---
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  function: set-value
  priority: %[4]d
  timeout: 5m
  staging: {onConflict: Queue}
  targets: [{apiVersion: v1, kind: ConfigMap, name: %[3]s, mergePatch: {data: {v: %[2]s}}}]
%[5]s`, ns, name, target, priority, extra)
}

var _ = Describe("kubectl arbiter", Ordered, func() {
	const ns = "plugin"

	BeforeAll(func() {
		_, err := os.Stat(pluginBin)
		Expect(err).NotTo(HaveOccurred(), "bin/kubectl-arbiter is missing: run `make build` (make test builds it)")
		_, err = kubectlWithInput(`
apiVersion: v1
kind: Namespace
metadata: {name: plugin}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: plugin, labels: {e2e.arbiter.dev/blocked: "true"}}
data: {v: none}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: flags, namespace: plugin}
data: {owner: none}
---
apiVersion: arbiter.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: default, namespace: plugin}
spec: {strategy: Deferred, retention: 1h}
`, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
	})

	waitPhase := func(name, phase string) {
		GinkgoHelper()
		_, err := kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}="+phase, "cro/"+name, "--timeout=120s")
		Expect(err).NotTo(HaveOccurred())
	}

	It("target: shows what executes and what waits, in the order the manager then runs them", func() {
		unblock := blockUpdates(ns, "settings")
		DeferCleanup(unblock)
		_, err := kubectlWithInput(queued(ns, "holder", "settings", 10, ""), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitPhase("holder", "Executing")
		_, err = kubectlWithInput(queued(ns, "next-low", "settings", 2, "")+queued(ns, "next-high", "settings", 8, "")+
			queued(ns, "next-mid", "settings", 5, ""), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())

		// The kind as kubectl takes it: singular, plural, short name.
		for _, target := range []string{"configmap/settings", "configmaps/settings", "cm/settings"} {
			Eventually(func(g Gomega) {
				r := pluginJSON(g, "target", target, "-n", ns)
				g.Expect(nameList(r.Executing)).To(Equal([]string{"holder"}))
				g.Expect(nameList(r.Waiting)).To(Equal([]string{"next-high", "next-mid", "next-low"}))
			}, util.Timeout, util.Interval).Should(Succeed(), target)
		}
		text, err := kubectlArbiter("target", "configmap/settings", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("$ kubectl arbiter target configmap/settings -n %s\n%s", ns, text)
		Expect(text).To(ContainSubstring("Target: ConfigMap plugin/settings"))
		Expect(text).To(MatchRegexp(`(?m)^holder\s+set-value\s+10\s`))
		Expect(text).To(MatchRegexp(`(?m)^1\s+next-high\s+set-value\s+Pending\s+8\s+Queue\s`))

		unblock()
		type finished struct{ name, at string }
		var done []finished
		Eventually(func(g Gomega) {
			out, err := kubectl("get", "cro", "-n", ns, "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.completedAt}{"\n"}{end}`)
			g.Expect(err).NotTo(HaveOccurred())
			done = nil
			for line := range strings.Lines(out) {
				f := strings.Fields(line)
				g.Expect(f).To(HaveLen(3), line)
				g.Expect(f[1]).To(Equal("Succeeded"), line)
				done = append(done, finished{f[0], f[2]})
			}
			g.Expect(done).To(HaveLen(4))
		}, util.LongTimeout, util.Interval).Should(Succeed())
		slices.SortFunc(done, func(a, b finished) int { return strings.Compare(a.at, b.at) })
		var order []string
		for _, d := range done {
			order = append(order, d.name)
		}
		Expect(order).To(Equal([]string{"holder", "next-high", "next-mid", "next-low"}), "the order the plugin showed")

		r := pluginJSON(Default, "target", "configmap/settings", "-n", ns, "--recent", "4")
		Expect(r.Executing).To(BeEmpty())
		Expect(r.Waiting).To(BeEmpty())
		Expect(nameList(r.Recent)).To(Equal([]string{"next-low", "next-mid", "next-high", "holder"}), "newest first")
	})

	It("why: explains a winner, a loser and a preemption in sentences", func() {
		_, err := kubectlWithInput(setOwner(ns, "flags-critical", "flags", 10)+setOwner(ns, "flags-low", "flags", 2), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		for _, n := range []string{"flags-critical", "flags-low"} {
			_, err := kubectl("wait", "-n", ns, "--for=condition=Finished", "cro/"+n, "--timeout=60s")
			Expect(err).NotTo(HaveOccurred())
		}
		text, err := kubectlArbiter("why", "flags-low", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("$ kubectl arbiter why flags-low -n %s\n%s", ns, text)
		Expect(text).To(HavePrefix("plugin/flags-low: Rejected/LostStaging\n"))
		Expect(text).To(ContainSubstring("It lost staging to flags-critical. flags-critical ranked first with effective priority 10, higher than this one's 2."))
		Expect(text).To(ContainSubstring("It made no write attempt: no target was written."))

		rv, err := kubectl("get", "cro", "-n", ns, "flags-critical", "-o",
			`jsonpath={.status.targets[0].resourceVersionBefore} -> {.status.targets[0].resourceVersionAfter}`)
		Expect(err).NotTo(HaveOccurred())
		out, err := kubectlArbiter("why", "cro/flags-critical", "-n", ns, "-o", "yaml")
		Expect(err).NotTo(HaveOccurred())
		var why pluginReport
		Expect(yaml.Unmarshal([]byte(out), &why)).To(Succeed(), out)
		Expect(why.Explanation).To(ContainElement(HavePrefix("It ended Succeeded (Applied)")))
		Expect(why.Explanation).To(ContainElements(
			"It won over 1 operation(s) still on record: flags-low (Rejected, priority 2).",
			"ConfigMap flags: written, resourceVersion "+rv+".",
		))

		// A preemption: the executing operation is held by a blocked write
		// until a higher priority takes over after its grace period.
		unblock := blockUpdates(ns, "settings")
		DeferCleanup(unblock)
		_, err = kubectlWithInput(queued(ns, "slow", "settings", 2, "  gracePeriod: 1s\n"), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitPhase("slow", "Executing")
		_, err = kubectlWithInput(queued(ns, "urgent", "settings", 9, ""), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitPhase("slow", "Rejected")
		unblock()
		waitPhase("urgent", "Succeeded")
		text, err = kubectlArbiter("why", "slow", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("$ kubectl arbiter why slow -n %s\n%s", ns, text)
		Expect(text).To(HavePrefix("plugin/slow: Rejected/Preempted\n"))
		Expect(text).To(ContainSubstring("It was executing when urgent, of strictly higher effective priority (9 against its 2), took the target after its grace period of 1s"))
		text, err = kubectlArbiter("why", "urgent", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		Expect(text).To(ContainSubstring("It preempted slow (Rejected, priority 2)."))
	})

	It("health: reports each namespace's zombies and health from its CleanupPolicies", func() {
		out, err := kubectl("get", "cro", "-n", ns, "-o", `jsonpath={range .items[*]}{.status.phase}{"\n"}{end}`)
		Expect(err).NotTo(HaveOccurred())
		zombies := strings.Count(out, "Rejected") + strings.Count(out, "Failed")
		Expect(zombies).To(BeNumerically(">", 0), "the specs above left losers")
		Eventually(func(g Gomega) {
			r := pluginJSON(g, "health", "-n", ns)
			g.Expect(r.Namespaces).To(HaveLen(1))
			n := r.Namespaces[0]
			g.Expect(n.Namespace).To(Equal(ns))
			g.Expect(n.Zombies).To(Equal(zombies))
			g.Expect(n.Health).To(Equal("Healthy"))
			g.Expect(n.Policies).To(HaveLen(1))
			g.Expect(n.Policies[0].Name).To(Equal("default"))
			g.Expect(n.Policies[0].Strategy).To(Equal("Deferred"))
		}, util.Timeout, util.Interval).Should(Succeed())

		text, err := kubectlArbiter("health", "-A")
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("$ kubectl arbiter health -A\n%s", text)
		Expect(text).To(MatchRegexp(`(?m)^plugin\s+default\s+Deferred\s+Healthy\s+%d\s`, zombies))

		r := pluginJSON(Default, "health", "-n", "default")
		Expect(r.Namespaces).To(BeEmpty())
		Expect(r.Note).To(ContainSubstring("No CleanupPolicy in namespace default"))
	})

	It("takes kubectl's flags and says what is wrong with a bad argument", func() {
		_, err := kubectlArbiter("health", "--context", "nowhere")
		Expect(err).To(MatchError(ContainSubstring("context was not found for specified context: nowhere")))
		_, err = kubectlArbiter("target", "widgets/x", "-n", ns)
		Expect(err).To(MatchError(ContainSubstring(`target: the server has no resource type "widgets"`)))
		_, err = kubectlArbiter("why", "nobody", "-n", ns)
		Expect(err).To(MatchError(ContainSubstring(`reading operation plugin/nobody`)))
		_, err = kubectlArbiter("health", "-o", "table")
		Expect(err).To(MatchError(ContainSubstring(`--output (-o): "table" is not one of [json yaml]`)))
	})
})
