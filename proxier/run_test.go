package proxier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// loop runs a proxier with a fake clock (1 s minimum interval, 30 s sync
// period) and a flaky applier.
type loop struct {
	p    *proxier.Proxier
	clk  *fakeClock
	fl   *flaky
	done chan error
	n    int // timers the loop made so far
}

func startLoop(t *testing.T) *loop {
	t.Helper()
	l := &loop{clk: newFakeClock(), fl: newFlaky(), done: make(chan error, 1)}
	var err error
	l.p, err = proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, l.fl),
		proxier.WithoutConntrackCleanup(), proxier.WithClock(l.clk),
		proxier.WithMinSyncInterval(time.Second), proxier.WithSyncPeriod(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { l.done <- l.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-l.done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	l.idle(t)
	return l
}

// idle waits for the loop's next wait: whatever woke it is handled.
func (l *loop) idle(t *testing.T) {
	t.Helper()
	l.n++
	l.clk.waitTimers(t, l.n)
}

func (l *loop) applies() int { return l.fl.Stats().Applies }

func TestRunBurstThenInterval(t *testing.T) {
	l := startLoop(t)
	states := []*proxy.State{state(epLocal), state(epRemote), state(epLocal, epRemote), state(), state(epRemote)}
	l.p.Update(states[0])
	l.idle(t)
	l.p.Update(states[1])
	l.idle(t)
	if got := l.applies(); got != 2 {
		t.Fatalf("after two updates in a burst: %d applies, want 2", got)
	}
	if l.p.Applied() != states[1] {
		t.Fatalf("the burst's second state is not applied")
	}
	// The burst is spent: the next states wait for the interval, and only
	// the newest is synced.
	l.p.Update(states[2])
	l.idle(t)
	l.p.Update(states[3])
	l.idle(t)
	if got := l.applies(); got != 2 {
		t.Fatalf("within the minimum interval: %d applies, want 2", got)
	}
	l.clk.Step(999 * time.Millisecond)
	if got := l.applies(); got != 2 {
		t.Fatalf("999ms later: %d applies, want 2", got)
	}
	l.clk.Step(time.Millisecond)
	l.idle(t)
	if got := l.applies(); got != 3 {
		t.Fatalf("after the interval: %d applies, want 3", got)
	}
	if l.p.Applied() != states[3] {
		t.Errorf("after the interval the newest state is not the one applied")
	}
	// Tokens come back: two intervals later a burst of two is allowed again.
	l.clk.Step(3 * time.Second)
	l.p.Update(states[4])
	l.idle(t)
	l.p.Update(states[0])
	l.idle(t)
	if got := l.applies(); got != 5 {
		t.Errorf("after the bucket refilled: %d applies, want 5", got)
	}
}

func TestRunPeriodicResync(t *testing.T) {
	l := startLoop(t)
	l.clk.Step(30 * time.Second) // no state yet: nothing to sync
	l.idle(t)
	if got := l.applies(); got != 0 {
		t.Fatalf("periodic sync without a state: %d applies", got)
	}
	st := state(epLocal)
	l.p.Update(st)
	l.idle(t)
	// Something else removes an owned chain; the periodic sync repairs it.
	sep := translate.EndpointChainName("ns/web:http", "tcp", "10.244.1.2:8080")
	l.fl.FlushChain(iptables.TableNAT, sep)
	l.clk.Step(29 * time.Second)
	if got := l.applies(); got != 1 {
		t.Fatalf("before the sync period: %d applies, want 1", got)
	}
	l.clk.Step(time.Second)
	l.idle(t)
	if got := l.applies(); got != 2 {
		t.Fatalf("after the sync period: %d applies, want 2", got)
	}
	if r := l.fl.Fake.Stats().Restores; r < 2 {
		t.Errorf("the periodic sync did not rewrite the flushed chain (restores %d)", r)
	}
}

func TestRunRetryBackoff(t *testing.T) {
	l := startLoop(t)
	l.fl.fail.Store(true)
	l.p.Update(state(epLocal))
	l.idle(t)
	if got := l.fl.Fake.Stats().Applies; got != 0 || l.p.Applied() != nil {
		t.Fatalf("a failing apply was applied")
	}
	calls := func() int { return int(testutil.ToFloat64(l.p.MetricsForTest().Failures("apply"))) }
	if calls() != 1 {
		t.Fatalf("failures = %d, want 1", calls())
	}
	// Retries after 1 s, then 2 s, then 4 s.
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		l.clk.Step(wait - time.Millisecond)
		if calls() != i+1 {
			t.Fatalf("retry %d came before its %v backoff", i+1, wait)
		}
		l.clk.Step(time.Millisecond)
		l.idle(t)
		if calls() != i+2 {
			t.Fatalf("retry %d did not come after %v: failures %d", i+1, wait, calls())
		}
	}
	l.fl.fail.Store(false)
	l.clk.Step(8 * time.Second)
	l.idle(t)
	if l.p.Applied() == nil || !l.p.Healthy() {
		t.Fatalf("after the applier recovered the state is not applied")
	}
	// Success resets the backoff: the next failure retries after 1 s.
	l.fl.fail.Store(true)
	l.p.Update(state(epRemote))
	l.idle(t)
	l.clk.Step(time.Second)
	l.idle(t)
	if calls() != 6 {
		t.Errorf("failures = %d, want 6 (one, and a retry 1 s later)", calls())
	}
}

func TestRunDriftForcesFullSync(t *testing.T) {
	l := startLoop(t)
	l.p.Update(state(epLocal))
	l.idle(t)
	m := l.p.MetricsForTest()
	full := testutil.ToFloat64(m.FullCount("IPv4"))
	// The next periodic sync finds drift (as the kernel appliers report
	// it), which forces a full sync as soon as the interval allows.
	l.fl.driftNext.Store(true)
	l.clk.Step(30 * time.Second)
	l.idle(t) // the periodic sync, which notices the repair, and at once (a token is left) the forced full sync
	if got := testutil.ToFloat64(m.DriftRepairs()); got != 1 {
		t.Errorf("drift_repairs_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.FullCount("IPv4")); got != full+1 {
		t.Errorf("full syncs = %v, want %v", got, full+1)
	}
	if got := l.applies(); got != 3 {
		t.Errorf("applies = %d, want 3 (first, periodic, forced)", got)
	}
}

func TestRunTwice(t *testing.T) {
	l := startLoop(t)
	if err := l.p.Run(context.Background()); !errors.Is(err, proxier.ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}
