package userspace

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func backends(n int) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80)
	}
	return out
}

var (
	clientA = netip.MustParseAddr("192.0.2.1")
	clientB = netip.MustParseAddr("192.0.2.2")
	t0      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func TestBalancerRoundRobin(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		picks int
	}{
		{name: "one backend", n: 1, picks: 5},
		{name: "three backends", n: 3, picks: 9},
		{name: "seven backends", n: 7, picks: 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b balancer
			b.update(backends(tt.n), 0)
			var order []netip.AddrPort
			counts := map[netip.AddrPort]int{}
			for i := range tt.picks {
				be, ok := b.pick(clientA, t0.Add(time.Duration(i)*time.Second), false)
				if !ok {
					t.Fatalf("pick() = none, want a backend")
				}
				counts[be]++
				if i < tt.n {
					order = append(order, be)
				} else if want := order[i%tt.n]; be != want {
					t.Fatalf("pick #%d = %s, want %s (round robin repeats its order)", i, be, want)
				}
			}
			for _, be := range backends(tt.n) {
				if got, want := counts[be], tt.picks/tt.n; got != want {
					t.Errorf("backend %s picked %d times, want %d", be, got, want)
				}
			}
		})
	}
}

// TestBalancerShuffles checks that the round-robin order is shuffled: over
// many balancers, each backend comes first about equally often.
func TestBalancerShuffles(t *testing.T) {
	const n, runs = 4, 2000
	first := map[netip.AddrPort]int{}
	for range runs {
		var b balancer
		b.update(backends(n), 0)
		be, _ := b.pick(clientA, t0, false)
		first[be]++
	}
	for _, be := range backends(n) {
		if got := first[be]; got < runs/n/2 || got > runs/n*3/2 {
			t.Errorf("backend %s first in %d of %d shuffles, want about %d", be, got, runs, runs/n)
		}
	}
}

func TestBalancerNoBackends(t *testing.T) {
	var b balancer
	b.update(nil, time.Hour)
	if be, ok := b.pick(clientA, t0, false); ok {
		t.Errorf("pick() = %s, want none", be)
	}
}

func TestBalancerAffinity(t *testing.T) {
	const ttl = 10 * time.Second
	tests := []struct {
		name string
		// second is when clientA comes back, after its first pick at t0,
		// with other clients picking in between.
		second time.Duration
		reset  bool
		want   bool // the same backend again
	}{
		{name: "within the timeout", second: 9 * time.Second, want: true},
		{name: "just before the timeout", second: ttl - time.Nanosecond, want: true},
		{name: "at the timeout", second: ttl, want: false},
		{name: "after the timeout", second: time.Hour, want: false},
		{name: "reset after a failed dial", second: time.Second, reset: true, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b balancer
			b.update(backends(3), ttl)
			first, _ := b.pick(clientA, t0, false)
			// Another client moves the round robin on by one: without
			// affinity, clientA gets a different backend.
			b.pick(clientB, t0, false)
			got, _ := b.pick(clientA, t0.Add(tt.second), tt.reset)
			if (got == first) != tt.want {
				t.Errorf("second pick = %s, first %s; want same = %v", got, first, tt.want)
			}
		})
	}
}

// TestBalancerAffinityRefreshed checks that the timeout counts from the
// last use, not the first.
func TestBalancerAffinityRefreshed(t *testing.T) {
	const ttl = 10 * time.Second
	var b balancer
	b.update(backends(3), ttl)
	first, _ := b.pick(clientA, t0, false)
	for i := 1; i <= 10; i++ {
		b.pick(clientB, t0, false)
		got, _ := b.pick(clientA, t0.Add(time.Duration(i)*8*time.Second), false)
		if got != first {
			t.Fatalf("pick at %ds = %s, want %s: each use renews the affinity", i*8, got, first)
		}
	}
}

func TestBalancerUpdate(t *testing.T) {
	const ttl = time.Hour
	var b balancer
	b.update(backends(3), ttl)
	stuck, _ := b.pick(clientA, t0, false)
	second, _ := b.pick(clientB, t0, false)

	// The same set in another order changes nothing: the round robin
	// goes on and the affinity stays.
	rev := slices.Clone(backends(3))
	slices.Reverse(rev)
	b.update(rev, ttl)
	if got, _ := b.pick(clientA, t0.Add(time.Second), false); got != stuck {
		t.Errorf("after an unchanged update, pick(clientA) = %s, want %s", got, stuck)
	}

	// Removing clientB's backend forgets its affinity; clientA's stays.
	var rest []netip.AddrPort
	for _, be := range backends(3) {
		if be != second {
			rest = append(rest, be)
		}
	}
	b.update(rest, ttl)
	if _, sticky := b.size(); sticky != 1 {
		t.Errorf("after removing a backend, %d affinities, want 1", sticky)
	}
	if got, _ := b.pick(clientA, t0.Add(2*time.Second), false); got != stuck {
		t.Errorf("after removing another backend, pick(clientA) = %s, want %s", got, stuck)
	}
	for i := range 10 {
		if got, _ := b.pick(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), t0, false); got == second {
			t.Fatalf("removed backend %s picked", got)
		}
	}

	// Turning affinity off forgets every affinity.
	b.update(rest, 0)
	if _, sticky := b.size(); sticky != 0 {
		t.Errorf("without affinity, %d affinities kept, want 0", sticky)
	}
}

func TestBalancerReap(t *testing.T) {
	const ttl = 10 * time.Second
	var b balancer
	b.update(backends(2), ttl)
	for i := range 100 {
		b.pick(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), t0, false)
	}
	if _, sticky := b.size(); sticky != 100 {
		t.Fatalf("%d affinities, want 100", sticky)
	}
	b.pick(clientA, t0.Add(ttl), false)
	if _, sticky := b.size(); sticky != 1 {
		t.Errorf("after the timeout, %d affinities, want only the new one", sticky)
	}
}

func TestSortedBackends(t *testing.T) {
	in := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")}
	if diff := cmp.Diff(want, sortedBackends(in), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("sortedBackends() mismatch (-want +got):\n%s", diff)
	}
}
