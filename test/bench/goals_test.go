package bench

import (
	"fmt"
	"runtime"
)

// goal is one of issue's performance goals, read from a scenario's figure.
type goal struct {
	name, scenario, figure string
	// atMost: the figure must not exceed target; else it must reach it.
	atMost bool
	target float64
}

var performanceGoals = []goal{
	{"storm throughput >= 80% of the raw limit", "storm-reject-immediate", "ratio_to_raw_limit", false, 0.8},
	{"1000 zombies removed in <= 5 s after the burst", "zombie-burst", "seconds_after_burst", true, 5},
	{"cleanup faster than the TTL anchor", "cleanup-vs-ttl-anchor", "ttl_seconds_over_arbiter", false, 1},
	{"steady-load p99 <= window + 150 ms (100/s)", "steady-load", "at_100_per_second_latency_p99_seconds", true, 0.25},
	{"steady-load p99 <= window + 150 ms (25/s)", "steady-load", "at_25_per_second_latency_p99_seconds", true, 0.25},
	{"<= 4 KiB of manager heap per cached zombie", "zombie-footprint", "manager_heap_bytes_per_zombie", true, 4096},
}

// goals checks the results against performanceGoals, prints how far each
// is (when verbose is set), and returns them as a result of their own: for
// each goal its value, its target and whether it is met (1) or not (0).
func goals(results []Result, verbose bool) Result {
	figures := map[string]float64{}
	printf := func(format string, args ...any) {
		if verbose {
			fmt.Printf(format, args...)
		}
	}
	printf("\narbiter performance goals (%d cores)\n", runtime.NumCPU())
	printf("%-46s %12s %10s  %s\n", "GOAL", "MEASURED", "TARGET", "MET")
	for i, g := range performanceGoals {
		value, found := 0.0, false
		for _, r := range results {
			if r.Scenario == g.scenario {
				value, found = r.Figures[g.figure]
			}
		}
		if !found {
			printf("%-46s %12s %10.3f  not run\n", g.name, "-", g.target)
			continue
		}
		met := value >= g.target
		if g.atMost {
			met = value <= g.target
		}
		key := fmt.Sprintf("goal%d_%s", i+1, g.figure)
		figures[key] = value
		figures[key+"_target"] = g.target
		figures[key+"_met"] = 0
		if met {
			figures[key+"_met"] = 1
		}
		printf("%-46s %12.3f %10.3f  %v\n", g.name, value, g.target, met)
	}
	return Result{Scenario: "goals", Cores: runtime.NumCPU(), Figures: figures, Notes: "the performance goals of the benchmark issue: value, target, met"}
}
