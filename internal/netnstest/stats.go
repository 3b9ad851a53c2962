package netnstest

import (
	"math"
	"net/netip"
	"testing"
)

// BalanceAlpha is the significance level of [ChiSquareUniform]: counts
// pass as uniform unless a uniform balancer would give counts this uneven
// or worse less than once in a thousand runs.
const BalanceAlpha = 0.001

// maxReportedErrors caps how many failed replies Spread reports one by one.
const maxReportedErrors = 5

// Spread counts the successful replies per backend and reports each failed
// reply as a test error (the first few in full, then their number).
func Spread(t testing.TB, replies []Reply) map[netip.AddrPort]int {
	t.Helper()
	counts := map[netip.AddrPort]int{}
	failed := 0
	for i, r := range replies {
		if r.Err != nil {
			if failed < maxReportedErrors {
				t.Errorf("reply %d of %d: %v", i+1, len(replies), r.Err)
			}
			failed++
			continue
		}
		counts[r.Backend]++
	}
	if failed > maxReportedErrors {
		t.Errorf("%d of %d replies failed in all", failed, len(replies))
	}
	return counts
}

// Counts returns spread's count for each backend, in order, with zero for
// a backend that got nothing, ready for [ChiSquareUniform].
func Counts(spread map[netip.AddrPort]int, backends ...netip.AddrPort) []int {
	out := make([]int, len(backends))
	for i, b := range backends {
		out[i] = spread[b]
	}
	return out
}

// ChiSquareUniform runs Pearson's chi-square test of counts against the
// uniform distribution. It returns the statistic and whether the counts
// pass as uniform at [BalanceAlpha] (p-value above it). No counts at all
// never pass; a single category always does.
func ChiSquareUniform(counts []int) (stat float64, pValueOK bool) {
	total := 0
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	if len(counts) < 2 {
		return 0, true
	}
	want := float64(total) / float64(len(counts))
	for _, c := range counts {
		d := float64(c) - want
		stat += d * d / want
	}
	return stat, chiSquarePValue(stat, len(counts)-1) > BalanceAlpha
}

// chiSquarePValue returns the probability that a chi-square variable with
// df degrees of freedom is at least stat.
func chiSquarePValue(stat float64, df int) float64 {
	return upperGamma(float64(df)/2, stat/2)
}

// upperGamma returns the regularized upper incomplete gamma function
// Q(a, x) for a > 0 and x >= 0: a power series below x = a+1, a continued
// fraction (modified Lentz) above.
func upperGamma(a, x float64) float64 {
	const (
		eps   = 1e-15
		tiny  = 1e-300
		steps = 1000
	)
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	front := math.Exp(-x + a*math.Log(x) - lg)
	if x < a+1 {
		term := 1 / a
		sum := term
		for n := 1; n < steps; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*eps {
				break
			}
		}
		return math.Max(0, 1-sum*front)
	}
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < steps; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return front * h
}
