package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("API server restart", Label("faults"), func() {
	It("reconnects when kube-apiserver is killed and restarted mid-storm (etcd kept); nothing is lost or applied twice", func() {
		const ns, accounts, operations = "apiserver-restart", 10, 200
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		createAccounts(ns, accounts)
		want := make([]int64, accounts)
		for i := range operations {
			want[i%accounts] += int64(i + 1)
		}
		createConcurrently(operations, func(i int) client.Object {
			return creditOperation(ns, i, accounts, arbiterv1alpha1.ConflictPolicyQueue)
		})

		// SIGKILL, as a crashed or OOM-killed API server: no graceful
		// goodbye to the manager's connections and watches.
		doneAtRestart := len(terminal(ns))
		apiServer := testEnv.ControlPlane.GetAPIServer()
		stopped := time.Now()
		killProcess("kube-apiserver", apiServer.CertDir)
		Expect(apiServer.Stop()).To(Succeed())
		Expect(apiServer.Start()).To(Succeed())
		outage := time.Since(stopped)

		expectAllSucceeded(ns, operations)
		expectBalances(ns, want)
		Expect(manager.done).NotTo(BeClosed(), "the manager rides out the outage")
		fmt.Fprintf(GinkgoWriter, "API server restart: down %s, operations terminal at the restart: %d of %d, lost: 0, applied twice: 0\n",
			outage.Round(100*time.Millisecond), doneAtRestart, operations)
	})
})

var _ = Describe("External writers", Label("faults"), func() {
	It("loses neither the credits nor the writes of another client hammering the same targets", func() {
		const ns, accounts, operations, external = "external-writers", 5, 100, 1000
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		createAccounts(ns, accounts)
		conflictsBefore := manager.metric("arbiter_occ_conflicts_total")

		// Two writers outside arbiter add `external` to the accounts with
		// their own read-modify-write, as a human or another controller would.
		writes := make([]int64, accounts)
		var writerConflicts int
		var mu sync.Mutex
		stop := make(chan struct{})
		var writers sync.WaitGroup
		for w := range 2 {
			writers.Go(func() {
				defer GinkgoRecover()
				pace := time.NewTicker(20 * time.Millisecond)
				defer pace.Stop()
				for n := w; ; n++ {
					select {
					case <-stop:
						return
					case <-pace.C:
					}
					a := n % accounts
					acct := &unstructured.Unstructured{}
					acct.SetAPIVersion("bank.example.com/v1")
					acct.SetKind("Account")
					Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("acct-%d", a)}, acct)).To(Succeed())
					balance, _, _ := unstructured.NestedInt64(acct.Object, "spec", "balance")
					Expect(unstructured.SetNestedField(acct.Object, balance+external, "spec", "balance")).To(Succeed())
					err := k8sClient.Update(ctx, acct)
					mu.Lock()
					switch {
					case err == nil:
						writes[a]++
					case apierrors.IsConflict(err):
						writerConflicts++
					default:
						Fail(fmt.Sprintf("external write: %v", err))
					}
					mu.Unlock()
				}
			})
		}

		want := make([]int64, accounts)
		createConcurrently(operations, func(i int) client.Object {
			want[i%accounts] += int64(i + 1)
			op := creditOperation(ns, i, accounts, arbiterv1alpha1.ConflictPolicyQueue)
			op.Spec.OCC.MaxRetries = new(int32(100))
			return op
		})
		expectAllSucceeded(ns, operations)
		close(stop)
		writers.Wait()

		var externalWrites int64
		for a := range accounts {
			want[a] += writes[a] * external
			externalWrites += writes[a]
		}
		expectBalances(ns, want)
		conflicts := manager.metric("arbiter_occ_conflicts_total") - conflictsBefore
		Expect(conflicts).To(BeNumerically(">", 0), "arbiter met the external writes as 409 Conflicts and counted them")
		fmt.Fprintf(GinkgoWriter, "external writers: %d credits and %d external writes on %d accounts, all kept; conflicts: %.0f met by arbiter (arbiter_occ_conflicts_total), %d by the writers\n",
			operations, externalWrites, accounts, conflicts, writerConflicts)
	})
})

var _ = Describe("Cleanup across restarts", Label("faults"), func() {
	It("keeps each Deferred zombie for its retention and deletes all of them, rate-limited, across a manager restart", func() {
		const ns, zombies, perSecond = "deferred-restart", 5000, 100
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())

		// The watch sees each zombie complete and go; a deletion is timed
		// when seen, never earlier than it happened.
		watcher, err := client.NewWithWatch(cfg, client.Options{Scheme: testEnv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := util.WatchOperations(ctx, watcher, ns)
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		type fate struct{ completed, deleted time.Time }
		var mu sync.Mutex
		fates := map[string]*fate{}
		completed, deleted := 0, 0
		go func() {
			defer GinkgoRecover()
			for ev := range w.ResultChan() {
				op, ok := ev.Object.(*arbiterv1alpha1.ConflictResolutionOperation)
				if !ok {
					continue
				}
				mu.Lock()
				f := fates[op.Name]
				if f == nil {
					f = &fate{}
					fates[op.Name] = f
				}
				if f.completed.IsZero() && op.Status.CompletedAt != nil {
					f.completed = op.Status.CompletedAt.Time
					completed++
				}
				if ev.Type == watch.Deleted {
					f.deleted = time.Now()
					deleted++
				}
				mu.Unlock()
			}
		}()
		progress := func() (int, int) { mu.Lock(); defer mu.Unlock(); return completed, deleted }

		// A zombie of the cheapest kind: its target's kind is not served, so
		// it fails before staging.
		createConcurrently(zombies, func(i int) client.Object {
			return &arbiterv1alpha1.ConflictResolutionOperation{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("zombie-%d", i)},
				Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "zombie", Targets: []arbiterv1alpha1.Target{{
					APIVersion: "ghosts.example.com/v1", Kind: "Ghost", Name: "nobody",
					MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{}}`)},
				}}},
			}
		})
		Eventually(func() int { c, _ := progress(); return c }, 2*util.LongTimeout, util.Interval).Should(Equal(zombies))

		// A retention of half the time since the first zombie completed: the
		// older half has expired when the policy arrives and the younger half
		// has not, so the rate limit and the retention are both put to work.
		mu.Lock()
		first := time.Now()
		for _, f := range fates {
			if f.completed.Before(first) {
				first = f.completed
			}
		}
		mu.Unlock()
		retention := max(5*time.Second, time.Since(first)/2).Round(100 * time.Millisecond)
		policyAt := time.Now()
		Expect(k8sClient.Create(ctx, &arbiterv1alpha1.CleanupPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deferred"},
			Spec: arbiterv1alpha1.CleanupPolicySpec{
				Strategy:              arbiterv1alpha1.CleanupDeferred,
				Retention:             &metav1.Duration{Duration: retention},
				MaxDeletionsPerSecond: perSecond,
			},
		})).To(Succeed())

		Eventually(func() int { _, d := progress(); return d }, 2*util.LongTimeout, util.Interval).Should(BeNumerically(">=", zombies/2))
		manager.kill()
		restartAt := time.Now()
		_, deletedAtKill := progress()
		manager = startManager()
		Eventually(func() int { _, d := progress(); return d }, 3*util.LongTimeout, util.Interval).Should(Equal(zombies))

		mu.Lock()
		defer mu.Unlock()
		var expiries, deletions []time.Time
		for name, f := range fates {
			expiry := f.completed.Add(retention)
			Expect(f.deleted).NotTo(BeTemporally("<", expiry), "%s was deleted before its retention of %s", name, retention)
			expiries = append(expiries, expiry)
			deletions = append(deletions, f.deleted)
		}
		slices.SortFunc(deletions, func(a, b time.Time) int { return a.Compare(b) })
		soonest := soonestLastDeletion(expiries, perSecond, policyAt, restartAt)
		last := deletions[len(deletions)-1]
		Expect(last).NotTo(BeTemporally("<", soonest),
			"%d deletions at %d/s with a restart cannot end before %s after the policy; they ended after %s",
			zombies, perSecond, soonest.Sub(policyAt), last.Sub(policyAt))

		peak := 0
		for i, j := 0, 0; j < len(deletions); j++ {
			for deletions[j].Sub(deletions[i]) >= time.Second {
				i++
			}
			peak = max(peak, j-i+1)
		}
		var quartiles []string
		for q := 1; q <= 4; q++ {
			quartiles = append(quartiles, deletions[q*len(deletions)/4-1].Sub(policyAt).Round(100*time.Millisecond).String())
		}
		fmt.Fprintf(GinkgoWriter, "cleanup across restarts: kill at %s after the policy; 25/50/75/100%% deleted at %v\n",
			restartAt.Sub(policyAt).Round(100*time.Millisecond), quartiles)
		fmt.Fprintf(GinkgoWriter, "cleanup across restarts: %d Deferred zombies, retention %s, 1 manager kill (%d deleted before it), none deleted early; deletions took %s after the policy (the %d/s limit allows %s at the soonest), peak %d in one second\n",
			zombies, retention, deletedAtKill, last.Sub(policyAt).Round(100*time.Millisecond), perSecond,
			soonest.Sub(policyAt).Round(100*time.Millisecond), peak)
	})
})

// soonestLastDeletion is the soonest the last of these zombies can be deleted
// under a token bucket of perSecond tokens a second, perSecond deep: full
// when the policy arrives (start), and full again after each restart, as a
// new manager starts with a new bucket. Each zombie goes no sooner than its
// expiry; downtime is ignored, so this is a lower bound.
func soonestLastDeletion(expiries []time.Time, perSecond float64, start time.Time, restarts ...time.Time) time.Time {
	expiries = slices.SortedFunc(slices.Values(expiries), func(a, b time.Time) int { return a.Compare(b) })
	restarts = slices.SortedFunc(slices.Values(restarts), func(a, b time.Time) int { return a.Compare(b) })
	now, tokens := start, perSecond
	advance := func(to time.Time) {
		tokens = min(perSecond, tokens+perSecond*to.Sub(now).Seconds())
		for len(restarts) > 0 && !restarts[0].After(to) {
			tokens, restarts = perSecond, restarts[1:]
		}
		now = to
	}
	for _, expiry := range expiries {
		if expiry.After(now) {
			advance(expiry)
		}
		if tokens < 1 {
			wait := time.Duration((1 - tokens) / perSecond * float64(time.Second))
			if len(restarts) > 0 && restarts[0].Before(now.Add(wait)) {
				advance(restarts[0])
			} else {
				advance(now.Add(wait))
			}
		}
		tokens--
	}
	return now
}

// createConcurrently creates n objects with 8 clients at once, as a busy
// cluster would.
func createConcurrently(n int, object func(i int) client.Object) {
	GinkgoHelper()
	objects := make([]client.Object, n)
	for i := range objects {
		objects[i] = object(i)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			defer GinkgoRecover()
			for i := w; i < n; i += 8 {
				Expect(k8sClient.Create(ctx, objects[i])).To(Succeed())
			}
		})
	}
	wg.Wait()
}

// killProcess sends SIGKILL to the process of this binary whose command line
// mentions marker, and waits until it is gone.
func killProcess(binary, marker string) {
	GinkgoHelper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	Expect(err).NotTo(HaveOccurred())
	pid := 0
	for _, path := range cmdlines {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(string(raw), "\x00")
		if filepath.Base(args[0]) == binary && strings.Contains(string(raw), marker) {
			pid, err = strconv.Atoi(filepath.Base(filepath.Dir(path)))
			Expect(err).NotTo(HaveOccurred())
			break
		}
	}
	Expect(pid).NotTo(BeZero(), "no %s process mentions %s", binary, marker)
	Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
	Eventually(func() error { return syscall.Kill(pid, 0) }, util.Timeout, util.Interval).Should(MatchError(syscall.ESRCH))
}
