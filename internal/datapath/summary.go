package datapath

import (
	"slices"
	"time"
)

// Summary is what a set of samples amounts to. The zero Summary is that of
// no samples.
type Summary struct {
	// N is the number of samples.
	N int
	// Mean is their arithmetic mean.
	Mean time.Duration
	// P50 is the median (the nearest-rank 50th percentile).
	P50 time.Duration
	// P99 is the nearest-rank 99th percentile.
	P99 time.Duration
	// Min and Max are the smallest and the largest sample.
	Min, Max time.Duration
}

// Summarize returns the summary of samples, which it does not change.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N:    len(s),
		Mean: sum / time.Duration(len(s)),
		P50:  rank(s, 50),
		P99:  rank(s, 99),
		Min:  s[0],
		Max:  s[len(s)-1],
	}
}

// rank returns the nearest-rank p-th percentile of sorted: the smallest
// sample that at least p percent of the samples do not exceed.
func rank(sorted []time.Duration, p int) time.Duration {
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(i, 0)]
}
