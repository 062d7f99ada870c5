package e2e

import (
	"encoding/json"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/arbiter-dev/arbiter/test/util"
)

// logLine is one JSON line of the manager's log.
type logLine map[string]any

// decisionLines are the manager's decision and outcome lines about
// operations in namespace ns, from its log since offset.
func decisionLines(log string, offset int, ns string) []logLine {
	var lines []logLine
	for line := range strings.Lines(log[offset:]) {
		var l logLine
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l["msg"] {
		case "Operation won staging", "Operation queued", "Operation finished":
		default:
			continue
		}
		if op, ok := l["operation"].(map[string]any); ok && op["namespace"] == ns {
			lines = append(lines, l)
		}
	}
	return lines
}

// linesAbout are the lines naming operation name.
func linesAbout(lines []logLine, name string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l["operation"].(map[string]any)["name"] == name {
			out = append(out, l)
		}
	}
	return out
}

// setOwner is an operation that writes its name into ConfigMap target.
func setOwner(ns, name, target string, priority int) string {
	return fmt.Sprintf(`---
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  function: set-owner
  priority: %[4]d
  staging: {window: 2s}
  targets: [{apiVersion: v1, kind: ConfigMap, name: %[3]s, mergePatch: {data: {owner: %[2]s}}}]
`, ns, name, target, priority)
}

var _ = Describe("Decision logs", Ordered, func() {
	const ns = "decisions"

	BeforeAll(func() {
		_, err := kubectlWithInput(`
apiVersion: v1
kind: Namespace
metadata: {name: decisions}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ledger, namespace: decisions}
data: {owner: nobody}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: journal, namespace: decisions}
data: {owner: nobody}
`, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
	})

	waitFinished := func(names ...string) {
		GinkgoHelper()
		for _, n := range names {
			_, err := kubectl("wait", "-n", ns, "--for=condition=Finished", "cro/"+n, "--timeout=60s")
			Expect(err).NotTo(HaveOccurred())
		}
	}

	It("at the default level, log a failure but no routine decision", func() {
		offset := len(manager.log.String())
		_, err := kubectlWithInput(setOwner(ns, "quiet-high", "ledger", 8)+setOwner(ns, "quiet-low", "ledger", 2), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitFinished("quiet-high", "quiet-low")
		// Created once the batch is over: its line comes after any of theirs.
		_, err = kubectlWithInput(setOwner(ns, "missing-target", "absent", 5), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitFinished("missing-target")

		var failed []logLine
		Eventually(func(g Gomega) {
			failed = linesAbout(decisionLines(manager.log.String(), offset, ns), "missing-target")
			g.Expect(failed).To(HaveLen(1), "one line: its win (batch of one) is routine, its failure is not")
		}, util.Timeout, util.Interval).Should(Succeed())
		Expect(failed[0]).To(And(
			HaveKeyWithValue("level", "info"),
			HaveKeyWithValue("msg", "Operation finished"),
			HaveKeyWithValue("phase", "Failed"),
			HaveKeyWithValue("reason", "TargetNotFound"),
		))
		lines := decisionLines(manager.log.String(), offset, ns)
		Expect(linesAbout(lines, "quiet-high")).To(BeEmpty(), "a win and a success are at debug")
		Expect(linesAbout(lines, "quiet-low")).To(BeEmpty(), "a loss to a batch's winner is at debug")
	})

	It("at --zap-log-level=debug, log the batch's decision and every outcome with their keys", func() {
		manager.stop()
		manager = startManager("--zap-log-level=debug")
		DeferCleanup(func() {
			manager.stop()
			manager = startManager()
		})
		offset := len(manager.log.String())

		_, err := kubectlWithInput(setOwner(ns, "critical", "ledger", 10)+setOwner(ns, "normal", "ledger", 5)+setOwner(ns, "low", "ledger", 2),
			"create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		// And a Queue batch on another target: its loser waits its turn.
		queue := strings.ReplaceAll(setOwner(ns, "first", "journal", 8)+setOwner(ns, "second", "journal", 3),
			"staging: {window: 2s}", "staging: {window: 2s, onConflict: Queue}")
		_, err = kubectlWithInput(queue, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		waitFinished("critical", "normal", "low", "first", "second")
		out, err := kubectl("get", "cro", "-n", ns, "critical", "-o",
			`jsonpath={.status.phase} {.status.attempts} {.status.targets[0].resourceVersionBefore} {.status.targets[0].resourceVersionAfter}`)
		Expect(err).NotTo(HaveOccurred())
		status := strings.Fields(out)
		Expect(status).To(HaveLen(4), out)
		Expect(status[0]).To(Equal("Succeeded"), "the priority-10 operation won")

		ledger := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "ledger"}
		var lines []logLine
		Eventually(func(g Gomega) {
			lines = decisionLines(manager.log.String(), offset, ns)
			g.Expect(linesAbout(lines, "critical")).To(HaveLen(2))
			g.Expect(linesAbout(lines, "normal")).To(HaveLen(1))
			g.Expect(linesAbout(lines, "low")).To(HaveLen(1))
			g.Expect(linesAbout(lines, "first")).To(HaveLen(2))
			g.Expect(linesAbout(lines, "second")).To(HaveLen(3))
		}, util.Timeout, util.Interval).Should(Succeed())
		Expect(lines).To(HaveLen(9), "one line per decision and per outcome, nothing twice")

		won, finished := linesAbout(lines, "critical")[0], linesAbout(lines, "critical")[1]
		Expect(won).To(And(
			HaveKeyWithValue("level", "debug"),
			HaveKeyWithValue("msg", "Operation won staging"),
			HaveKeyWithValue("operation", map[string]any{"name": "critical", "namespace": ns}),
			HaveKeyWithValue("targets", []any{ledger}),
			HaveKeyWithValue("batchSize", float64(3)),
			HaveKeyWithValue("effectivePriority", float64(10)),
			HaveKey("stagedAt"),
		))
		Expect(finished).To(And(
			HaveKeyWithValue("level", "debug"),
			HaveKeyWithValue("msg", "Operation finished"),
			HaveKeyWithValue("phase", "Succeeded"),
			HaveKeyWithValue("reason", "Applied"),
			HaveKeyWithValue("attempts", float64(atoi(status[1]))),
			HaveKeyWithValue("targets", []any{map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "ledger",
				"resourceVersionBefore": status[2], "resourceVersionAfter": status[3], "applied": true}}),
		))
		second := linesAbout(lines, "second")
		Expect(second[0]).To(And(
			HaveKeyWithValue("level", "debug"),
			HaveKeyWithValue("msg", "Operation queued"),
			HaveKeyWithValue("winner", "first"),
			HaveKeyWithValue("batchSize", float64(2)),
			HaveKeyWithValue("effectivePriority", float64(3)),
		))
		Expect(second[1]).To(HaveKeyWithValue("msg", "Operation won staging"), "its turn, once first is done")
		Expect(second[2]).To(And(HaveKeyWithValue("msg", "Operation finished"), HaveKeyWithValue("phase", "Succeeded")))
		for name, priority := range map[string]float64{"normal": 5, "low": 2} {
			Expect(linesAbout(lines, name)[0]).To(And(
				HaveKeyWithValue("level", "debug"),
				HaveKeyWithValue("msg", "Operation finished"),
				HaveKeyWithValue("operation", map[string]any{"name": name, "namespace": ns}),
				HaveKeyWithValue("targets", []any{ledger}),
				HaveKeyWithValue("phase", "Rejected"),
				HaveKeyWithValue("reason", "LostStaging"),
				HaveKeyWithValue("winner", "critical"),
				HaveKeyWithValue("batchSize", float64(3)),
				HaveKeyWithValue("effectivePriority", priority),
				HaveKeyWithValue("attempts", float64(0)),
			), name)
		}
	})
})
