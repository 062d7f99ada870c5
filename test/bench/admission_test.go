package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// apiServerMetrics reads the API server's /metrics.
func (e *env) apiServerMetrics() map[string]*dto.MetricFamily {
	raw, err := e.kube.RESTClient().Get().AbsPath("/metrics").DoRaw(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		e.t.Fatal(err)
	}
	return families
}

// admissionSeconds is where the API server spent its time admitting and
// validating operations so far, in seconds summed over requests: each
// admission webhook and admission plugin by name, the CRD's CEL rules, and
// the whole of the operation creates.
func (e *env) admissionSeconds() map[string]float64 {
	families := e.apiServerMetrics()
	sums := map[string]float64{}
	add := func(family, key string, keep func(labels map[string]string) bool) {
		for _, m := range families[family].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if keep(labels) {
				sums[strings.NewReplacer("{name}", labels["name"]).Replace(key)] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	add("apiserver_admission_webhook_admission_duration_seconds", "webhook {name}", func(map[string]string) bool { return true })
	add("apiserver_admission_controller_admission_duration_seconds", "admission plugin {name}", func(map[string]string) bool { return true })
	add("apiserver_cel_evaluation_duration_seconds", "crd cel rules", func(map[string]string) bool { return true })
	add("apiserver_request_duration_seconds", "create operations", func(l map[string]string) bool {
		return l["resource"] == "conflictresolutionoperations" && l["verb"] == "POST"
	})
	return sums
}

// admissionFigures turns two readings of admissionSeconds into
// milliseconds per operation, keyed as bench.json figures.
func admissionFigures(before, after map[string]float64, operations float64) map[string]float64 {
	figures := map[string]float64{}
	for key, sum := range after {
		if ms := (sum - before[key]) * 1000 / operations; ms > 0.001 {
			name := strings.NewReplacer(" ", "_", ".", "_", "-", "_").Replace(key)
			figures["api_server_ms_per_operation_"+name] = ms
		}
	}
	return figures
}

// profileManager starts a CPU profile of the manager for the next seconds
// when BENCH_MANAGER_PROFILE names a file to write it to; wait returns once
// it is written.
func (e *env) profileManager(seconds int) (wait func()) {
	return e.profileTo("BENCH_MANAGER_PROFILE", "the manager", func() ([]byte, error) {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.mgr.pprof, seconds))
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		return io.ReadAll(resp.Body)
	})
}

// profileAPIServer starts a CPU profile of kube-apiserver for the next
// seconds when BENCH_APISERVER_PROFILE names a file to write it to; wait
// returns once it is written. The profile is for reading with `go tool
// pprof`, not a figure.
func (e *env) profileAPIServer(seconds int) (wait func()) {
	return e.profileAPIServerTo("BENCH_APISERVER_PROFILE", seconds)
}

// profileAPIServerTo is profileAPIServer into the file the environment
// variable names: BENCH_RAW_PROFILE profiles the raw limit's writes, for
// `go tool pprof -diff_base` against the storm's.
func (e *env) profileAPIServerTo(variable string, seconds int) (wait func()) {
	return e.profileTo(variable, "kube-apiserver", func() ([]byte, error) {
		return e.kube.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(seconds)).
			Timeout(time.Duration(seconds+30) * time.Second).DoRaw(e.ctx)
	})
}

// profileTo runs fetch in the background when the environment variable
// names a file, and writes what it returns there; wait returns once it is
// written (at once when the variable is unset).
func (e *env) profileTo(variable, what string, fetch func() ([]byte, error)) (wait func()) {
	path := os.Getenv(variable)
	if path == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := fetch()
		if err != nil {
			e.t.Errorf("profiling %s: %v", what, err)
			return
		}
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			e.t.Error(err)
		}
	}()
	return func() { <-done }
}
