// Package install tests a release as a user installs it: dist/install.yaml
// applied with the real kubectl to a bare kube-apiserver and etcd, then
// bin/manager run as the shipped ServiceAccount, with the release's own
// arguments and no other credentials, so that any verb the shipped roles lack
// fails a scenario.
//
// There is no kubelet: the manager runs outside the cluster. The API server
// still reaches its webhooks through the shipped webhook configurations and
// Service: with --enable-aggregator-routing it resolves a Service to its
// EndpointSlices (not its ClusterIP), and the suite publishes one pointing at
// this machine's address and the manager's webhook port, as the EndpointSlice
// controller would for a pod. The certificate the manager provisions for
// arbiter-webhook-service.arbiter-system.svc is verified as in a cluster.
package install

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/arbiter-dev/arbiter/test/util"
)

// Names a release ships (config/release).
const (
	namespace      = "arbiter-system"
	serviceAccount = "arbiter-controller-manager"
	deployment     = "arbiter-controller-manager"
	webhookService = "arbiter-webhook-service"
	certSecret     = "arbiter-webhook-server-cert"
	mutatingConfig = "arbiter-mutating-webhook-configuration"
	validatingCfg  = "arbiter-validating-webhook-configuration"
)

var (
	testEnv         *envtest.Environment
	adminCfg        *rest.Config
	admin           client.Client
	adminKubeconfig string
	kubectlBin      string
	managerBin      = util.Path("bin", "manager")
	// The manifests under test: the release's by default; `make test` runs
	// the suite a second time on the Helm chart's, rendered by
	// `make chart-install-manifests`.
	installYAML   = cmp.Or(os.Getenv("ARBITER_INSTALL_MANIFEST"), util.Path("dist", "install.yaml"))
	policyYAML    = cmp.Or(os.Getenv("ARBITER_POLICY_MANIFEST"), util.Path("dist", "requester-policy.yaml"))
	hostIP        net.IP
	managerConfig string
	leader        *managerProcess
	ctx           context.Context
	cancel        context.CancelFunc
)

func TestInstall(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "install suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())

	for _, f := range []string{managerBin, installYAML, policyYAML} {
		_, err := os.Stat(f)
		Expect(err).NotTo(HaveOccurred(), "%s is missing: run `make build release` (make test does)", f)
	}
	var err error
	hostIP, err = nonLoopbackIP()
	Expect(err).NotTo(HaveOccurred())
	assets, err := util.AssetsDir()
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(assets, "kubectl")

	// Nothing pre-installed: the release brings its CRDs.
	testEnv = &envtest.Environment{BinaryAssetsDirectory: assets}
	testEnv.ControlPlane.GetAPIServer().Configure().Set("enable-aggregator-routing", "true")
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	admin, err = client.New(adminCfg, client.Options{})
	Expect(err).NotTo(HaveOccurred())
	adminKubeconfig = filepath.Join(GinkgoT().TempDir(), "admin.kubeconfig")
	Expect(os.WriteFile(adminKubeconfig, testEnv.KubeConfig, 0o600)).To(Succeed())

	// The optional requester policy is applied last (a spec of its own): until
	// then every operation is stamped by the manager's mutating webhook.
	out, err := kubectl(adminKubeconfig, "apply", "--server-side", "-f", installYAML)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Println(out)

	managerConfig = serviceAccountKubeconfig()
	leader = startManager()
	publishWebhookEndpoint(leader)
	leader.waitReady()
})

var _ = AfterSuite(func() {
	if leader != nil {
		leader.stop()
	}
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// nonLoopbackIP is an address of this machine the API server may dial: it
// refuses loopback endpoints.
func nonLoopbackIP() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && ipnet.IP.To4() != nil && ipnet.IP.IsGlobalUnicast() {
			return ipnet.IP.To4(), nil
		}
	}
	return nil, errors.New("this machine has no non-loopback IPv4 address: the API server cannot reach the webhooks of a manager running outside the cluster")
}

// serviceAccountKubeconfig writes a kubeconfig holding only a TokenRequest
// token of the shipped ServiceAccount.
func serviceAccountKubeconfig() string {
	GinkgoHelper()
	cs, err := kubernetes.NewForConfig(adminCfg)
	Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: adminCfg.Host, CertificateAuthorityData: adminCfg.CAData}
	kc.AuthInfos[serviceAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["manager"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: serviceAccount}
	kc.CurrentContext = "manager"
	path := filepath.Join(GinkgoT().TempDir(), "manager.kubeconfig")
	Expect(clientcmd.WriteToFile(*kc, path)).To(Succeed())
	return path
}

// releaseArgs are the manager's arguments in dist/install.yaml's Deployment.
func releaseArgs() []string {
	GinkgoHelper()
	raw, err := os.ReadFile(installYAML)
	Expect(err).NotTo(HaveOccurred())
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var d appsv1.Deployment
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		Expect(err).NotTo(HaveOccurred())
		if d.Kind == "Deployment" && d.Name == deployment {
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Name == "manager" {
					return c.Args
				}
			}
		}
	}
	Fail("dist/install.yaml has no Deployment " + deployment + " with a manager container")
	return nil
}

// managerProcess is a running bin/manager.
type managerProcess struct {
	cmd         *exec.Cmd
	probeAddr   string
	webhookPort int
	log         *util.SyncBuffer
	done        chan struct{}
}

// startManager runs bin/manager as the shipped ServiceAccount with the
// release's arguments. Only what a pod gives it differs: its ports (free
// ones, the machine is shared), the certificate directory (a pod's
// emptyDir) and POD_NAMESPACE (the downward API).
func startManager() *managerProcess {
	GinkgoHelper()
	m := &managerProcess{probeAddr: freeAddr("127.0.0.1"), log: &util.SyncBuffer{}, done: make(chan struct{})}
	_, port, err := net.SplitHostPort(freeAddr(hostIP.String()))
	Expect(err).NotTo(HaveOccurred())
	m.webhookPort, err = strconv.Atoi(port)
	Expect(err).NotTo(HaveOccurred())

	args := []string{"--kubeconfig", managerConfig}
	for _, a := range releaseArgs() {
		switch name, _, _ := strings.Cut(a, "="); name {
		case "--metrics-bind-address":
			a = name + "=" + freeAddr("127.0.0.1")
		case "--health-probe-bind-address":
			a = name + "=" + m.probeAddr
		case "--webhook-cert-dir":
			a = name + "=" + GinkgoT().TempDir()
		case "--webhook-port":
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--webhook-port", port)
	Expect(args).To(ContainElement("--webhook-cert-management=self"))
	Expect(args).To(ContainElement("--leader-elect"))

	m.cmd = exec.Command(managerBin, args...)
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+namespace, "KUBECONFIG=")
	m.cmd.Stdout = GinkgoWriter
	m.cmd.Stderr = io.MultiWriter(GinkgoWriter, m.log)
	Expect(m.cmd.Start()).To(Succeed())
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	return m
}

func (m *managerProcess) waitReady() {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(m.done).NotTo(BeClosed(), "bin/manager exited")
		g.Expect(util.HTTPGet("http://" + m.probeAddr + "/readyz")).To(Equal("ok"))
	}, util.LongTimeout, util.Interval).Should(Succeed())
}

func (m *managerProcess) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	Eventually(m.done, util.LongTimeout).Should(BeClosed())
}

// publishWebhookEndpoint makes the webhook Service resolve to m, as the
// EndpointSlice controller does for a ready pod.
func publishWebhookEndpoint(m *managerProcess) {
	GinkgoHelper()
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{
		Namespace: namespace, Name: webhookService + "-local",
	}}
	_, err := controllerutil.CreateOrUpdate(ctx, admin, slice, func() error {
		slice.Labels = map[string]string{discoveryv1.LabelServiceName: webhookService}
		slice.AddressType = discoveryv1.AddressTypeIPv4
		slice.Endpoints = []discoveryv1.Endpoint{{
			Addresses:  []string{hostIP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}}
		// The Service's one port has no name: the slice's port matches it by that.
		slice.Ports = []discoveryv1.EndpointPort{{
			Name: ptr.To(""), Port: ptr.To(int32(m.webhookPort)), Protocol: ptr.To(corev1.ProtocolTCP),
		}}
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
}

// freeAddr returns host:port with a port nobody listens on, which no
// outgoing connection takes before the manager binds it (see
// util.ServingPort).
func freeAddr(host string) string {
	GinkgoHelper()
	addr, err := util.ServingAddr(host)
	Expect(err).NotTo(HaveOccurred())
	return addr
}

// kubectl runs the real kubectl with kubeconfig and returns its standard
// output; a failure carries standard error.
func kubectl(kubeconfig string, args ...string) (string, error) {
	return kubectlWithInput(kubeconfig, "", args...)
}

func kubectlWithInput(kubeconfig, stdin string, args ...string) (string, error) {
	return util.Kubectl(kubectlBin, kubeconfig, stdin, args...)
}
