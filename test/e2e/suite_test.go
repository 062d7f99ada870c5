// Package e2e tests arbiter as a user runs it: the built bin/manager as its
// own process and the real kubectl, against a real kube-apiserver and etcd.
package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/arbiter-dev/arbiter/test/util"
)

var (
	testEnv    *envtest.Environment
	cfg        *rest.Config
	k8sClient  client.Client
	kubeconfig string
	kubectlBin string
	managerBin = util.Path("bin", "manager")
	manager    *managerProcess
	ctx        context.Context
	cancel     context.CancelFunc
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())

	_, err := os.Stat(managerBin)
	Expect(err).NotTo(HaveOccurred(), "bin/manager is missing: run `make build` (make test builds it)")
	assets, err := util.AssetsDir()
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(assets, "kubectl")

	testEnv, err = util.NewEnvironment(envtest.WebhookInstallOptions{Paths: util.WebhookManifests()})
	Expect(err).NotTo(HaveOccurred())
	// A certificate directory of our own survives an API server restart, so
	// the restarted server keeps the CA every kubeconfig trusts.
	testEnv.ControlPlane.GetAPIServer().CertDir = GinkgoT().TempDir()
	// So is its address: the API server restart spec starts it again there.
	port, err := util.ServingPort()
	Expect(err).NotTo(HaveOccurred())
	serving := &testEnv.ControlPlane.GetAPIServer().SecureServing
	serving.Address, serving.Port = "127.0.0.1", strconv.Itoa(port)
	scheme := testEnv.Scheme
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600)).To(Succeed())

	manager = startManager()
	Expect(util.InstallAdmission(ctx, k8sClient)).To(Succeed())
	Eventually(func() (bool, error) { return util.RequestedByStamped(ctx, k8sClient) }, util.Timeout, util.Interval).Should(BeTrue())
})

var _ = AfterSuite(func() {
	if manager != nil {
		manager.stop()
	}
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// managerProcess is a running bin/manager.
type managerProcess struct {
	cmd         *exec.Cmd
	probeAddr   string
	metricsAddr string
	done        chan struct{}
	// log holds what the manager wrote, for specs that read its log.
	log *util.SyncBuffer
}

// startManager runs bin/manager against the test control plane on free
// loopback ports and waits until it reports ready.
func startManager(extraArgs ...string) *managerProcess {
	GinkgoHelper()
	m := &managerProcess{probeAddr: freeAddr(), metricsAddr: freeAddr(), done: make(chan struct{}), log: &util.SyncBuffer{}}
	args := append([]string{
		"--kubeconfig", kubeconfig,
		"--health-probe-bind-address", m.probeAddr,
		"--metrics-bind-address", m.metricsAddr,
		"--metrics-secure=false",
		"--webhook-port", strconv.Itoa(testEnv.WebhookInstallOptions.LocalServingPort),
		"--webhook-cert-dir", testEnv.WebhookInstallOptions.LocalServingCertDir,
	}, extraArgs...)
	m.cmd = exec.Command(managerBin, args...)
	// One writer for both: exec then never interleaves parts of lines.
	out := io.MultiWriter(GinkgoWriter, m.log)
	m.cmd.Stdout, m.cmd.Stderr = out, out
	Expect(m.cmd.Start()).To(Succeed())
	go func() { _ = m.cmd.Wait(); close(m.done) }()

	Eventually(func(g Gomega) {
		g.Expect(m.done).NotTo(BeClosed(), "bin/manager exited")
		g.Expect(util.HTTPGet("http://" + m.probeAddr + "/readyz")).To(Equal("ok"))
	}, util.LongTimeout, util.Interval).Should(Succeed())
	return m
}

// metric reads a counter or gauge without labels from the manager's
// /metrics (served over plain HTTP in these tests).
func (m *managerProcess) metric(name string) float64 {
	GinkgoHelper()
	body, err := util.HTTPGet("http://" + m.metricsAddr + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	for line := range strings.Lines(body) {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			Expect(err).NotTo(HaveOccurred(), line)
			return v
		}
	}
	Fail(fmt.Sprintf("metric %s not exported", name))
	return 0
}

// sum adds up the samples of a labelled counter or gauge on the manager's
// /metrics whose labels contain match.
func (m *managerProcess) sum(name, match string) float64 {
	GinkgoHelper()
	body, err := util.HTTPGet("http://" + m.metricsAddr + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	total := 0.0
	for line := range strings.Lines(body) {
		labels, value, ok := strings.Cut(strings.TrimSpace(line), "} ")
		if !ok || !strings.HasPrefix(labels, name+"{") || !strings.Contains(labels, match) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		Expect(err).NotTo(HaveOccurred(), line)
		total += v
	}
	return total
}

// peakResidentBytes is the manager's peak resident set since it started
// (VmHWM), read from /proc.
func (m *managerProcess) peakResidentBytes() int64 {
	GinkgoHelper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	Expect(err).NotTo(HaveOccurred())
	for line := range strings.Lines(string(status)) {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			Expect(err).NotTo(HaveOccurred(), line)
			return v << 10
		}
	}
	Fail("no VmHWM in /proc status")
	return 0
}

func (m *managerProcess) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	Eventually(m.done, util.Timeout).Should(BeClosed())
}

// freeAddr returns a loopback address with a port nobody listens on, which
// no outgoing connection takes before the manager binds it (see
// util.ServingPort).
func freeAddr() string {
	GinkgoHelper()
	addr, err := util.ServingAddr("127.0.0.1")
	Expect(err).NotTo(HaveOccurred())
	return addr
}

// kubectl runs the real kubectl against the test control plane and returns
// its standard output; a failure carries standard error.
func kubectl(args ...string) (string, error) {
	return kubectlWithInput("", args...)
}

func kubectlWithInput(stdin string, args ...string) (string, error) {
	return util.Kubectl(kubectlBin, kubeconfig, stdin, args...)
}
