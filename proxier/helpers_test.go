package proxier_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
)

var (
	nodeIP   = netip.MustParseAddr("10.0.0.10")
	podCIDR  = netip.MustParsePrefix("10.244.0.0/16")
	epLocal  = netip.MustParseAddr("10.244.1.2")
	epRemote = netip.MustParseAddr("10.244.2.2")
)

// state returns a state with one TCP service "ns/web" (10.96.0.10:80) and
// one UDP service "ns/dns" (10.96.0.53:53) whose endpoints are eps.
func state(eps ...netip.Addr) *proxy.State {
	st := &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{nodeIP}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{podCIDR}},
		Services: []proxy.Service{
			{Namespace: "ns", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
				Ports: []proxy.ServicePort{{Name: "http", Port: 80}}},
			{Namespace: "ns", Name: "dns", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.53")},
				Ports: []proxy.ServicePort{{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53}}},
		},
	}
	for _, a := range eps {
		st.Services[0].Endpoints = append(st.Services[0].Endpoints, proxy.Endpoint{Addr: a, Ready: true, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}})
		st.Services[1].Endpoints = append(st.Services[1].Endpoints, proxy.Endpoint{Addr: a, Ready: true, Ports: []proxy.EndpointPort{{Name: "dns", Port: 5353}}})
	}
	return st
}

// flaky is an iptables applier that fails while fail is set and can
// pretend to have repaired drift.
type flaky struct {
	*iptables.Fake
	fail    atomic.Bool
	repairs atomic.Int64
	// driftNext makes the next Apply report a repair, as a kernel
	// applier does when it finds owned objects changed.
	driftNext atomic.Bool
}

var errInjected = errors.New("injected failure")

func newFlaky() *flaky { return &flaky{Fake: iptables.NewFake(iptables.IPv4)} }

func (f *flaky) Apply(ctx context.Context, p *iptables.Plan) error {
	if f.fail.Load() {
		return errInjected
	}
	if f.driftNext.Swap(false) {
		f.repairs.Add(1)
	}
	return f.Fake.Apply(ctx, p)
}

func (f *flaky) Stats() iptables.Stats {
	s := f.Fake.Stats()
	s.Repairs += int(f.repairs.Load())
	return s
}

// fakeClock is a Clock whose time moves only by Step.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	made   int
}

type fakeTimer struct {
	clk     *fakeClock
	at      time.Time
	c       chan time.Time
	stopped bool
	fired   bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) proxier.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.made++
	c.timers = append(c.timers, t)
	c.fire()
	return t
}

// fire fires the due timers; c.mu is held.
func (c *fakeClock) fire() {
	for _, t := range c.timers {
		if !t.stopped && !t.fired && !t.at.After(c.now) {
			t.fired = true
			t.c <- c.now
		}
	}
}

// Step moves the time on by d and fires the timers that are due.
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// Made returns the number of timers made so far.
func (c *fakeClock) Made() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.made
}

// waitTimers waits until n timers were made: the run loop made its n-th
// wait, so what it did before is done.
func (c *fakeClock) waitTimers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Made() < n {
		if time.Now().After(deadline) {
			t.Fatalf("run loop made %d timers, want %d within 10s", c.Made(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// recordingConntrack records what it is asked to delete.
type recordingConntrack struct {
	mu    sync.Mutex
	calls []*proxier.StaleFlows
	flows []proxier.Flow // flows "in the table"; matching ones are deleted
}

func (r *recordingConntrack) DeleteStale(_ context.Context, ipv6 bool, s *proxier.StaleFlows) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	n := 0
	kept := r.flows[:0]
	for _, f := range r.flows {
		if f.OrigDst.Addr().Is6() == ipv6 && s.Match(f) {
			n++
			continue
		}
		kept = append(kept, f)
	}
	r.flows = kept
	return n, nil
}
