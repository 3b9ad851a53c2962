package netnstest

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file need neither root nor namespaces.

func TestChiSquarePValue(t *testing.T) {
	// Critical values of the chi-square distribution at p = 0.001 and 0.05,
	// from standard tables.
	tests := []struct {
		stat float64
		df   int
		want float64
	}{
		{stat: 10.828, df: 1, want: 0.001},
		{stat: 13.816, df: 2, want: 0.001},
		{stat: 18.467, df: 4, want: 0.001},
		{stat: 29.588, df: 10, want: 0.001},
		{stat: 3.841, df: 1, want: 0.05},
		{stat: 124.342, df: 100, want: 0.05},
		{stat: 0, df: 3, want: 1},
		{stat: 2, df: 2, want: math.Exp(-1)}, // df 2 is exponential: exp(-x/2)
	}
	for _, tc := range tests {
		got := chiSquarePValue(tc.stat, tc.df)
		if math.Abs(got-tc.want) > 1e-4*math.Max(1, tc.want*10) {
			t.Errorf("chiSquarePValue(%v, %d) = %.6f, want %.6f", tc.stat, tc.df, got, tc.want)
		}
	}
}

func TestChiSquareUniform(t *testing.T) {
	tests := []struct {
		name     string
		counts   []int
		wantStat float64
		wantOK   bool
	}{
		{name: "even", counts: []int{100, 100, 100}, wantStat: 0, wantOK: true},
		{name: "noisy", counts: []int{95, 108, 97}, wantStat: 0.98, wantOK: true},
		{name: "one backend starved", counts: []int{150, 150, 0}, wantStat: 150, wantOK: false},
		{name: "skewed", counts: []int{70, 130}, wantStat: 18, wantOK: false},
		{name: "single backend", counts: []int{42}, wantStat: 0, wantOK: true},
		{name: "nothing", counts: []int{0, 0}, wantStat: 0, wantOK: false},
		{name: "empty", counts: nil, wantStat: 0, wantOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stat, ok := ChiSquareUniform(tc.counts)
			if math.Abs(stat-tc.wantStat) > 1e-9 || ok != tc.wantOK {
				t.Errorf("ChiSquareUniform(%v) = %v, %v; want %v, %v", tc.counts, stat, ok, tc.wantStat, tc.wantOK)
			}
		})
	}
}

func TestSpreadAndCounts(t *testing.T) {
	a := netip.MustParseAddrPort("10.244.1.2:8080")
	b := netip.MustParseAddrPort("10.244.1.3:8080")
	c := netip.MustParseAddrPort("10.244.1.4:8080")
	replies := []Reply{{Backend: a}, {Backend: b}, {Backend: a}}
	got := Spread(t, replies)
	if diff := cmp.Diff(map[netip.AddrPort]int{a: 2, b: 1}, got); diff != "" {
		t.Errorf("Spread() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{2, 1, 0}, Counts(got, a, b, c)); diff != "" {
		t.Errorf("Counts() mismatch (-want +got):\n%s", diff)
	}

	rec := &recorder{TB: t}
	failed := make([]Reply, 8)
	for i := range failed {
		failed[i].Err = syscall.ECONNREFUSED
	}
	Spread(rec, append(failed, Reply{Backend: a}))
	if want := maxReportedErrors + 1; len(rec.errors) != want {
		t.Errorf("Spread() with 8 failed replies reported %d errors, want %d: %q", len(rec.errors), want, rec.errors)
	}
}

// recorder records Errorf calls instead of failing.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Helper() {}

func TestReplyClassification(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("dial: %w", &os.SyscallError{Syscall: "connect", Err: err}) }
	tests := []struct {
		name                                          string
		err                                           error
		wantOK, wantRefused, wantUnreach, wantTimeout bool
	}{
		{name: "ok", wantOK: true},
		{name: "refused", err: wrap(syscall.ECONNREFUSED), wantRefused: true},
		{name: "host unreachable", err: wrap(syscall.EHOSTUNREACH), wantUnreach: true},
		{name: "net unreachable", err: wrap(syscall.ENETUNREACH), wantUnreach: true},
		{name: "deadline", err: fmt.Errorf("read: %w", os.ErrDeadlineExceeded), wantTimeout: true},
		{name: "other", err: errors.New("greeting \"x\": want backend=... peer=...")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Reply{Err: tc.err}
			got := []bool{r.OK(), r.Refused(), r.Unreachable(), r.TimedOut()}
			want := []bool{tc.wantOK, tc.wantRefused, tc.wantUnreach, tc.wantTimeout}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Reply{Err: %v} [OK Refused Unreachable TimedOut] mismatch (-want +got):\n%s", tc.err, diff)
			}
		})
	}
}

func TestParseGreeting(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Reply
		wantErr bool
	}{
		{
			name: "ipv4",
			line: greeting(netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.0.0.2:40000")),
			want: Reply{Backend: netip.MustParseAddrPort("10.244.1.2:8080"), Peer: netip.MustParseAddrPort("10.0.0.2:40000")},
		},
		{
			name: "ipv6",
			line: "backend=[fd00:244:1::2]:80 peer=[fd00::2]:1234",
			want: Reply{Backend: netip.MustParseAddrPort("[fd00:244:1::2]:80"), Peer: netip.MustParseAddrPort("[fd00::2]:1234")},
		},
		{name: "swapped", line: "peer=10.0.0.2:1 backend=10.244.1.2:80", wantErr: true},
		{name: "bad address", line: "backend=10.244.1.2 peer=10.0.0.2:1", wantErr: true},
		{name: "extra field", line: "backend=10.244.1.2:80 peer=10.0.0.2:1 x", wantErr: true},
		{name: "empty", line: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Reply
			err := got.parseGreeting(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseGreeting(%q) error = %v, wantErr %v", tc.line, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); !tc.wantErr && diff != "" {
				t.Errorf("parseGreeting(%q) mismatch (-want +got):\n%s", tc.line, diff)
			}
		})
	}
}

func TestNthAddr(t *testing.T) {
	tests := []struct {
		prefix  string
		n       int
		want    string
		wantErr bool
	}{
		{prefix: "10.244.1.0/24", n: 1, want: "10.244.1.1"},
		{prefix: "10.244.1.0/24", n: 254, want: "10.244.1.254"},
		{prefix: "10.244.1.0/24", n: 255, wantErr: true}, // broadcast
		{prefix: "10.244.1.7/24", n: 2, want: "10.244.1.2"},
		{prefix: "fd00:244:1::/64", n: 2, want: "fd00:244:1::2"},
		{prefix: "fd00:244:1::/127", n: 1, want: "fd00:244:1::1"},
		{prefix: "fd00:244:1::/127", n: 2, wantErr: true},
	}
	for _, tc := range tests {
		got, err := nthAddr(netip.MustParsePrefix(tc.prefix), tc.n)
		if (err != nil) != tc.wantErr {
			t.Errorf("nthAddr(%s, %d) error = %v, wantErr %v", tc.prefix, tc.n, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got.String() != tc.want {
			t.Errorf("nthAddr(%s, %d) = %s, want %s", tc.prefix, tc.n, got, tc.want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		opts    []Option
		wantErr bool
	}{
		{name: "defaults"},
		{name: "other LAN", opts: []Option{WithLAN(p("192.168.7.1/24"), p("192.168.7.100/24"))}},
		{name: "other pod CIDR", opts: []Option{WithPodCIDR(Remote, p("10.245.0.0/16"))}},
		{name: "IPv4 only with bad IPv6 ignored", opts: []Option{WithoutIPv6(), WithLAN(p("fd00::1/64"), p("fd01::1/64"))}},
		{name: "LAN split", opts: []Option{WithLAN(p("192.168.7.1/24"), p("192.168.8.1/24"))}, wantErr: true},
		{name: "LAN families mixed", opts: []Option{WithLAN(p("192.168.7.1/24"), p("fd00::2/64"))}, wantErr: true},
		{name: "LAN same address", opts: []Option{WithLAN(p("192.168.7.1/24"), p("192.168.7.1/24"))}, wantErr: true},
		{name: "pods overlap LAN", opts: []Option{WithPodCIDR(Local, p("10.0.0.0/16"))}, wantErr: true},
		{name: "no such site", opts: []Option{WithPodCIDR(Site(7), p("10.9.0.0/16"))}, wantErr: true},
		{name: "pod CIDRs overlap", opts: []Option{WithPodCIDR(Remote, p("10.244.0.0/16"))}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			for _, o := range tc.opts {
				o(&cfg)
			}
			if err := cfg.validate(); (err != nil) != tc.wantErr {
				t.Errorf("validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}
