// Package prometheus checks arbiter's Prometheus artefacts with Prometheus'
// own code: config/prometheus/rules.yaml parses and its alerts fire when
// they should (promtool's rule-test machinery), every alert has a runbook,
// and config/grafana's dashboards query only metrics arbiter exports.
package prometheus

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// repo is the repository's root, from this module's directory.
var repo = filepath.Join("..", "..")

// runbooks is where every alert's runbook_url points, at a section.
const (
	runbooks    = "docs/runbooks.md"
	runbookBase = "https://github.com/arbiter-dev/arbiter/blob/main/" + runbooks + "#"
)

// ruleSpec is the spec of the PrometheusRule in rules.yaml: its groups.
func ruleSpec(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repo, "config", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string         `yaml:"kind"`
		Spec map[string]any `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatalf("rules.yaml is not YAML: %v", err)
	}
	if rule.Kind != "PrometheusRule" {
		t.Fatalf("kind = %q, want PrometheusRule", rule.Kind)
	}
	return rule.Spec
}

type ruleGroups struct{ *rulefmt.RuleGroups }

func (g ruleGroups) alerts() []rulefmt.Rule {
	var out []rulefmt.Rule
	for _, grp := range g.Groups {
		for _, r := range grp.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// parseRules parses rules.yaml's groups with Prometheus' rule parser.
func parseRules(t *testing.T) ruleGroups {
	t.Helper()
	groups, err := yaml.Marshal(ruleSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	parsed, errs := rulefmt.Parse(groups, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("Prometheus refuses the rules: %v", err)
	}
	if parsed == nil {
		t.FailNow()
	}
	return ruleGroups{parsed}
}

func TestPrometheusRuleParsesAndCarriesTheSeedAlerts(t *testing.T) {
	var alerts []string
	for _, r := range parseRules(t).alerts() {
		alerts = append(alerts, r.Alert)
	}
	for _, want := range []string{"ArbiterTooManyZombies", "ArbiterZombieTooOld", "ArbiterCleanupFailing", "ArbiterMemoryHighWithZombies"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing; have %v", want, alerts)
		}
	}
}

// anchors are the anchors GitHub gives a Markdown file's headings.
func anchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	out := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")] = true
	}
	return out
}

func TestEveryAlertHasARunbookSection(t *testing.T) {
	sections := anchors(t, runbooks)
	for _, r := range parseRules(t).alerts() {
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbookBase)
		switch {
		case url == "":
			t.Errorf("alert %s has no annotations.runbook_url", r.Alert)
		case !ok:
			t.Errorf("alert %s: runbook_url %q does not start with %q", r.Alert, url, runbookBase)
		case !sections[anchor]:
			t.Errorf("alert %s: runbook_url %q names no section of %s", r.Alert, url, runbooks)
		}
	}
}

// The metrics' namespace label is the operations' namespace: Prometheus must
// keep it rather than rename it exported_namespace, or every alert by
// (namespace) would group under the manager's own namespace.
func TestServiceMonitorHonoursTheOperationsNamespace(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repo, "config", "prometheus", "monitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var monitor struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Endpoints []struct {
				HonorLabels bool `yaml:"honorLabels"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &monitor); err != nil {
		t.Fatal(err)
	}
	if monitor.Kind != "ServiceMonitor" || len(monitor.Spec.Endpoints) == 0 {
		t.Fatalf("monitor.yaml: kind %q with %d endpoints, want a ServiceMonitor with endpoints", monitor.Kind, len(monitor.Spec.Endpoints))
	}
	for i, e := range monitor.Spec.Endpoints {
		if !e.HonorLabels {
			t.Errorf("spec.endpoints[%d].honorLabels is not true", i)
		}
	}
}
