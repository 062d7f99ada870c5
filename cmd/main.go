// Command manager runs arbiter: the controllers that arbitrate
// ConflictResolutionOperations and clean up after them.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/controllers"
	"github.com/arbiter-dev/arbiter/internal/certs"
	"github.com/arbiter-dev/arbiter/internal/registry"
	"github.com/arbiter-dev/arbiter/internal/version"
	arbiterwebhook "github.com/arbiter-dev/arbiter/internal/webhook"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(arbiterv1alpha1.AddToScheme(scheme))
}

// options are the manager's command-line settings.
type options struct {
	metricsAddr             string
	metricsSecure           bool
	probeAddr               string
	pprofAddr               string
	webhookPort             int
	webhookCertDir          string
	webhookCertManagement   string
	webhookCertSecret       string
	webhookService          string
	mutatingWebhookConfig   string
	validatingWebhookConfig string
	leaderElect             bool
	leaderElectionNS        string
	gracefulShutdown        time.Duration
	kubeAPIQPS              float64
	kubeAPIBurst            int
	operationWorkers        int
	cleanupWorkers          int
	defaultCleanupStrategy  string
	printVersion            bool
	zap                     zap.Options
}

// defaultCleanupStrategies are the values --default-cleanup-strategy accepts.
var defaultCleanupStrategies = []string{
	"None",
	string(arbiterv1alpha1.CleanupImmediate),
	string(arbiterv1alpha1.CleanupDeferred),
	string(arbiterv1alpha1.CleanupLazy),
}

func bindFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443",
		"Address the metrics endpoint binds to, for example :8443 (HTTPS) or :8080 with --metrics-secure=false; 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticated and authorized against the API server (TokenReview and SubjectAccessReview).")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081",
		"Address the /healthz and /readyz probes bind to.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "",
		"Address Go's pprof endpoints (/debug/pprof/) bind to, for profiling, for example 127.0.0.1:6060; empty (the default) disables them.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "",
		"Namespace of the leader election Lease (default: the manager's own namespace; required outside a cluster).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443,
		"Port the admission webhook server listens on.")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "",
		"Directory holding the webhook server's tls.crt and tls.key (default: controller-runtime's /tmp/k8s-webhook-server/serving-certs); with --webhook-cert-management=self the manager writes them there.")
	fs.StringVar(&o.webhookCertManagement, "webhook-cert-management", certs.External,
		"Who provides the webhook serving certificate: self (the manager provisions a CA and certificate in --webhook-cert-secret, rotates them and injects the CA into both webhook configurations) or external (tls.crt and tls.key in --webhook-cert-dir, from cert-manager or files).")
	fs.StringVar(&o.webhookCertSecret, "webhook-cert-secret", "arbiter-webhook-server-cert",
		"With --webhook-cert-management=self: the Secret, in the manager's namespace (POD_NAMESPACE), holding the CA and the serving certificate.")
	fs.StringVar(&o.webhookService, "webhook-service", "arbiter-webhook-service",
		"With --webhook-cert-management=self: the webhook Service; the certificate is issued for <service>.<namespace>.svc.")
	fs.StringVar(&o.mutatingWebhookConfig, "mutating-webhook-configuration", "arbiter-mutating-webhook-configuration",
		"With --webhook-cert-management=self: the MutatingWebhookConfiguration that receives the CA bundle.")
	fs.StringVar(&o.validatingWebhookConfig, "validating-webhook-configuration", "arbiter-validating-webhook-configuration",
		"With --webhook-cert-management=self: the ValidatingWebhookConfiguration that receives the CA bundle.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader so that only one manager replica acts at a time.")
	// The Deployment's terminationGracePeriodSeconds must outlast it, so that
	// a stopping leader finishes its reconciles and releases its Lease
	// before the kubelet kills it.
	fs.DurationVar(&o.gracefulShutdown, "graceful-shutdown-timeout", 30*time.Second,
		"How long the manager waits, once told to stop, for its controllers and servers to finish before it exits.")
	// A 1000-operation burst costs a few thousand requests; the client-go
	// defaults (5 QPS, 10 burst) would stretch it to minutes.
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", 500,
		"Queries per second the manager's client may send to the API server.")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", 1000,
		"Burst of requests the manager's client may send above --kube-api-qps.")
	fs.IntVar(&o.operationWorkers, "operation-workers", 8,
		"Concurrent reconciles of ConflictResolutionOperations.")
	// Cleanup waits on the API server, not the CPU: deletes are only fast
	// enough in parallel (each policy's maxDeletionsPerSecond still applies).
	fs.IntVar(&o.cleanupWorkers, "cleanup-workers", 16,
		"Concurrent reconciles of zombie operations and of cleanup reports.")
	fs.StringVar(&o.defaultCleanupStrategy, "default-cleanup-strategy", "None",
		"Cleanup strategy for operations no CleanupPolicy or ClusterCleanupPolicy selects: None (keep them), Immediate, Deferred or Lazy; the simplest cluster-wide default.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the manager's version and exit.")
	o.zap.BindFlags(fs)
}

func (o *options) validate() error {
	valid := false
	for _, s := range defaultCleanupStrategies {
		valid = valid || s == o.defaultCleanupStrategy
	}
	if !valid {
		return fmt.Errorf("--default-cleanup-strategy: %q is not one of %v", o.defaultCleanupStrategy, defaultCleanupStrategies)
	}
	if !slices.Contains(certs.Managements, o.webhookCertManagement) {
		return fmt.Errorf("--webhook-cert-management: %q is not one of %v", o.webhookCertManagement, certs.Managements)
	}
	switch {
	case o.gracefulShutdown < 0:
		return fmt.Errorf("--graceful-shutdown-timeout: must not be negative, got %v", o.gracefulShutdown)
	case o.webhookPort <= 0 || o.webhookPort > 65535:
		return fmt.Errorf("--webhook-port: must be a port number, got %d", o.webhookPort)
	case o.kubeAPIQPS <= 0:
		return fmt.Errorf("--kube-api-qps: must be positive, got %v", o.kubeAPIQPS)
	case o.kubeAPIBurst <= 0:
		return fmt.Errorf("--kube-api-burst: must be positive, got %d", o.kubeAPIBurst)
	case o.operationWorkers <= 0:
		return fmt.Errorf("--operation-workers: must be positive, got %d", o.operationWorkers)
	case o.cleanupWorkers <= 0:
		return fmt.Errorf("--cleanup-workers: must be positive, got %d", o.cleanupWorkers)
	}
	return nil
}

func main() {
	var o options
	bindFlags(flag.CommandLine, &o)
	flag.Parse()
	if o.printVersion {
		fmt.Println(version.Version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	setupLog := ctrl.Log.WithName("setup")

	if err := o.validate(); err != nil {
		setupLog.Error(err, "Invalid flag")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		setupLog.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

func run(o options) error {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS = float32(o.kubeAPIQPS)
	cfg.Burst = o.kubeAPIBurst

	metricsOpts := metricsserver.Options{
		BindAddress:   o.metricsAddr,
		SecureServing: o.metricsSecure,
		// HTTP/2 is off: it exposes the server to the HTTP/2 Stream
		// Cancellation and Rapid Reset CVEs.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if o.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	// With self-managed certificates the manager knows its namespace and
	// reads one Secret there; the webhook server serves what that Secret holds.
	webhookOpts := webhook.Options{Port: o.webhookPort, CertDir: o.webhookCertDir, TLSOpts: metricsOpts.TLSOpts}
	cacheOpts := registry.CacheOptions()
	var certOpts certs.Options
	var serving *certs.ServingCert
	if o.webhookCertManagement == certs.Self {
		ns, err := certs.Namespace()
		if err != nil {
			return fmt.Errorf("--webhook-cert-management=self needs the manager's namespace: %w", err)
		}
		certDir := o.webhookCertDir
		if certDir == "" {
			certDir = certs.DefaultCertDir
		}
		certOpts = certs.Options{
			Namespace: ns, SecretName: o.webhookCertSecret, ServiceName: o.webhookService,
			MutatingWebhookConfiguration: o.mutatingWebhookConfig, ValidatingWebhookConfiguration: o.validatingWebhookConfig,
			CertDir: certDir,
		}
		serving = &certs.ServingCert{}
		webhookOpts.TLSOpts = append(slices.Clone(webhookOpts.TLSOpts), func(c *tls.Config) { c.GetCertificate = serving.GetCertificate })
		maps.Copy(cacheOpts.ByObject, certs.CacheByObject(certOpts))
	}
	leaderElectionNS := o.leaderElectionNS
	if leaderElectionNS == "" {
		// In a pod controller-runtime finds the namespace itself; outside one
		// the Deployment's POD_NAMESPACE still says where the Lease lives.
		leaderElectionNS = os.Getenv("POD_NAMESPACE")
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		WebhookServer:           webhook.NewServer(webhookOpts),
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "arbiter.arbiter.dev",
		LeaderElectionNamespace: leaderElectionNS,
		// A replica that stops gives up its Lease at once, so the standby
		// takes over without waiting for the lease to expire. Safe because
		// the process exits as soon as the manager has stopped.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &o.gracefulShutdown,
		// Operations are many, and zombies can number tens of thousands:
		// no managedFields, and finished operations trimmed.
		Cache: cacheOpts,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	certsReady := healthz.Ping
	if serving != nil {
		if certsReady, err = certs.Setup(mgr, certOpts, serving); err != nil {
			return fmt.Errorf("--webhook-cert-management=self: %w", err)
		}
	}

	if err := controllers.Setup(context.Background(), mgr, controllers.Options{
		OperationWorkers: o.operationWorkers, CleanupWorkers: o.cleanupWorkers, DefaultCleanupStrategy: o.defaultCleanupStrategy,
	}); err != nil {
		return err
	}
	if err := arbiterwebhook.SetupOperationWebhook(mgr); err != nil {
		return fmt.Errorf("setting up the operation webhook: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	// Ready only once the webhook server serves, with a certificate the API
	// server trusts, so a rollout never routes admission requests to a
	// replica that cannot answer them.
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook-cert", certsReady); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}

	ctrl.Log.WithName("setup").Info("Starting manager", "version", version.Version,
		"operationWorkers", o.operationWorkers, "cleanupWorkers", o.cleanupWorkers,
		"defaultCleanupStrategy", o.defaultCleanupStrategy, "leaderElect", o.leaderElect,
		"webhookCertManagement", o.webhookCertManagement)
	return mgr.Start(ctrl.SetupSignalHandler())
}
