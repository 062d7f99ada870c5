package controllers

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/arbiter-dev/arbiter/internal/registry"
	"github.com/arbiter-dev/arbiter/test/util"
)

// managerUser is who the manager under test authenticates as, so that the
// fault injector can tell its writes from the tests' own.
const managerUser = "arbiter-manager"

var (
	testEnv     *envtest.Environment
	k8sClient   client.Client
	managerCfg  *rest.Config
	testScheme  *runtime.Scheme
	faults      = newFaultInjector()
	ctx         context.Context
	cancel      context.CancelFunc
	stopManager func()
	// suiteLog is the suite's logger, to GinkgoWriter.
	suiteLog logr.Logger
	// auditLog holds every audit record the manager under test wrote.
	auditLog = &logRecords{name: AuditLoggerName}
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller suite")
}

var _ = BeforeSuite(func() {
	suiteLog = zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true))
	logf.SetLogger(suiteLog)
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	testEnv, err = util.NewEnvironment(envtest.WebhookInstallOptions{
		ValidatingWebhooks: []*admissionregistrationv1.ValidatingWebhookConfiguration{faultInjectionWebhooks()},
	})
	Expect(err).NotTo(HaveOccurred())
	testScheme = testEnv.Scheme
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: testScheme})
	Expect(err).NotTo(HaveOccurred())

	user, err := testEnv.AddUser(envtest.User{Name: managerUser, Groups: []string{"system:masters"}}, cfg)
	Expect(err).NotTo(HaveOccurred())
	managerCfg = user.Config()

	startFaultInjector()
	stopManager = startManager()
	Expect(util.InstallAdmission(ctx, k8sClient)).To(Succeed())
	Eventually(func() (bool, error) { return util.RequestedByStamped(ctx, k8sClient) }, util.Timeout, util.Interval).Should(BeTrue())
})

var _ = AfterSuite(func() {
	if stopManager != nil {
		stopManager()
	}
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// startManager runs a manager with the operation controller, as cmd/main.go
// wires it, and returns a function that stops it and waits until it has.
func startManager() func() {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  registry.CacheOptions(),
		// The suite's log, and the audit records kept for the specs to count.
		Logger: logr.New(&recordingSink{records: auditLog, next: suiteLog.GetSink()}),
		// Tests restart the manager in one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	// Access answers are reused for a second, not ten: a revocation spec
	// need not wait out the production TTL.
	Expect(Setup(ctx, mgr, Options{OperationWorkers: 8, CleanupWorkers: 4, DefaultCleanupStrategy: DefaultStrategyNone,
		AccessReviewTTL: time.Second})).To(Succeed())

	mgrCtx, mgrCancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mgrCtx)).To(Succeed())
	}()
	return func() {
		mgrCancel()
		Eventually(done, util.Timeout).Should(BeClosed())
	}
}

// startFaultInjector serves the fault-injection webhooks from this process.
func startFaultInjector() {
	GinkgoHelper()
	o := testEnv.WebhookInstallOptions
	server := webhook.NewServer(webhook.Options{Host: o.LocalServingHost, Port: o.LocalServingPort, CertDir: o.LocalServingCertDir})
	server.Register(targetWritesPath, &admission.Webhook{Handler: admission.HandlerFunc(faults.handleTargetWrite)})
	server.Register(statusWritesPath, &admission.Webhook{Handler: admission.HandlerFunc(faults.handleStatusWrite)})
	server.Register(deletesPath, &admission.Webhook{Handler: admission.HandlerFunc(faults.handleDelete)})
	go func() {
		defer GinkgoRecover()
		Expect(server.Start(ctx)).To(Succeed())
	}()
	Eventually(func() error { return server.StartedChecker()(&http.Request{}) }, util.Timeout, util.Interval).Should(Succeed())
}

func faultInjectionWebhooks() *admissionregistrationv1.ValidatingWebhookConfiguration {
	hook := func(name, path, group, resource string, op admissionregistrationv1.OperationType) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{
			Name:                    name,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Name: "faults", Namespace: "default", Path: ptr.To(path)},
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{op},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource}},
			}},
		}
	}
	c := &admissionregistrationv1.ValidatingWebhookConfiguration{
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			hook("targets.faults.test.arbiter.dev", targetWritesPath, "bank.example.com", "accounts", admissionregistrationv1.Update),
			hook("status.faults.test.arbiter.dev", statusWritesPath, "arbiter.dev", "conflictresolutionoperations/status", admissionregistrationv1.Update),
			hook("deletes.faults.test.arbiter.dev", deletesPath, "arbiter.dev", "conflictresolutionoperations", admissionregistrationv1.Delete),
		},
	}
	c.Name = "arbiter-test-faults"
	return c
}
