package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Result is one line of benchmark output: one mode and cluster size, one
// run.
type Result struct {
	// Mode is the proxy mode, such as "nftables".
	Mode string
	// Services is the cluster size.
	Services int
	// Samples is the number of connections measured (the iterations).
	Samples int
	// P50, P99 and Mean are the connect times in microseconds.
	P50, P99, Mean float64
	// ApplySeconds is how long the applier took to write the rules.
	ApplySeconds float64
}

// benchPrefix starts the name of every result line Parse reads.
const benchPrefix = "BenchmarkFirstPacket/"

// splitName splits "MODE/services=N" or "MODE/services=N-P" (P being
// GOMAXPROCS) into the mode and N.
func splitName(name string) (string, int, error) {
	mode, rest, ok := strings.Cut(name, "/services=")
	if !ok || mode == "" {
		return "", 0, fmt.Errorf("benchmark %q: want %sMODE/services=N", benchPrefix+name, benchPrefix)
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		rest = rest[:i]
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return "", 0, fmt.Errorf("benchmark %q: services: %w", benchPrefix+name, err)
	}
	return mode, n, nil
}

// Parse reads go test -bench output and returns the BenchmarkFirstPacket
// results in input order. Other lines are ignored; a result line missing
// a metric is an error.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		name, ok := "", len(f) >= 2
		if ok {
			name, ok = strings.CutPrefix(f[0], benchPrefix)
		}
		if !ok {
			continue
		}
		var res Result
		var err error
		if res.Mode, res.Services, err = splitName(name); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if res.Samples, err = strconv.Atoi(f[1]); err != nil {
			return nil, fmt.Errorf("line %d: iterations: %w", line, err)
		}
		metrics, err := parseMetrics(f[2:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		for unit, dst := range map[string]*float64{"p50-µs": &res.P50, "p99-µs": &res.P99, "mean-µs": &res.Mean, "apply-s": &res.ApplySeconds} {
			v, ok := metrics[unit]
			if !ok {
				return nil, fmt.Errorf("line %d: no %s metric", line, unit)
			}
			*dst = v
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return out, nil
}

// parseMetrics reads the fields "VALUE UNIT VALUE UNIT ...".
func parseMetrics(f []string) (map[string]float64, error) {
	if len(f)%2 != 0 {
		return nil, fmt.Errorf("metrics %q: want value and unit pairs", strings.Join(f, " "))
	}
	m := make(map[string]float64, len(f)/2)
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", f[i+1], err)
		}
		m[f[i+1]] = v
	}
	return m, nil
}

// Figure is what the table and the plot show for one mode and size: the
// median of its runs.
type Figure struct {
	Result
	// Runs is the number of runs the figures are the median of.
	Runs int
}

// Aggregate returns one Figure per mode and size, modes in the order they
// first appear, sizes ascending.
func Aggregate(results []Result) []Figure {
	type key struct {
		mode     string
		services int
	}
	var modes []string
	groups := map[key][]Result{}
	for _, r := range results {
		if !slices.Contains(modes, r.Mode) {
			modes = append(modes, r.Mode)
		}
		k := key{r.Mode, r.Services}
		groups[k] = append(groups[k], r)
	}
	var figs []Figure
	for _, mode := range modes {
		var sizes []int
		for k := range groups {
			if k.mode == mode {
				sizes = append(sizes, k.services)
			}
		}
		slices.Sort(sizes)
		for _, n := range sizes {
			g := groups[key{mode, n}]
			pick := func(f func(Result) float64) float64 {
				v := make([]float64, len(g))
				for i, r := range g {
					v[i] = f(r)
				}
				return median(v)
			}
			figs = append(figs, Figure{Runs: len(g), Result: Result{
				Mode: mode, Services: n, Samples: g[0].Samples,
				P50:          pick(func(r Result) float64 { return r.P50 }),
				P99:          pick(func(r Result) float64 { return r.P99 }),
				Mean:         pick(func(r Result) float64 { return r.Mean }),
				ApplySeconds: pick(func(r Result) float64 { return r.ApplySeconds }),
			}})
		}
	}
	return figs
}

// median returns the median of v (the mean of the middle two for an even
// count), sorting v.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// WriteCSV writes the results, one line each, after a header.
func WriteCSV(w io.Writer, results []Result) {
	fmt.Fprintln(w, "mode,services,samples,p50_us,p99_us,mean_us,apply_s")
	for _, r := range results {
		fmt.Fprintf(w, "%s,%d,%d,%.2f,%.2f,%.2f,%.3f\n", r.Mode, r.Services, r.Samples, r.P50, r.P99, r.Mean, r.ApplySeconds)
	}
}
