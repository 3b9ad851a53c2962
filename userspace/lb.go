package userspace

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// balancer chooses a backend for each new connection or UDP session of
// one listener, as old kube-proxy's LoadBalancerRR did: round robin over
// the backends in an order shuffled whenever the set changes, and, with
// ClientIP affinity, the backend a client address used last while it has
// not been idle longer than the timeout. It is safe for concurrent use.
// Times are passed in, so that tests need no clock.
type balancer struct {
	mu sync.Mutex
	// order is the backends in round-robin order; sorted is the same set
	// sorted, to tell whether an update changes it.
	order, sorted []netip.AddrPort
	next          int
	ttl           time.Duration
	sticky        map[netip.Addr]stick
	lastReap      time.Time
}

// stick is one client's affinity.
type stick struct {
	backend netip.AddrPort
	last    time.Time
}

// maxReapInterval bounds how long expired affinity entries may stay.
const maxReapInterval = time.Minute

// update sets the backends and the affinity timeout. An unchanged set
// keeps its order, position and affinities; a changed set is shuffled
// afresh, starts over, and forgets the affinities of removed backends.
// A zero ttl forgets every affinity.
func (b *balancer) update(backends []netip.AddrPort, ttl time.Duration) {
	sorted := sortedBackends(backends)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(sorted, b.sorted) || b.order == nil {
		b.sorted = sorted
		b.order = slices.Clone(sorted)
		rand.Shuffle(len(b.order), func(i, j int) { b.order[i], b.order[j] = b.order[j], b.order[i] })
		b.next = 0
		for ip, s := range b.sticky {
			if _, found := slices.BinarySearchFunc(sorted, s.backend, netip.AddrPort.Compare); !found {
				delete(b.sticky, ip)
			}
		}
	}
	b.ttl = ttl
	if ttl == 0 {
		b.sticky = nil
	} else if b.sticky == nil {
		b.sticky = map[netip.Addr]stick{}
	}
}

// pick returns the backend for a new connection from client at now, and
// false when there is none. reset skips the client's affinity: the dial
// to the backend it chose failed, so the connection tries the next one
// and the client sticks to that instead.
func (b *balancer) pick(client netip.Addr, now time.Time, reset bool) (netip.AddrPort, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.order) == 0 {
		return netip.AddrPort{}, false
	}
	if b.ttl > 0 {
		b.reap(now)
		if s, ok := b.sticky[client]; ok && !reset && now.Sub(s.last) < b.ttl {
			s.last = now
			b.sticky[client] = s
			return s.backend, true
		}
	}
	be := b.order[b.next]
	b.next = (b.next + 1) % len(b.order)
	if b.ttl > 0 {
		b.sticky[client] = stick{backend: be, last: now}
	}
	return be, true
}

// reap forgets expired affinities, at most once per timeout (or minute).
func (b *balancer) reap(now time.Time) {
	if now.Sub(b.lastReap) < min(b.ttl, maxReapInterval) {
		return
	}
	b.lastReap = now
	for ip, s := range b.sticky {
		if now.Sub(s.last) >= b.ttl {
			delete(b.sticky, ip)
		}
	}
}

// size returns the number of backends and of remembered affinities.
func (b *balancer) size() (backends, sticky int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.order), len(b.sticky)
}
