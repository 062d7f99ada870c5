package prometheus

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// exportedMetrics are the series names arbiter's manager exposes, from
// internal/metrics/exported.txt (generated from the code and checked by the
// main module's tests): a histogram exposes _bucket, _sum and _count.
func exportedMetrics(t *testing.T) (series map[string]bool, metrics []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repo, "internal", "metrics", "exported.txt"))
	if err != nil {
		t.Fatal(err)
	}
	series = map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(line, "#") {
			continue
		}
		metrics = append(metrics, f[0])
		if f[1] == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				series[f[0]+s] = true
			}
			continue
		}
		series[f[0]] = true
	}
	if len(metrics) == 0 {
		t.Fatal("exported.txt lists no metric")
	}
	return series, metrics
}

type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// query is one PromQL expression of a dashboard and where it is.
type query struct{ where, expr string }

func (d dashboard) queries() []query {
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{"panel " + p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		// Grafana's label_values(selector, label): the selector is PromQL.
		if m := labelValues.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		out = append(out, query{"variable " + v.Name, q})
	}
	return out
}

func (d dashboard) panelTitles() []string {
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p.Title)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func dashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo, "config", "grafana", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboard in config/grafana (%v)", err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// grafanaVars are Grafana's variables: its interval ones become a duration,
// the dashboard's own (in label matchers) a regular expression.
var (
	grafanaIntervals = regexp.MustCompile(`\$__(rate_interval|interval|range)\b`)
	grafanaVars      = regexp.MustCompile(`\$\{?\w+(:\w+)?\}?`)
)

func TestDashboardQueriesParseAndNameOnlyExportedMetrics(t *testing.T) {
	series, metrics := exportedMetrics(t)
	p := parser.NewParser(parser.Options{})
	for file, d := range dashboards(t) {
		used := map[string]bool{}
		for _, q := range d.queries() {
			if strings.TrimSpace(q.expr) == "" {
				t.Errorf("%s, %s: empty query", file, q.where)
				continue
			}
			promql := grafanaVars.ReplaceAllString(grafanaIntervals.ReplaceAllString(q.expr, "5m"), ".*")
			expr, err := p.ParseExpr(promql)
			if err != nil {
				t.Errorf("%s, %s: %q does not parse: %v", file, q.where, q.expr, err)
				continue
			}
			for _, sel := range parser.ExtractSelectors(expr) {
				name := nameMatcher(sel)
				if name == nil {
					t.Errorf("%s, %s: a selector of %q names no metric", file, q.where, q.expr)
					continue
				}
				matched := false
				for s := range series {
					if name.Matches(s) {
						matched = true
						used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "_bucket"), "_sum"), "_count")] = true
					}
				}
				if !matched {
					t.Errorf("%s, %s: %q queries %s, which arbiter does not export", file, q.where, q.expr, name)
				}
			}
		}
		if file == "arbiter.json" {
			for _, m := range metrics {
				if !used[m] {
					t.Errorf("%s has no panel on %s", file, m)
				}
			}
		}
	}
}

func nameMatcher(sel []*labels.Matcher) *labels.Matcher {
	for _, m := range sel {
		if m.Name == labels.MetricName {
			return m
		}
	}
	return nil
}

// The namespace variable filters every per-namespace panel.
func TestDashboardHasANamespaceVariable(t *testing.T) {
	for file, d := range dashboards(t) {
		found := false
		for _, v := range d.Templating.List {
			found = found || v.Name == "namespace"
		}
		if !found {
			t.Errorf("%s has no namespace template variable", file)
		}
		for _, q := range d.queries() {
			if strings.Contains(q.expr, "namespace") && strings.HasPrefix(q.where, "panel") && !strings.Contains(q.expr, `namespace=~"$namespace"`) {
				t.Errorf("%s, %s: %q groups by namespace but ignores the namespace variable", file, q.where, q.expr)
			}
		}
	}
}

func TestREADMEListsTheDashboardPanels(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for file, d := range dashboards(t) {
		for _, title := range d.panelTitles() {
			if !strings.Contains(string(readme), "| "+title+" |") {
				t.Errorf("README.md has no row for panel %q of %s", title, file)
			}
		}
	}
}
