package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("The manager binary's version", func() {
	It("is the one make build stamped, not the unstamped default", func() {
		out, err := exec.Command(managerBin, "--version").Output()
		Expect(err).NotTo(HaveOccurred())
		got := strings.TrimSpace(string(out))
		Expect(got).NotTo(Equal("dev"), "bin/manager was built without the Makefile's -ldflags")
		// make test says what it stamped; a hand-run suite knows only that
		// something was.
		if want := os.Getenv("ARBITER_VERSION"); want != "" {
			Expect(got).To(Equal(want))
		}
	})
})

var _ = Describe("The shipped Deployment", func() {
	It("outlasts the manager's graceful shutdown, and a PodDisruptionBudget keeps one of its two replicas", func() {
		rendered, err := kubectl("kustomize", "config/default")
		Expect(err).NotTo(HaveOccurred())
		var deployment *appsv1.Deployment
		var pdb *policyv1.PodDisruptionBudget
		for _, doc := range strings.Split(rendered, "\n---\n") {
			switch {
			case strings.Contains(doc, "\nkind: Deployment\n"):
				deployment = &appsv1.Deployment{}
				Expect(yaml.Unmarshal([]byte(doc), deployment)).To(Succeed())
			case strings.Contains(doc, "\nkind: PodDisruptionBudget\n"):
				pdb = &policyv1.PodDisruptionBudget{}
				Expect(yaml.Unmarshal([]byte(doc), pdb)).To(Succeed())
			}
		}
		Expect(deployment).NotTo(BeNil(), "config/default renders no Deployment")
		Expect(pdb).NotTo(BeNil(), "config/default renders no PodDisruptionBudget")

		pod := deployment.Spec.Template.Spec
		var shutdown time.Duration
		for _, arg := range pod.Containers[0].Args {
			if value, ok := strings.CutPrefix(arg, "--graceful-shutdown-timeout="); ok {
				shutdown, err = time.ParseDuration(value)
				Expect(err).NotTo(HaveOccurred(), arg)
			}
		}
		Expect(shutdown).To(BeNumerically(">", 0), "the manager's args do not set --graceful-shutdown-timeout")
		Expect(pod.TerminationGracePeriodSeconds).NotTo(BeNil())
		Expect(time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second).To(BeNumerically(">", shutdown),
			"terminationGracePeriodSeconds must outlast --graceful-shutdown-timeout")
		Expect(pod.Containers[0].Args).To(ContainElement("--leader-elect"))

		Expect(*deployment.Spec.Replicas).To(BeNumerically(">", 1))
		Expect(pdb.Spec.MinAvailable).NotTo(BeNil())
		Expect(pdb.Spec.MinAvailable.IntValue()).To(Equal(1))
		Expect(pdb.Spec.MinAvailable.IntValue()).To(BeNumerically("<", int(*deployment.Spec.Replicas)),
			"a PodDisruptionBudget that keeps every replica blocks node drains")
		Expect(pdb.Spec.Selector.MatchLabels).To(Equal(deployment.Spec.Selector.MatchLabels))

		resources := pod.Containers[0].Resources
		Expect(resources.Requests.Memory().Cmp(*resources.Limits.Memory())).To(BeNumerically("<=", 0))
	})
})

var _ = Describe("The deployment targets", func() {
	It("need only kubectl on the PATH: no bin/ and no controller-gen", func() {
		// LOCALBIN points nowhere: a target that reached for a built tool fails.
		kubectlDir := GinkgoT().TempDir()
		Expect(os.Symlink(util.Path("bin", "k8s", "1.37.2", "kubectl"), filepath.Join(kubectlDir, "kubectl"))).To(Succeed())
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "KUBECTL=") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "KUBECONFIG=") {
				env = append(env, kv)
			}
		}
		env = append(env, "PATH="+kubectlDir+string(filepath.ListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kubeconfig)
		nowhere := "LOCALBIN=" + filepath.Join(GinkgoT().TempDir(), "no-bin")
		runMake := func(args ...string) (string, error) {
			cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", util.RepoRoot(), nowhere}, args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			return string(out), err
		}

		out, err := runMake("install")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/conflictresolutionoperations.arbiter.dev serverside-applied"))

		// The others change the cluster beyond what this suite may undo:
		// what they would run is checked instead.
		out, err = runMake("--dry-run", "deploy", "undeploy", "uninstall")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("kubectl kustomize config/default"))
		Expect(out).To(ContainSubstring("kubectl delete --ignore-not-found -k config/default"))
		Expect(out).To(ContainSubstring("kubectl delete --ignore-not-found -k config/crd"))
		Expect(out).NotTo(ContainSubstring("no-bin"))
		Expect(out).NotTo(ContainSubstring("controller-gen"))
	})
})

// managerMemoryLimit is the memory limit of the manager's Deployment
// (config/manager): past it, a pod is OOM-killed.
func managerMemoryLimit() int64 {
	GinkgoHelper()
	raw, err := os.ReadFile(util.Path("config", "manager", "manager.yaml"))
	Expect(err).NotTo(HaveOccurred())
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		if !strings.Contains(doc, "\nkind: Deployment\n") {
			continue
		}
		deployment := &appsv1.Deployment{}
		Expect(yaml.Unmarshal([]byte(doc), deployment)).To(Succeed())
		limit := deployment.Spec.Template.Spec.Containers[0].Resources.Limits.Memory()
		Expect(limit.IsZero()).To(BeFalse(), "config/manager sets no memory limit")
		return limit.Value()
	}
	Fail("config/manager/manager.yaml has no Deployment")
	return 0
}
