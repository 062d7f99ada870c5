package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// zombieFootprint measures what zombies cost: the manager's memory with 0,
// 1k, 10k and 50k of them in the cluster (the README's sizing table), a policy report over 50k, and
// `kubectl get cro -A` with them and after they are gone. The zombies are
// written straight to the API server (create, then a Failed status) with the
// manager stopped and its webhook unregistered, so that 50k take minutes
// rather than arbiter's own pace; the manager then starts with them all, as
// after a restart.
func (e *env) zombieFootprint() []Result {
	const ns = "zombies"
	e.namespace(ns, 0)
	// A Lazy policy over them all: it removes none while nothing meets
	// their targets, but reports on them, which is the cost measured while
	// they go.
	e.policy(ns, "report", arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupLazy})
	figures := map[string]float64{}
	measure := func(zombies int) *manager {
		m := startManager(e.t, e, e.wh)
		rss, peak, heap := e.footprint(m, zombies)
		figures[fmt.Sprintf("manager_rss_mib_with_%dk_zombies", zombies/1000)] = rss / (1 << 20)
		figures[fmt.Sprintf("manager_peak_rss_mib_with_%dk_zombies", zombies/1000)] = peak / (1 << 20)
		figures[fmt.Sprintf("manager_heap_inuse_mib_with_%dk_zombies", zombies/1000)] = heap / (1 << 20)
		if zombies > 0 {
			figures[fmt.Sprintf("kubectl_get_cro_all_seconds_with_%dk_zombies", zombies/1000)] = e.kubectlGetAll()
		}
		return m
	}

	measure(0).stop()
	e.withoutWebhook(func() { e.bulkZombies(ns, 0, 1000) })
	measure(1000).stop()
	e.withoutWebhook(func() { e.bulkZombies(ns, 1000, 10000) })
	measure(10000).stop()
	e.withoutWebhook(func() { e.bulkZombies(ns, 10000, 50000) })
	m := measure(50000)
	base := figures["manager_heap_inuse_mib_with_0k_zombies"]
	figures["manager_heap_bytes_per_zombie"] = (figures["manager_heap_inuse_mib_with_50k_zombies"] - base) * (1 << 20) / 50000
	figures["manager_rss_bytes_per_zombie"] = (figures["manager_rss_mib_with_50k_zombies"] - figures["manager_rss_mib_with_0k_zombies"]) * (1 << 20) / 50000
	reports, reportSeconds := policyReports(e.t, m)
	if reports > 0 {
		figures["policy_report_seconds_with_50k_zombies"] = reportSeconds / reports
	}

	// Removed by collection deletes of 1000 (one of 50k, or of 5000 on a
	// busy machine, outlasts the API server's request timeout): arbiter's own cleanup speed is the TTL
	// anchor's scenario, with 1000. The manager watches them go, and its
	// policy's report is refreshed as they do.
	// A failure here costs only the last figures, not the memory ones.
	deleting, cpuBefore := time.Now(), cpuSeconds(m.pid())
	deleted := true
	for batch := range 50000 / zombiesPerBatch {
		if err := e.c.DeleteAllOf(e.ctx, &arbiterv1alpha1.ConflictResolutionOperation{}, client.InNamespace(ns),
			client.MatchingLabels{zombieBatch: strconv.Itoa(batch)}); err != nil {
			e.t.Logf("deleting zombie batch %d: %v", batch, err)
			deleted = false
		}
	}
	if deleted && e.waitGone(ns, 10*time.Minute) == 0 {
		figures["zombie_deletion_seconds_50k"] = time.Since(deleting).Seconds()
		figures["manager_cpu_seconds_while_50k_zombies_deleted"] = cpuSeconds(m.pid()) - cpuBefore
		after, _ := policyReports(e.t, m)
		figures["policy_reports_while_50k_zombies_deleted"] = after - reports
		figures["kubectl_get_cro_all_seconds_after_cleanup"] = e.kubectlGetAll()
		// The highest the manager went, from its start among 50k zombies
		// through their removal: what its memory limit must hold.
		_, peak := residentSet(e.t, m.pid())
		figures["manager_peak_rss_mib_through_50k_zombies_deleted"] = peak / (1 << 20)
	}
	m.stop()
	e.mgr = startManager(e.t, e, e.wh)

	return []Result{{Scenario: "zombie-footprint", Cores: runtime.NumCPU(), Figures: figures,
		Notes: "manager memory (and peak RSS since start) after a forced GC, once it has reconciled every cached zombie and its queues are empty, with 0/1k/10k/50k Failed operations under a Lazy policy; " +
			"kubectl get cro -A median of 3, with them and after they are deleted; the policy's reports, the manager's CPU and its peak resident set while the 50k are deleted in collections of 1000"}}
}

// zombieBatch labels bulk zombies in batches of zombiesPerBatch, for
// deleting them.
const zombieBatch, zombiesPerBatch = "bench.arbiter.dev/batch", 1000

// bulkZombies writes Failed operations zombie-from..zombie-(to-1) into ns.
func (e *env) bulkZombies(ns string, from, to int) {
	parallel(to-from, func(i int) {
		op := &arbiterv1alpha1.ConflictResolutionOperation{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("zombie-%d", from+i),
				Labels: map[string]string{zombieBatch: strconv.Itoa((from + i) / zombiesPerBatch)}},
			Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "credit-account",
				Params: &apiextensionsv1.JSON{Raw: []byte(`{"amount": 1}`)},
				Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account",
					Name: fmt.Sprintf("acct-%d", i%200), Expression: creditExpr}}},
		}
		if err := e.c.Create(e.ctx, op); err != nil {
			e.t.Error(err)
			return
		}
		now := metav1.NowMicro()
		op.Status = arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: arbiterv1alpha1.PhaseFailed,
			Reason: arbiterv1alpha1.ReasonTargetNotFound, Message: "Account acct not found", CompletedAt: &now}
		if err := e.c.Status().Update(e.ctx, op); err != nil {
			e.t.Error(err)
		}
	})
}

// withoutWebhook runs f with arbiter's webhook unregistered, so that
// operations can be created with no manager running.
func (e *env) withoutWebhook(f func()) {
	for _, h := range e.wh.ValidatingWebhooks {
		if err := e.c.Delete(e.ctx, h); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, h := range e.wh.MutatingWebhooks {
		if err := e.c.Delete(e.ctx, h); err != nil {
			e.t.Fatal(err)
		}
	}
	// The API server drops a deleted webhook within a moment; until then a
	// create may still be sent to it.
	probe := func(ctx context.Context) (bool, error) {
		_, err := util.RequestedByStamped(ctx, e.c)
		return err == nil, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, time.Minute, true, probe); err != nil {
		e.t.Fatal("the API server still calls the webhook a minute after it was removed")
	}
	f()
	for _, h := range e.wh.ValidatingWebhooks {
		h.SetResourceVersion("")
	}
	for _, h := range e.wh.MutatingWebhooks {
		h.SetResourceVersion("")
	}
	if err := e.wh.Install(e.testEnv.Config); err != nil {
		e.t.Fatal(err)
	}
}

// footprint waits until the manager holds the zombies in its cache (its
// cleanup controller has judged each once) and has nothing queued, forces a
// GC through pprof, and returns its resident set, its peak resident set since
// it started, and its in-use heap, in bytes.
func (e *env) footprint(m *manager, zombies int) (rss, peak, heap float64) {
	idle := 0
	settled := func(context.Context) (bool, error) {
		families := scrape(e.t, "http://"+m.metrics+"/metrics")
		depth, judged := 0.0, 0.0
		for _, metric := range families["workqueue_depth"].GetMetric() {
			depth += metric.GetGauge().GetValue()
		}
		for _, metric := range families["controller_runtime_reconcile_total"].GetMetric() {
			if ofController(metric, "cleanup") {
				judged += metric.GetCounter().GetValue()
			}
		}
		if depth == 0 && judged >= float64(zombies) {
			idle++
		} else {
			idle = 0
		}
		return idle >= 3, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 500*time.Millisecond, 5*time.Minute, true, settled); err != nil {
		e.t.Fatal("the manager's work queues did not drain within 5 minutes")
	}
	resp, err := http.Get("http://" + m.pprof + "/debug/pprof/heap?gc=1")
	if err != nil {
		e.t.Fatal(err)
	}
	// BENCH_HEAP_PROFILE=dir keeps each forced-GC heap profile, for
	// reading with `go tool pprof`: what a zombie costs, by allocation site.
	out := io.Discard
	if dir := os.Getenv("BENCH_HEAP_PROFILE"); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("manager-heap-%dk-zombies.pb.gz", zombies/1000)))
		if err != nil {
			e.t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		out = f
	}
	_, _ = io.Copy(out, resp.Body)
	_ = resp.Body.Close()
	heap = scrape(e.t, "http://"+m.metrics+"/metrics")["go_memstats_heap_inuse_bytes"].GetMetric()[0].GetGauge().GetValue()
	rss, peak = residentSet(e.t, m.pid())
	return rss, peak, heap
}

// residentSet is a process's resident set and its peak since it started
// (VmRSS, VmHWM), in bytes: what a container's memory limit is held to.
func residentSet(t testing.TB, pid int) (rss, peak float64) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	bytes := func(line, field string) (float64, bool) {
		kb, ok := strings.CutPrefix(line, field+":")
		v, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 64)
		return v * 1024, ok
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := bytes(line, "VmRSS"); ok {
			rss = v
		}
		if v, ok := bytes(line, "VmHWM"); ok {
			peak = v
		}
	}
	return rss, peak
}

// policyReports is how many policy reports the manager has made, and the
// seconds they took in all.
func policyReports(t testing.TB, m *manager) (count, seconds float64) {
	for _, metric := range scrape(t, "http://"+m.metrics+"/metrics")["controller_runtime_reconcile_time_seconds"].GetMetric() {
		if ofController(metric, "cleanuppolicy") {
			count += float64(metric.GetHistogram().GetSampleCount())
			seconds += metric.GetHistogram().GetSampleSum()
		}
	}
	return count, seconds
}

// ofController reports whether a controller-runtime metric is controller's.
func ofController(metric *dto.Metric, controller string) bool {
	return slices.ContainsFunc(metric.GetLabel(), func(l *dto.LabelPair) bool {
		return l.GetName() == "controller" && l.GetValue() == controller
	})
}

// kubectlGetAll is the median wall time of three `kubectl get cro -A`.
func (e *env) kubectlGetAll() float64 {
	var times []float64
	for range 3 {
		cmd := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "get", "cro", "-A")
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			e.t.Fatalf("kubectl get cro -A: %v: %s", err, stderr.String())
		}
		times = append(times, time.Since(start).Seconds())
	}
	slices.Sort(times)
	return times[1]
}

// waitGone waits until namespace ns holds no operation, and returns how
// many are left if timeout passes first.
func (e *env) waitGone(ns string, timeout time.Duration) int {
	count := func(ctx context.Context, opts ...client.ListOption) (int, error) {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(arbiterv1alpha1.GroupVersion.WithKind("ConflictResolutionOperationList"))
		err := e.c.List(ctx, &list, append(opts, client.InNamespace(ns))...)
		return len(list.Items), err
	}
	gone := func(ctx context.Context) (bool, error) {
		n, err := count(ctx, client.Limit(1))
		return n == 0, err
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, gone); err != nil {
		left, err := count(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		return left
	}
	return 0
}

// scrape reads a Prometheus text endpoint.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// zombieBurst: 1000 operations that fail at once (the kind of their target
// is not served) are created in a burst from the benchmark's workers, under
// an Immediate policy with every other setting at its default (200
// deletions/s). The figure is the time from the last create until all 1000
// are gone.
func (e *env) zombieBurst() Result {
	const ns, n = "zombie-burst", 1000
	e.namespace(ns, 0)
	e.policy(ns, "immediate", arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupImmediate})
	requestsBefore, cpuBefore := e.requestsByResource(), machineCPU()
	start := time.Now()
	parallel(n, func(i int) {
		if err := e.c.Create(e.ctx, failingOperation(ns, fmt.Sprintf("zombie-%d", i))); err != nil {
			e.t.Error(err)
		}
	})
	burst := time.Since(start)
	if left := e.waitGone(ns, 5*time.Minute); left > 0 {
		e.t.Fatalf("%d of %d zombies left in %s after 5 minutes", left, n, ns)
	}
	all := time.Since(start)
	requests := e.requestsByResource()
	perOperation := func(resource string) float64 { return (requests[resource] - requestsBefore[resource]) / n }
	figures := map[string]float64{
		"operation_requests_per_operation": perOperation("conflictresolutionoperations"),
		"event_requests_per_operation":     perOperation("events"),
		"policy_requests_per_operation":    perOperation("cleanuppolicies"),
		"discovery_requests_per_operation": perOperation(nonResource),
		"operations":                       n,
		"burst_seconds":                    burst.Seconds(),
		"seconds_after_burst":              (all - burst).Seconds(),
		"removals_per_second":              n / all.Seconds(),
		"max_deletions_per_second":         200,
	}
	maps.Copy(figures, cpuFigures(cpuBefore, machineCPU(), n))
	return Result{Scenario: "zombie-burst", Cores: runtime.NumCPU(), Figures: figures, Notes: "1000 operations failing at once, created by 32 workers under an Immediate policy with default settings (maxDeletionsPerSecond 200); from the last create until all are gone; API requests per operation from apiserver_request_total (every verb but WATCH; the benchmark's own polling LISTs of operations included); cpu_ms_per_operation_* are each process's CPU time"}
}
