// Command kubectl-arbiter is arbiter's kubectl plugin: on the PATH, it runs
// as `kubectl arbiter`. It reads operations and cleanup policies and says, in
// tables and sentences, what arbiter is doing with a target, why an
// operation ended as it did, and how cleanup is keeping up per namespace.
//
// It only reads, with the user's own credentials and the usual kubectl
// flags (--kubeconfig, --context, -n, ...).
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/version"
)

// options is what every subcommand shares: where the cluster is, which
// namespace, and how to print.
type options struct {
	config  *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	output  string
	// now tells the age of things; time.Now but in tests.
	now func() time.Time
}

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := newRootCommand(streams).Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: streams, now: time.Now}
	root := &cobra.Command{
		Use: "kubectl-arbiter",
		// kubectl runs it as `kubectl arbiter`: help and usage say so.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl arbiter"},
		Short:       "See what arbiter decides: the operations on a target, why one ended as it did, cleanup health",
		Long: `kubectl arbiter reads arbiter's ConflictResolutionOperations and CleanupPolicies
and explains them:

  kubectl arbiter target configmap/settings   the operations on a target now
  kubectl arbiter why credit-alice            why an operation ended as it did
  kubectl arbiter health -A                   cleanup health per namespace`,
		Version:           version.Version,
		SilenceUsage:      true,
		PersistentPreRunE: func(*cobra.Command, []string) error { return o.validate() },
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetErrPrefix("error:") // as kubectl says it
	o.config.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "",
		"Output format: json or yaml; a human-readable text when empty.")
	root.AddCommand(newTargetCommand(o), newWhyCommand(o), newHealthCommand(o))
	return root
}

// outputFormats are the values -o accepts besides the default text.
var outputFormats = []string{"json", "yaml"}

func (o *options) validate() error {
	switch o.output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output (-o): %q is not one of %v (leave it out for text)", o.output, outputFormats)
}

// namespace is the namespace to read: -n, else the kubeconfig context's.
func (o *options) namespace() (string, error) {
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	return ns, nil
}

// client is a reader of arbiter's kinds, with the RESTMapper kubectl uses.
func (o *options) client() (client.Client, meta.RESTMapper, error) {
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	mapper, err := o.config.ToRESTMapper()
	if err != nil {
		return nil, nil, fmt.Errorf("discovering the API server's resources: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper})
	if err != nil {
		return nil, nil, fmt.Errorf("creating a client: %w", err)
	}
	return c, mapper, nil
}
