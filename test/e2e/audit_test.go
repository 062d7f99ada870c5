package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/arbiter-dev/arbiter/test/util"
)

// auditRecords are the manager's audit records about operations in
// namespace ns, from its log since offset.
func auditRecords(log string, offset int, ns string) []logLine {
	var records []logLine
	for line := range strings.Lines(log[offset:]) {
		var l logLine
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &l) != nil || l["logger"] != "cleanup.audit" {
			continue
		}
		if op, ok := l["operation"].(map[string]any); ok && op["namespace"] == ns {
			records = append(records, l)
		}
	}
	return records
}

var _ = Describe("Audit records", func() {
	It("an Immediate sweep of N zombies writes exactly N records, one per removed operation, at info", func() {
		const ns, n = "audit", 30
		_, err := kubectlWithInput(`
apiVersion: v1
kind: Namespace
metadata: {name: audit}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ledger, namespace: audit}
data: {owner: nobody}
---
apiVersion: arbiter.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: immediate, namespace: audit}
spec: {strategy: Immediate}
`, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		offset := len(manager.log.String())

		var ops strings.Builder
		for i := range n {
			ops.WriteString(strings.ReplaceAll(setOwner(ns, fmt.Sprintf("owner-%d", i), "ledger", i%10+1),
				"staging: {window: 2s}", "staging: {window: 5s}"))
		}
		_, err = kubectlWithInput(ops.String(), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		// Read while their batch is open: every one is still there.
		out, err := kubectl("get", "cro", "-n", ns, "-o", `jsonpath={range .items[*]}{.metadata.uid}{" "}{end}`)
		Expect(err).NotTo(HaveOccurred())
		created := strings.Fields(out)
		Expect(created).To(HaveLen(n))

		// The sweep is over when only the winners are left.
		var winners []string
		Eventually(func(g Gomega) {
			out, err := kubectl("get", "cro", "-n", ns, "-o", `jsonpath={range .items[*]}{.metadata.uid}={.status.phase}{" "}{end}`)
			g.Expect(err).NotTo(HaveOccurred())
			winners = nil
			for _, f := range strings.Fields(out) {
				uid, phase, _ := strings.Cut(f, "=")
				g.Expect(phase).To(Equal("Succeeded"), "%s is not removed yet", uid)
				winners = append(winners, uid)
			}
		}, util.LongTimeout, util.Interval).Should(Succeed())
		Expect(len(winners)).To(BeNumerically("<", n/2), "most operations lost their batch")

		check := func(g Gomega) {
			records := auditRecords(manager.log.String(), offset, ns)
			byUID := map[string]int{}
			for _, r := range records {
				uid, _ := r["uid"].(string)
				byUID[uid]++
				g.Expect(created).To(ContainElement(uid))
				g.Expect(winners).NotTo(ContainElement(uid), "a winner was kept")
				g.Expect(r).To(And(
					HaveKeyWithValue("level", "info"),
					HaveKeyWithValue("msg", "Operation removed by cleanup"),
					HaveKeyWithValue("phase", "Rejected"),
					HaveKeyWithValue("reason", "LostStaging"),
					HaveKeyWithValue("function", "set-owner"),
					HaveKeyWithValue("policy", map[string]any{"kind": "CleanupPolicy", "name": "immediate"}),
					HaveKeyWithValue("strategy", "Immediate"),
					HaveKeyWithValue("dryRun", false),
					HaveKeyWithValue("targets", []any{map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "ledger"}}),
				))
				for _, k := range []string{"requester", "winner", "priority", "effectivePriority", "createdAt", "completedAt", "removedAt", "why"} {
					g.Expect(r).To(HaveKey(k))
				}
				g.Expect(r["winner"]).NotTo(BeEmpty())
				g.Expect(r["requester"]).NotTo(BeEmpty(), "stamped at admission")
			}
			g.Expect(records).To(HaveLen(n-len(winners)), "one record per removed zombie")
			g.Expect(byUID).To(HaveLen(n-len(winners)), "never two for one operation")
		}
		Eventually(check, util.Timeout, util.Interval).Should(Succeed())
		Consistently(check, 2*time.Second, util.Interval).Should(Succeed())
		records := auditRecords(manager.log.String(), offset, ns)
		line, _ := json.Marshal(records[0])
		fmt.Fprintf(GinkgoWriter, "audit record: %s\n", line)
	})
})
