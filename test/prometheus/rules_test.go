// Package prometheus checks config/prometheus/rules.yaml with Prometheus'
// own rule parser, so that a broken alert expression cannot land.
package prometheus

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func TestPrometheusRuleParsesAndCarriesTheSeedAlerts(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "prometheus", "rules.yaml"))
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
	groups, err := yaml.Marshal(rule.Spec)
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
	var alerts []string
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
		}
	}
	for _, want := range []string{"ArbiterTooManyZombies", "ArbiterZombieTooOld", "ArbiterCleanupFailing", "ArbiterMemoryHighWithZombies"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing; have %v", want, alerts)
		}
	}
}
