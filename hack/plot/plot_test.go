package main

import (
	"bytes"
	"image/png"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `goos: linux
pkg: github.com/svcplan/svcplan/internal/datapath
BenchmarkFirstPacket/nftables/services=10-2         	    2000	     67381 ns/op	         0.009875 apply-s	        45.60 mean-µs	        46.09 p50-µs	        94.58 p99-µs
BenchmarkFirstPacket/nftables/services=10000-2      	    2000	     77962 ns/op	        15.08 apply-s	        52.53 mean-µs	        48.21 p50-µs	       308.9 p99-µs
BenchmarkFirstPacket/iptables/services=10-2         	    2000	     83325 ns/op	         0.008606 apply-s	        59.17 mean-µs	        52.59 p50-µs	       145.7 p99-µs
BenchmarkFirstPacket/iptables/services=10000-2      	    2000	    278216 ns/op	         1.657 apply-s	       253.8 mean-µs	       253.2 p50-µs	       373.3 p99-µs
BenchmarkFirstPacket/iptables/services=10000-2      	    2000	    278216 ns/op	         1.757 apply-s	       263.8 mean-µs	       243.2 p50-µs	       393.3 p99-µs
PASS
`

func TestParseAggregate(t *testing.T) {
	results, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if len(results) != 5 {
		t.Fatalf("Parse found %d results, want 5", len(results))
	}
	want := Result{Mode: "nftables", Services: 10000, Samples: 2000, P50: 48.21, P99: 308.9, Mean: 52.53, ApplySeconds: 15.08}
	if diff := cmp.Diff(want, results[1]); diff != "" {
		t.Errorf("Parse result 1 differs (-want +got):\n%s", diff)
	}
	figs := Aggregate(results)
	wantFigs := []Figure{
		{Runs: 1, Result: results[0]},
		{Runs: 1, Result: results[1]},
		{Runs: 1, Result: results[2]},
		{Runs: 2, Result: Result{Mode: "iptables", Services: 10000, Samples: 2000, P50: 248.2, P99: 383.3, Mean: 258.8, ApplySeconds: 1.707}},
	}
	if diff := cmp.Diff(wantFigs, figs, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
		t.Errorf("Aggregate differs (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"missing metric", "BenchmarkFirstPacket/nftables/services=10-2 100 5 ns/op 1 p50-µs 2 p99-µs 3 mean-µs\n", "no apply-s metric"},
		{"bad size", "BenchmarkFirstPacket/nftables/services=ten 100 5 ns/op\n", "services"},
		{"odd metrics", "BenchmarkFirstPacket/nftables/services=10 100 5 ns/op 7\n", "value and unit pairs"},
		{"no mode", "BenchmarkFirstPacket/services=10 100 5 ns/op\n", "want BenchmarkFirstPacket/MODE/services=N"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestTable(t *testing.T) {
	results, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	got := Table(Aggregate(results))
	want := `| services | nftables p50 | nftables p99 | nftables mean | nftables apply | iptables p50 | iptables p99 | iptables mean | iptables apply |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| 10 | 46.1 µs | 94.6 µs | 45.6 µs | 10 ms | 52.6 µs | 146 µs | 59.2 µs | 9 ms |
| 10 000 | 48.2 µs | 309 µs | 52.5 µs | 15.1 s | 248 µs | 383 µs | 259 µs | 1.7 s |

- nftables at 10 000 services against 10: p50 1.05×, mean 1.15×, p99 3.27×.
- iptables at 10 000 services against 10: p50 4.72×, mean 4.37×, p99 2.63×.

Each figure is the median of 1 run(s) of 2000 connections each.
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Table differs (-want +got):\n%s", diff)
	}
}

func TestReplaceRegion(t *testing.T) {
	doc := "# T\n<!-- BEGIN x -->\nold\nlines\n<!-- END x -->\ntail\n"
	got, err := ReplaceRegion(doc, "x", "new")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# T\n<!-- BEGIN x -->\nnew\n<!-- END x -->\ntail\n"; got != want {
		t.Errorf("ReplaceRegion = %q, want %q", got, want)
	}
	for _, bad := range []string{"no markers\n", "<!-- END x -->\n<!-- BEGIN x -->\n"} {
		if _, err := ReplaceRegion(bad, "x", "new"); err == nil {
			t.Errorf("ReplaceRegion(%q) succeeded, want an error", bad)
		}
	}
}

func TestDraw(t *testing.T) {
	results, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Draw(&b, Aggregate(results)); err != nil {
		t.Fatalf("Draw = %v", err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("Draw wrote no PNG: %v", err)
	}
	if got := img.Bounds().Size(); got.X != width || got.Y != height {
		t.Errorf("PNG is %v, want %dx%d", got, width, height)
	}
	// The nftables bar of the first group is drawn in the first colour.
	r, g, bl, _ := img.At(left+50, height-bottom-5).RGBA()
	if want := palette(0); uint8(r>>8) != want.R || uint8(g>>8) != want.G || uint8(bl>>8) != want.B {
		t.Errorf("pixel in the first bar is %x,%x,%x, want %v", r>>8, g>>8, bl>>8, want)
	}
	if err := Draw(&b, []Figure{{Result: Result{Mode: "m", Services: 1}}}); err == nil {
		t.Error("Draw of a zero latency succeeded, want an error")
	}
}
