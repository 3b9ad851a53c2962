package datapath

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100, 99, ..., 1: unsorted on purpose
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    Summary
	}{
		{name: "none", want: Summary{}},
		{name: "one", samples: ms(7), want: Summary{N: 1, Mean: 7 * time.Millisecond, P50: 7 * time.Millisecond,
			P99: 7 * time.Millisecond, Min: 7 * time.Millisecond, Max: 7 * time.Millisecond}},
		{name: "even count takes the lower median", samples: ms(4, 1, 3, 2), want: Summary{N: 4, Mean: 2500 * time.Microsecond,
			P50: 2 * time.Millisecond, P99: 4 * time.Millisecond, Min: time.Millisecond, Max: 4 * time.Millisecond}},
		{name: "hundred", samples: ms(hundred...), want: Summary{N: 100, Mean: 50500 * time.Microsecond,
			P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Min: time.Millisecond, Max: 100 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := append([]time.Duration(nil), tt.samples...)
			got := Summarize(tt.samples)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Summarize(%v) differs (-want +got):\n%s", tt.samples, diff)
			}
			if diff := cmp.Diff(before, tt.samples); diff != "" {
				t.Errorf("Summarize changed its input (-before +after):\n%s", diff)
			}
		})
	}
}
