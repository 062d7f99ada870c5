package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// anchorObjects is how many objects each side removes.
const anchorObjects = 1000

// cleanupVersusTTL sets arbiter's Immediate cleanup against Kubernetes' own
// TTL-after-finished controller on the same control plane. Each side starts
// with 1000 finished objects it may not remove yet, and both get the same
// burst: 1000 patches, from 32 client workers, that make every object
// removable (a label the policy selects; ttlSecondsAfterFinished: 0 on a
// Complete Job). The figure is the time from the first patch until all
// 1000 are gone. Both run with the same client QPS and burst (500 and 1000,
// the manager's defaults) and 16 workers.
func (e *env) cleanupVersusTTL() Result {
	arbiter := e.arbiterCleanupBurst()
	ttl := e.ttlCleanupBurst()
	return Result{Scenario: "cleanup-vs-ttl-anchor", Cores: runtime.NumCPU(), Figures: map[string]float64{
		"objects":                     anchorObjects,
		"arbiter_immediate_seconds":   arbiter.Seconds(),
		"ttl_after_finished_seconds":  ttl.Seconds(),
		"ttl_seconds_over_arbiter":    ttl.Seconds() / arbiter.Seconds(),
		"arbiter_removals_per_second": anchorObjects / arbiter.Seconds(),
		"ttl_removals_per_second":     anchorObjects / ttl.Seconds(),
	}, Notes: "1000 zombies under an Immediate policy vs 1000 Complete Jobs under kube-controller-manager's ttl-after-finished and garbage-collector controllers; from a 1000-patch burst until all are gone; QPS 500, burst 1000, 16 workers each"}
}

func (e *env) arbiterCleanupBurst() time.Duration {
	const ns = "anchor-arbiter"
	e.namespace(ns, 0)
	e.policy(ns, "immediate", arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupImmediate, MaxDeletionsPerSecond: 10000,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"bench.arbiter.dev/remove": "now"}}})
	// Zombies made by arbiter itself: the kind of their target is not
	// served, so each fails at once.
	parallel(anchorObjects, func(i int) {
		if err := e.c.Create(e.ctx, failingOperation(ns, fmt.Sprintf("zombie-%d", i))); err != nil {
			e.t.Error(err)
		}
	})
	e.waitCount(ns, &arbiterv1alpha1.ConflictResolutionOperationList{}, func(l client.ObjectList) int {
		n := 0
		for _, op := range l.(*arbiterv1alpha1.ConflictResolutionOperationList).Items {
			if op.Status.Phase == arbiterv1alpha1.PhaseFailed {
				n++
			}
		}
		return n
	}, anchorObjects)
	e.settle()

	start := time.Now()
	parallel(anchorObjects, func(i int) {
		op := &metav1.PartialObjectMetadata{}
		op.SetGroupVersionKind(arbiterv1alpha1.GroupVersion.WithKind("ConflictResolutionOperation"))
		op.SetNamespace(ns)
		op.SetName(fmt.Sprintf("zombie-%d", i))
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"bench.arbiter.dev/remove":"now"}}}`))
		if err := e.c.Patch(e.ctx, op, patch); err != nil {
			e.t.Error(err)
		}
	})
	if left := e.waitGone(ns, 5*time.Minute); left > 0 {
		e.t.Fatalf("%d of %d zombies left in %s after 5 minutes", left, anchorObjects, ns)
	}
	return time.Since(start)
}

// failingOperation fails at once, a zombie made by arbiter itself: the kind
// of its target is not served.
func failingOperation(ns, name string) *arbiterv1alpha1.ConflictResolutionOperation {
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "zombie", Targets: []arbiterv1alpha1.Target{{
			APIVersion: "ghosts.example.com/v1", Kind: "Ghost", Name: "nobody",
			MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"spec":{}}`)}}}},
	}
}

func (e *env) ttlCleanupBurst() time.Duration {
	const ns = "anchor-ttl"
	e.namespace(ns, 0)
	kcm := e.startKubeControllerManager()
	stop := func() {
		if kcm.ProcessState == nil {
			_ = kcm.Process.Kill()
			_ = kcm.Wait()
		}
	}
	e.t.Cleanup(stop)
	defer stop()

	// The canary tells when the TTL and garbage collector controllers run.
	canary := e.completeJob(ns, "canary", new(int32(0)))
	e.waitJobsGone(ns, 2*time.Minute, canary)

	parallel(anchorObjects, func(i int) { e.completeJob(ns, fmt.Sprintf("job-%d", i), nil) })
	e.settle()

	start := time.Now()
	parallel(anchorObjects, func(i int) {
		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("job-%d", i)}}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"ttlSecondsAfterFinished":0}}`))
		if err := e.c.Patch(e.ctx, job, patch); err != nil {
			e.t.Error(err)
		}
	})
	e.waitJobsGone(ns, 5*time.Minute, "")
	return time.Since(start)
}

// completeJob creates a Job and marks it Complete, as the Job controller
// would once its pod succeeded (no Job controller runs here).
func (e *env) completeJob(ns, name string, ttl *int32) string {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.JobSpec{TTLSecondsAfterFinished: ttl, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "work", Image: "registry.example/work:1"}},
		}}},
	}
	if err := e.c.Create(e.ctx, job); err != nil {
		e.t.Fatal(err)
	}
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}}
	if err := e.c.Status().Update(e.ctx, job); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// startKubeControllerManager runs kube-controller-manager with only the
// TTL-after-finished and garbage collector controllers, at the manager's
// client QPS and burst and cleanup worker count.
func (e *env) startKubeControllerManager() *exec.Cmd {
	assets, err := util.AssetsDir()
	if err != nil {
		e.t.Fatal(err)
	}
	bin := filepath.Join(assets, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		e.t.Fatalf("%s is missing: run make bench, which builds it", bin)
	}
	cmd := exec.Command(bin, "--kubeconfig", e.kubeconfig,
		"--controllers=ttl-after-finished-controller,garbage-collector-controller",
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--concurrent-ttl-after-finished-syncs="+strconv.Itoa(cleanupWorkers), "--concurrent-gc-syncs="+strconv.Itoa(cleanupWorkers),
		"--leader-elect=false", "--secure-port=0", "-v=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return cmd
}

// waitJobsGone waits until namespace ns holds no Job (or, with name set, no
// Job of that name), terminating ones included.
func (e *env) waitJobsGone(ns string, timeout time.Duration, name string) {
	gone := func(ctx context.Context) (bool, error) {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "JobList"})
		opts := []client.ListOption{client.InNamespace(ns), client.Limit(1)}
		if name != "" {
			opts = append(opts, client.MatchingFields{"metadata.name": name})
		}
		if err := e.c.List(ctx, &list, opts...); err != nil {
			return false, err
		}
		return len(list.Items) == 0, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, gone); err != nil {
		e.t.Fatalf("Jobs left in %s after %s: %v", ns, timeout, err)
	}
}

// waitCount waits until count(list of ns) reaches want.
func (e *env) waitCount(ns string, list client.ObjectList, count func(client.ObjectList) int, want int) {
	reached := func(ctx context.Context) (bool, error) {
		if err := e.c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		return count(list) >= want, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 5*time.Minute, true, reached); err != nil {
		e.t.Fatalf("%s: fewer than %d after 5 minutes", ns, want)
	}
}
