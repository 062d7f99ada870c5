// Package bench measures arbiter end to end: the real bin/manager as its own
// process against a real kube-apiserver and etcd, driven by a client the way
// users drive it. `make bench` runs it with the micro-benchmarks of the pure
// packages, prints a table and writes bench.json. Timing lives here, never in
// pass/fail tests.
package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// Result is one scenario's figures, as written to bench.json.
type Result struct {
	Scenario string             `json:"scenario"`
	Cores    int                `json:"cores"`
	Figures  map[string]float64 `json:"figures"`
	Notes    string             `json:"notes,omitempty"`
}

const (
	workers     = 32
	creditExpr  = `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`
	waitTimeout = 5 * time.Minute
)

type env struct {
	t       testing.TB
	ctx     context.Context
	testEnv *envtest.Environment
	c       client.WithWatch
	kube    *kubernetes.Clientset
	// kubeconfig is a file for the processes the benchmarks start.
	kubeconfig string
	kubectl    string
	wh         *envtest.WebhookInstallOptions
	// mgr is the manager the scenarios run against.
	mgr *manager
}

func BenchmarkEndToEnd(b *testing.B) {
	if b.N > 1 {
		b.Skip("an end-to-end run is long: run with -benchtime 1x")
	}
	logf.SetLogger(logr.Discard()) // envtest's webhook installer logs through it
	ctx := context.Background()
	e := startEnv(b, ctx)
	defer func() { _ = e.testEnv.Stop() }()

	var results []Result
	// Each paired round restarts the manager on the webhooks' port.
	e.wh = &envtest.WebhookInstallOptions{Paths: util.WebhookManifests()}
	if err := util.ServeWebhooksOnServingPort(e.wh); err != nil {
		b.Fatal(err)
	}
	if err := e.wh.Install(e.testEnv.Config); err != nil {
		b.Fatal(err)
	}
	// bench.json is written after every scenario: a long run that fails
	// late keeps what it measured.
	save := func(final bool) {
		all := mergePrevious(slices.Clone(results))
		all = append(all, goals(all, final))
		if final {
			printTable(all)
		}
		out, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(util.Path("bench.json"), append(out, '\n'), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if selected("zombies") {
		results = append(results, e.zombieFootprint()...)
		save(false)
	} else {
		e.mgr = startManager(b, e, e.wh)
	}

	one := func(f func() Result) func() []Result { return func() []Result { return []Result{f()} } }
	for _, s := range []struct {
		name string
		run  func() []Result
	}{
		{"storm", e.stormRounds},
		{"queue", one(e.queue)},
		{"steady", one(e.steady)},
		{"outcomes", one(e.writesPerOutcome)},
		{"burst", one(e.zombieBurst)},
		{"anchor", one(e.cleanupVersusTTL)},
	} {
		if selected(s.name) {
			results = append(results, s.run()...)
			save(false)
		}
	}
	save(true)
}

// mergePrevious keeps, from the bench.json of an earlier run, the
// scenarios this run left out (BENCH_SCENARIOS), so that rerunning some
// updates the file rather than truncating it. The goals are recomputed.
func mergePrevious(results []Result) []Result {
	if os.Getenv("BENCH_SCENARIOS") == "" {
		return results
	}
	raw, err := os.ReadFile(util.Path("bench.json"))
	if err != nil {
		return results
	}
	var previous []Result
	if json.Unmarshal(raw, &previous) != nil {
		return results
	}
	for _, p := range previous {
		rerun := p.Scenario == "goals" || slices.ContainsFunc(results, func(r Result) bool { return r.Scenario == p.Scenario })
		if !rerun {
			results = append(results, p)
		}
	}
	return results
}

// selected reports whether a scenario runs: all of them, unless
// BENCH_SCENARIOS names some (comma-separated: zombies, storm, queue, burst,
// steady, outcomes, anchor).
func selected(name string) bool {
	only := os.Getenv("BENCH_SCENARIOS")
	return only == "" || slices.Contains(strings.Split(only, ","), name)
}

func startEnv(b *testing.B, ctx context.Context) *env {
	te, err := util.NewEnvironment(envtest.WebhookInstallOptions{})
	if err != nil {
		b.Fatal(err)
	}
	scheme := te.Scheme
	cfg, err := te.Start()
	if err != nil {
		b.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	if err := util.InstallAdmission(ctx, c); err != nil {
		b.Fatal(err)
	}
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, te.KubeConfig, 0o600); err != nil {
		b.Fatal(err)
	}
	assets, err := util.AssetsDir()
	if err != nil {
		b.Fatal(err)
	}
	return &env{t: b, ctx: ctx, testEnv: te, c: c, kube: kube, kubeconfig: kubeconfig, kubectl: filepath.Join(assets, "kubectl")}
}

// manager is a running bin/manager.
type manager struct {
	cmd                   *exec.Cmd
	probe, metrics, pprof string
}

// startManager runs bin/manager as its own process, serving the webhook wh
// describes, with pprof on, and waits until it is ready and the
// requestedBy policy stamps operations.
func startManager(b testing.TB, e *env, wh *envtest.WebhookInstallOptions) *manager {
	m := &manager{probe: freeAddr(b), metrics: freeAddr(b), pprof: freeAddr(b)}
	m.cmd = exec.Command(util.Path("bin", "manager"), "--kubeconfig", e.kubeconfig,
		"--health-probe-bind-address", m.probe, "--metrics-bind-address", m.metrics, "--metrics-secure=false",
		"--pprof-bind-address", m.pprof,
		"--webhook-port", strconv.Itoa(wh.LocalServingPort), "--webhook-cert-dir", wh.LocalServingCertDir, "--zap-log-level="+cmp.Or(os.Getenv("BENCH_MANAGER_LOG"), "error"),
		"--operation-workers=32", "--cleanup-workers="+strconv.Itoa(cleanupWorkers))
	m.cmd.Stdout, m.cmd.Stderr = os.Stderr, os.Stderr
	if err := m.cmd.Start(); err != nil {
		b.Fatalf("starting bin/manager (run make build): %v", err)
	}
	b.Cleanup(m.stop) // also when a scenario fails midway
	ready := func(ctx context.Context) (bool, error) {
		resp, err := http.Get("http://" + m.probe + "/readyz")
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		stamped, err := util.RequestedByStamped(ctx, e.c)
		return stamped && err == nil, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 2*time.Minute, true, ready); err != nil {
		b.Fatalf("bin/manager not ready, or requestedBy not stamped, after two minutes: %v", err)
	}
	return m
}

// stop kills the manager; stopping it again does nothing.
func (m *manager) stop() {
	if m.cmd.ProcessState == nil {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
	}
}

func (m *manager) pid() int { return m.cmd.Process.Pid }

// cleanupWorkers is the manager's --cleanup-workers, and the TTL anchor's
// worker count.
const cleanupWorkers = 16

// cpuSeconds is the CPU time (user and system) a process has used so far.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime is the
	// 14th field of the line, stime the 15th, in clock ticks (100 per second).
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// machineCPU is the CPU time each process of the benchmark has used so far,
// by command name: the benchmark client itself ("client") and the
// processes it started (kube-apiserver, etcd, manager, ...). Read before
// and after a scenario, it shows which process the machine's cores went
// to.
func machineCPU() map[string]float64 {
	use := map[string]float64{"client": cpuSeconds(os.Getpid())}
	self := strconv.Itoa(os.Getpid())
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		line := string(raw)
		open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || closing < open {
			continue
		}
		// The parent's pid is the second field after the command name.
		if fields := strings.Fields(line[closing+2:]); len(fields) > 1 && fields[1] == self {
			pid, _ := strconv.Atoi(d.Name())
			use[line[open+1:closing]] += cpuSeconds(pid)
		}
	}
	return use
}

// cpuFigures turns two readings of machineCPU into figures: each process's
// CPU milliseconds per operation, and their sum.
func cpuFigures(before, after map[string]float64, operations float64) map[string]float64 {
	figures := map[string]float64{}
	var total float64
	for name, s := range after {
		ms := (s - before[name]) * 1000 / operations
		total += ms
		figures["cpu_ms_per_operation_"+strings.NewReplacer("-", "_", ".", "_").Replace(name)] = ms
	}
	figures["cpu_ms_per_operation_all_processes"] = total
	return figures
}

// freeAddr is a loopback address for one of the manager's servers (see
// util.ServingPort).
func freeAddr(b testing.TB) string {
	addr, err := util.ServingAddr("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	return addr
}

func (e *env) namespace(name string, accounts int) {
	if err := e.c.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		e.t.Fatal(err)
	}
	parallel(accounts, func(i int) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("bank.example.com/v1")
		u.SetKind("Account")
		u.SetNamespace(name)
		u.SetName(fmt.Sprintf("acct-%d", i))
		_ = unstructured.SetNestedField(u.Object, int64(0), "spec", "balance")
		if err := e.c.Create(e.ctx, u); err != nil {
			e.t.Error(err)
		}
	})
}

// policy creates CleanupPolicy ns/name with spec.
func (e *env) policy(ns, name string, spec arbiterv1alpha1.CleanupPolicySpec) {
	if err := e.c.Create(e.ctx, &arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}); err != nil {
		e.t.Fatal(err)
	}
}

// parallel runs f(0..n-1) on the benchmark's client workers.
func parallel(n int, f func(int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func operation(ns, name string, target int, priority int32, queue bool) *arbiterv1alpha1.ConflictResolutionOperation {
	op := &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			Function: "credit-account", Priority: priority,
			Params:  &apiextensionsv1.JSON{Raw: []byte(`{"amount": 1}`)},
			Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: fmt.Sprintf("acct-%d", target), Expression: creditExpr}},
		},
	}
	if queue {
		op.Spec.Staging.OnConflict = arbiterv1alpha1.ConflictPolicyQueue
	}
	return op
}

// stormRounds measures the raw limit and the storm in turns, stormRounds
// times, and reports the round whose ratio of the two is the median, with
// the lowest and highest ratio. This machine's speed drifts by tens of
// percent from one minute to the next; each ratio compares two figures
// taken within the same half minute.
func (e *env) stormRounds() []Result {
	const stormRounds = 3
	type round struct{ raw, storm Result }
	var rounds []round
	for r := range stormRounds {
		// The raw limit runs with no manager and no webhook: an upper bound.
		e.mgr.stop()
		var raw Result
		e.withoutWebhook(func() { raw = e.rawLimit(r) })
		e.mgr = startManager(e.t, e, e.wh)
		e.waitWebhookServed()
		rounds = append(rounds, round{raw, e.storm(r, raw)})
	}
	ratio := func(r round) float64 { return r.storm.Figures["ratio_to_raw_limit"] }
	slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(ratio(a), ratio(b)) })
	median := rounds[len(rounds)/2]
	median.storm.Figures["ratio_to_raw_limit_lowest"] = ratio(rounds[0])
	median.storm.Figures["ratio_to_raw_limit_highest"] = ratio(rounds[len(rounds)-1])
	median.storm.Figures["rounds"] = stormRounds
	return []Result{median.raw, median.storm}
}

// waitWebhookServed waits until the API server calls arbiter's validating
// webhook again, after withoutWebhook put it back: a storm timed before
// then would skip its cost.
func (e *env) waitWebhookServed() {
	invalid := operation("default", "probe", 0, 1, false)
	invalid.Spec.Targets[0].Expression = "[JSONPatch{"
	refused := func(ctx context.Context) (bool, error) {
		return e.c.Create(ctx, invalid.DeepCopy(), client.DryRunAll) != nil, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, time.Minute, true, refused); err != nil {
		e.t.Fatal("the API server does not call the validating webhook a minute after it was installed")
	}
}

// rawLimit issues the API writes a storm of 200 targets x 5 operations costs
// arbiter (per target 5 creates, 1 target update, 5 status writes, 4
// deletes) from a tight client with no arbitration, and no manager or
// webhook: the ceiling for arbiter's throughput on this machine. Its status
// writes carry what arbiter's outcomes carry (see finishedStatus), so that
// the ceiling is set by the same writes. It also measures the same writes
// with phase alone in status, as the raw limit did before, for comparison.
func (e *env) rawLimit(round int) Result {
	// BENCH_RAW_PROFILE profiles the first round, whose storm
	// BENCH_APISERVER_PROFILE profiles.
	full := e.rawWrites(fmt.Sprintf("raw-%d", round), round == 0, finishedStatus)
	phaseOnly := e.rawWrites(fmt.Sprintf("raw-phase-only-%d", round), false, func(op *arbiterv1alpha1.ConflictResolutionOperation, _ int32, won bool) {
		op.Status.Phase = arbiterv1alpha1.PhaseRejected
		if won {
			op.Status.Phase = arbiterv1alpha1.PhaseSucceeded
		}
	})
	full["phase_only_operations_per_second"], full["phase_only_seconds"] = phaseOnly["operations_per_second"], phaseOnly["seconds"]
	return Result{Scenario: "raw-limit", Cores: runtime.NumCPU(), Figures: full, Notes: "the API writes of a 1000-operation storm from 32 workers, without arbitration, manager or webhook; status writes carry the phase, reason, message, winner, stamps and conditions arbiter writes (phase_only_*: phase alone); cpu_ms_per_operation_* are each process's CPU time"}
}

// finishedStatus sets in op the status arbiter writes for a storm's outcome:
// Succeeded for the winner of its target's batch, else Rejected by it. It
// mirrors the controllers' status transitions (controllers/operation_status.go),
// which are not exported: a change there belongs here too.
func finishedStatus(op *arbiterv1alpha1.ConflictResolutionOperation, winner int32, won bool) {
	now := metav1.NowMicro()
	s := &op.Status
	s.EffectivePriority, s.StagedAt, s.CompletedAt, s.ObservedGeneration = op.Spec.Priority, &now, &now, op.Generation
	condition := func(t, reason, message string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: message, ObservedGeneration: op.Generation})
	}
	condition(arbiterv1alpha1.OperationStaged, arbiterv1alpha1.ReasonStaged, fmt.Sprintf("Staged with effective priority %d", op.Spec.Priority))
	if won {
		s.Phase, s.Reason, s.Attempts, s.StartedAt = arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, 1, &now
		s.Message = "Applied to 1 target(s) in 1 write attempt(s)"
		t := op.Spec.Targets[0]
		s.Targets = []arbiterv1alpha1.TargetStatus{{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name, Applied: true, ResourceVersionBefore: "1", ResourceVersionAfter: "2"}}
		condition(arbiterv1alpha1.OperationSucceeded, s.Reason, s.Message)
	} else {
		s.Phase, s.Reason, s.Winner = arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging, fmt.Sprintf("%s-%d", op.Name[:strings.LastIndexByte(op.Name, '-')], winner)
		s.Message = fmt.Sprintf("Lost staging to %s among 5 operations on the same target", s.Winner)
		condition(arbiterv1alpha1.OperationRejected, s.Reason, s.Message)
	}
	condition(arbiterv1alpha1.OperationFinished, string(s.Phase), s.Message)
}

// rawWrites times the raw limit's writes in namespace ns, each operation's
// status set by finish, with kube-apiserver profiled if profiled is set.
func (e *env) rawWrites(ns string, profiled bool, finish func(op *arbiterv1alpha1.ConflictResolutionOperation, winner int32, won bool)) map[string]float64 {
	const targets, per = 200, 5
	e.namespace(ns, targets)
	// The CRDs are served a moment after they are installed: measuring
	// before then would time failed creates. Both kinds are looked up once
	// here, so that the client's lazy REST mapper does not reload discovery
	// under the timed burst (which has failed creates before).
	served := func(ctx context.Context) (bool, error) {
		probe := operation(ns, "probe", 0, 1, false)
		acct := &unstructured.Unstructured{}
		acct.SetAPIVersion("bank.example.com/v1")
		acct.SetKind("Account")
		return e.c.Create(ctx, probe, client.DryRunAll) == nil &&
			e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "acct-0"}, acct) == nil, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, time.Minute, true, served); err != nil {
		e.t.Fatal("ConflictResolutionOperations are not served a minute after the CRDs were installed")
	}
	cpuBefore := machineCPU()
	rawProfiled := func() {}
	if profiled {
		rawProfiled = e.profileAPIServerTo("BENCH_RAW_PROFILE", 12)
	}
	start := time.Now()
	parallel(targets, func(t int) {
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range per {
			op := operation(ns, fmt.Sprintf("op-%d-%d", t, i), t, int32(i+1), false)
			if err := e.c.Create(e.ctx, op); err != nil {
				e.t.Error(err)
				return
			}
			ops = append(ops, op)
		}
		acct := &unstructured.Unstructured{}
		acct.SetAPIVersion("bank.example.com/v1")
		acct.SetKind("Account")
		if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("acct-%d", t)}, acct); err == nil {
			_ = unstructured.SetNestedField(acct.Object, int64(1), "spec", "balance")
			if err := e.c.Update(e.ctx, acct); err != nil {
				e.t.Error(err)
			}
		}
		for i, op := range ops {
			patch := client.MergeFrom(op.DeepCopy())
			finish(op, per-1, i == per-1)
			if err := e.c.Status().Patch(e.ctx, op, patch); err != nil {
				e.t.Error(err)
			}
		}
		for _, op := range ops[:per-1] {
			if err := e.c.Delete(e.ctx, op); err != nil {
				e.t.Error(err)
			}
		}
	})
	elapsed := time.Since(start)
	rawProfiled()
	figures := map[string]float64{
		"operations": targets * per, "seconds": elapsed.Seconds(), "operations_per_second": targets * per / elapsed.Seconds(),
	}
	maps.Copy(figures, cpuFigures(cpuBefore, machineCPU(), targets*per))
	return figures
}

// run creates the operations from the benchmark's workers and watches them
// until each is terminal and, if gone is set, the rejected ones are deleted.
// It returns create-to-terminal latencies and the time it all took.
// With pace set, the operations are created one every pace instead, each
// from a goroutine of its own.
func (e *env) run(ns string, ops []*arbiterv1alpha1.ConflictResolutionOperation, gone bool, pace time.Duration) (lat []time.Duration, elapsed time.Duration, phases map[arbiterv1alpha1.OperationPhase]int) {
	w, err := util.WatchFinishedOperations(e.ctx, e.c, ns)
	if err != nil {
		e.t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	created := map[string]time.Time{}
	start := time.Now()
	create := func(i int) {
		mu.Lock()
		created[ops[i].Name] = time.Now()
		mu.Unlock()
		if err := e.c.Create(e.ctx, ops[i]); err != nil {
			e.t.Error(err)
		}
	}
	if pace == 0 {
		go parallel(len(ops), create)
	} else {
		go func() {
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for i := range ops {
				<-tick.C
				go create(i)
			}
		}()
	}
	terminal := map[string]time.Time{}
	phases = map[arbiterv1alpha1.OperationPhase]int{}
	deleted := 0
	timeout := time.After(waitTimeout)
	for len(terminal) < len(ops) || (gone && deleted < phases[arbiterv1alpha1.PhaseRejected]) {
		select {
		case ev, open := <-w.ResultChan():
			if !open {
				e.t.Fatalf("%s: the watch ended", ns)
			}
			op, ok := ev.Object.(*arbiterv1alpha1.ConflictResolutionOperation)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				deleted++
			}
			if _, seen := terminal[op.Name]; !seen && op.Status.Phase.IsTerminal() {
				terminal[op.Name] = time.Now()
				phases[op.Status.Phase]++
			}
		case <-timeout:
			e.t.Fatalf("%s: after %s, %d of %d terminal, %d deleted", ns, waitTimeout, len(terminal), len(ops), deleted)
		}
	}
	elapsed = time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	for name, t := range terminal {
		lat = append(lat, t.Sub(created[name]))
	}
	slices.Sort(lat)
	return lat, elapsed, phases
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, max(0, int(float64(len(sorted))*p/100+0.5)-1))]
}

// storm: 200 targets x 5 simultaneous operations, Reject, cleaned up
// Immediately.
func (e *env) storm(round int, raw Result) Result {
	const targets, per = 200, 5
	ns := fmt.Sprintf("storm-%d", round)
	e.namespace(ns, targets)
	e.policy(ns, "immediate", arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupImmediate, MaxDeletionsPerSecond: 1000})
	// A target's five operations are created back to back, so that they
	// contend in one staging window.
	var ops []*arbiterv1alpha1.ConflictResolutionOperation
	for t := range targets {
		for i := range per {
			ops = append(ops, operation(ns, fmt.Sprintf("op-%d-%d", t, i), t, int32(i+1), false))
		}
	}
	before, requestsBefore, admissionBefore, machineBefore := e.writes(), e.requestsByResource(), e.admissionSeconds(), machineCPU()
	profiled, managerProfiled := func() {}, func() {}
	if round == 0 { // the round whose raw limit BENCH_RAW_PROFILE profiles
		profiled, managerProfiled = e.profileAPIServer(12), e.profileManager(12)
	}
	lat, elapsed, phases := e.run(ns, ops, true, 0)
	after, requestsAfter, admissionAfter, machineAfter := e.writes(), e.requestsByResource(), e.admissionSeconds(), machineCPU()
	profiled()
	managerProfiled()
	n := float64(len(ops))
	perOperation := func(resource string) float64 { return (requestsAfter[resource] - requestsBefore[resource]) / n }
	var requests float64
	for resource := range requestsAfter {
		requests += perOperation(resource)
	}
	figures := map[string]float64{
		"api_requests_per_operation":           requests,
		"event_requests_per_operation":         perOperation("events"),
		"access_review_requests_per_operation": perOperation("subjectaccessreviews"),
		"operation_requests_per_operation":     perOperation("conflictresolutionoperations"),
		"target_requests_per_operation":        perOperation("accounts"),
		"discovery_requests_per_operation":     perOperation(nonResource),
		"operations":                           n, "succeeded": float64(phases[arbiterv1alpha1.PhaseSucceeded]), "rejected": float64(phases[arbiterv1alpha1.PhaseRejected]),
		"seconds_until_all_terminal_and_losers_gone": elapsed.Seconds(),
		"operations_per_second":                      n / elapsed.Seconds(),
		"ratio_to_raw_limit":                         n / elapsed.Seconds() / raw.Figures["operations_per_second"],
		"latency_p50_seconds":                        percentile(lat, 50).Seconds(),
		"latency_p99_seconds":                        percentile(lat, 99).Seconds(),
		"api_writes_per_operation":                   (after - before) / n,
		"manager_cpu_seconds":                        machineAfter["manager"] - machineBefore["manager"],
	}
	maps.Copy(figures, admissionFigures(admissionBefore, admissionAfter, n))
	maps.Copy(figures, cpuFigures(machineBefore, machineAfter, n))
	return Result{Scenario: "storm-reject-immediate", Cores: runtime.NumCPU(), Figures: figures, Notes: "200 targets x 5 operations from 32 workers; the round whose ratio to the raw limit timed just before it is the median of three (ratio_to_raw_limit_lowest/_highest: the other two); latency from create (client clock) to terminal (watch); API writes from apiserver_request_total (operations and targets, status included); API requests of every resource and verb but WATCH, the client's included; api_server_ms_per_operation_* from the API server's admission, CEL and request duration histograms (time, not CPU); cpu_ms_per_operation_* are each process's CPU time"}
}

// queue: 50 targets x 10 queued operations, all applied.
func (e *env) queue() Result {
	const ns, targets, per = "queue", 50, 10
	e.namespace(ns, targets)
	var ops []*arbiterv1alpha1.ConflictResolutionOperation
	for t := range targets {
		for i := range per {
			op := operation(ns, fmt.Sprintf("op-%d-%d", t, i), t, int32(i%10+1), true)
			op.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Minute} // the last in line waits for nine others
			ops = append(ops, op)
		}
	}
	lat, elapsed, phases := e.run(ns, ops, false, 0)
	return Result{Scenario: "queue", Cores: runtime.NumCPU(), Figures: map[string]float64{
		"operations": float64(len(ops)), "succeeded": float64(phases[arbiterv1alpha1.PhaseSucceeded]),
		"seconds_until_all_succeeded": elapsed.Seconds(),
		"latency_p50_seconds":         percentile(lat, 50).Seconds(),
		"latency_p99_seconds":         percentile(lat, 99).Seconds(),
	}, Notes: "50 targets x 10 operations with onConflict Queue, from 32 workers"}
}

// writes sums the API server's mutating requests on operations and accounts.
func (e *env) writes() float64 {
	w := e.writesByResource()
	return w["conflictresolutionoperations"] + w["accounts"]
}

// writesByResource counts the API server's mutating requests so far, by
// resource, from its apiserver_request_total.
func (e *env) writesByResource() map[string]float64 {
	return e.apiRequests(func(verb string) bool {
		return verb == "POST" || verb == "PUT" || verb == "PATCH" || verb == "DELETE"
	})
}

// requestsByResource counts the API server's requests so far, every verb
// but the long-running WATCH, by resource.
func (e *env) requestsByResource() map[string]float64 {
	return e.apiRequests(func(verb string) bool { return verb != "WATCH" })
}

// nonResource counts the requests for no resource: discovery (/api, /apis),
// and the benchmark's own scrapes of /metrics, two per scenario.
const nonResource = "(non-resource)"

// apiRequests sums apiserver_request_total by resource, over the verbs
// counted.
func (e *env) apiRequests(counted func(verb string) bool) map[string]float64 {
	total := map[string]float64{}
	for _, m := range e.apiServerMetrics()["apiserver_request_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if counted(labels["verb"]) {
			total[cmp.Or(labels["resource"], nonResource)] += m.GetCounter().GetValue()
		}
	}
	return total
}

func printTable(results []Result) {
	fmt.Printf("\narbiter end-to-end benchmarks (%d cores)\n", runtime.NumCPU())
	fmt.Printf("%-24s %-44s %12s\n", "SCENARIO", "FIGURE", "VALUE")
	for _, r := range results {
		keys := make([]string, 0, len(r.Figures))
		for k := range r.Figures {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Printf("%-24s %-44s %12.3f\n", r.Scenario, k, r.Figures[k])
		}
	}
}
