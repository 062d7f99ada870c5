package prometheus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"go.yaml.in/yaml/v3"
)

// alertTests is in promtool's rule unit-test format (`promtool test rules`),
// without rule_files: the rules are config/prometheus/rules.yaml's. Expected
// annotations, when given, are checked for the keys given only.
const alertTests = "testdata/alerts_test.yaml"

type testFile struct {
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	Tests              []testGroup    `yaml:"tests"`
}

type testGroup struct {
	Name          string         `yaml:"name"`
	Interval      model.Duration `yaml:"interval"`
	InputSeries   []inputSeries  `yaml:"input_series"`
	AlertRuleTest []alertCase    `yaml:"alert_rule_test"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertCase struct {
	EvalTime  model.Duration `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []struct {
		ExpLabels      map[string]string `yaml:"exp_labels"`
		ExpAnnotations map[string]string `yaml:"exp_annotations"`
	} `yaml:"exp_alerts"`
}

// plainRules writes rules.yaml's groups as a Prometheus rule file, the form
// the rule manager loads, and returns the alerts' names.
func plainRules(t *testing.T) (string, []string) {
	t.Helper()
	spec := ruleSpec(t)
	raw, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range parseRules(t).alerts() {
		names = append(names, r.Alert)
	}
	return file, names
}

func loadTests(t *testing.T) testFile {
	t.Helper()
	raw, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	var f testFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertTests, err)
	}
	return f
}

// TestAlerts feeds each test group's series to Prometheus' rule manager, as
// promtool does, and checks which alerts fire at each eval_time.
func TestAlerts(t *testing.T) {
	rulesFile, _ := plainRules(t)
	f := loadTests(t)
	evalInterval := time.Duration(f.EvaluationInterval)
	if evalInterval == 0 {
		evalInterval = time.Minute
	}
	for _, tg := range f.Tests {
		t.Run(tg.Name, func(t *testing.T) { runGroup(t, tg, evalInterval, rulesFile) })
	}
}

func runGroup(t *testing.T, tg testGroup, evalInterval time.Duration, rulesFile string) {
	interval := time.Duration(tg.Interval)
	if interval == 0 {
		interval = time.Minute
	}
	var load strings.Builder
	fmt.Fprintf(&load, "load %s\n", model.Duration(interval))
	for _, s := range tg.InputSeries {
		fmt.Fprintf(&load, "  %s %s\n", s.Series, s.Values)
	}
	p := parser.NewParser(parser.Options{})
	suite, err := promqltest.NewLazyLoader(load.String(), promqltest.LazyLoaderOpts{EnableAtModifier: true, EnableNegativeOffset: true, Parser: p})
	if err != nil {
		t.Fatalf("input_series: %v", err)
	}
	defer func() {
		if err := suite.Close(); err != nil {
			t.Error(err)
		}
	}()
	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		AppendableV2: suite.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       slog.New(slog.DiscardHandler),
		Parser:       p,
	})
	groups, errs := m.LoadGroups(evalInterval, labels.EmptyLabels(), "", nil, false, rulesFile)
	for _, err := range errs {
		t.Fatalf("loading the rules: %v", err)
	}

	byTime := map[time.Duration][]alertCase{}
	var last time.Duration
	for _, c := range tg.AlertRuleTest {
		if c.Alertname == "" {
			t.Fatalf("an alert_rule_test at eval_time %s has no alertname", c.EvalTime)
		}
		at := time.Duration(c.EvalTime)
		byTime[at] = append(byTime[at], c)
		last = max(last, at)
	}

	start := time.Unix(0, 0).UTC()
	for at := time.Duration(0); at <= last; at += evalInterval {
		ts := start.Add(at)
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				t.Fatalf("loading samples till %s: %v", at, err)
			}
			for _, g := range groups {
				g.Eval(suite.Context(), ts)
				for _, r := range g.Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("rule %s at %s: %v", r.Name(), at, err)
					}
				}
			}
		})
		// As promtool: an eval_time between two evaluations sees the earlier.
		for caseAt, cases := range byTime {
			if caseAt < at || caseAt >= at+evalInterval {
				continue
			}
			for _, c := range cases {
				checkAlerts(t, c, firing(groups, c.Alertname))
			}
		}
	}
}

// firing lists the firing alerts of a name as "label=value,..." strings,
// sorted, with their annotations.
func firing(groups map[string]*rules.Group, name string) map[string]labels.Labels {
	out := map[string]labels.Labels{}
	for _, g := range groups {
		for _, r := range g.Rules() {
			ar, ok := r.(*rules.AlertingRule)
			if !ok || ar.Name() != name {
				continue
			}
			for _, a := range ar.ActiveAlerts() {
				if a.State == rules.StateFiring {
					out[a.Labels.String()] = a.Annotations
				}
			}
		}
	}
	return out
}

func checkAlerts(t *testing.T, c alertCase, got map[string]labels.Labels) {
	t.Helper()
	var want []string
	for _, exp := range c.ExpAlerts {
		l := map[string]string{labels.AlertName: c.Alertname}
		for k, v := range exp.ExpLabels {
			l[k] = v
		}
		key := labels.FromMap(l).String()
		want = append(want, key)
		if ann, ok := got[key]; ok {
			for k, v := range exp.ExpAnnotations {
				if ann.Get(k) != v {
					t.Errorf("%s at %s: %s annotation %s = %q, want %q", c.Alertname, c.EvalTime, key, k, ann.Get(k), v)
				}
			}
		}
	}
	var have []string
	for k := range got {
		have = append(have, k)
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(want, have) {
		t.Errorf("%s at %s: firing\n  %v\nwant\n  %v", c.Alertname, c.EvalTime, have, want)
	}
}

// TestEveryAlertIsTested: each alert is expected to fire in some test, and
// expected silent in another, so that no alert can pass by never firing.
func TestEveryAlertIsTested(t *testing.T) {
	_, names := plainRules(t)
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tg := range loadTests(t).Tests {
		for _, c := range tg.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				silent[c.Alertname] = true
			}
		}
	}
	for _, n := range names {
		if !fires[n] {
			t.Errorf("no test of %s expects it to fire", n)
		}
		if !silent[n] {
			t.Errorf("no test of %s expects it to stay silent", n)
		}
	}
}
