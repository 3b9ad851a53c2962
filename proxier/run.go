package proxier

import (
	"context"
	"time"

	"github.com/svcplan/svcplan/proxy"
)

// Run is the sync loop: it syncs the states given by [Proxier.Update] as
// kube-proxy's BoundedFrequencyRunner does, until ctx is done, and then
// returns nil. Syncs are at least the minimum interval apart
// ([WithMinSyncInterval]) after a burst of [SyncBurst]; the newest state
// is synced, states queued in between are skipped. When nothing changes,
// the last state is re-applied every sync period ([WithSyncPeriod]),
// which repairs what others changed; a sync that found such drift is
// followed by a full one as soon as the interval allows. After a failed
// sync (by Run or [Proxier.Sync]) the state is tried again after a
// backoff that starts at the minimum interval (at least a second) and
// doubles up to the sync period. Run returns [ErrRunning] while another
// Run runs and [ErrClosed] after [Proxier.Close].
func (p *Proxier) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if p.running {
		p.mu.Unlock()
		return ErrRunning
	}
	p.running = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()
	lim := limiter{interval: p.cfg.minSyncInterval, tokens: SyncBurst, last: p.clock.Now()}
	nextPeriodic := p.clock.Now().Add(p.cfg.syncPeriod)
	for {
		now := p.clock.Now()
		lim.refill(now)
		due, closed := p.due(now, nextPeriodic)
		if closed {
			return ErrClosed
		}
		if due && lim.take() {
			if st := p.take(); st != nil {
				p.syncMu.Lock()
				if err := p.sync(ctx, st); err != nil {
					p.log.Debug("sync in run loop failed; retrying after backoff", "err", err)
				}
				p.syncMu.Unlock()
				// The loop looks at the queue and the retry next anyway:
				// a wake-up sent during the sync is stale.
				select {
				case <-p.kick:
				default:
				}
			}
			nextPeriodic = p.clock.Now().Add(p.cfg.syncPeriod)
			continue
		}
		wait := nextPeriodic.Sub(now)
		if at, ok := p.retryAt(); ok {
			wait = min(wait, at.Sub(now))
		}
		if due {
			wait = min(wait, lim.wait())
		}
		t := p.clock.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-p.kick:
		case <-t.C():
		}
		t.Stop()
	}
}

// due reports whether a sync is due at now: a state is queued, a failed
// sync's retry or a drift resync is due, or the periodic sync is.
func (p *Proxier) due(now, nextPeriodic time.Time) (due, closed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, true
	}
	if p.queued != nil || p.resync || !now.Before(nextPeriodic) {
		return true, false
	}
	at, ok := p.retryAtLocked()
	return ok && !now.Before(at), false
}

// take returns the state to sync, the queued one or else the newest one
// given (nil if none ever was), and clears the queue and the resync flag.
func (p *Proxier) take() *proxy.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resync = false
	if st := p.queued; st != nil {
		p.queued = nil
		return st
	}
	return p.wanted
}

// retryAt returns when a failed sync is retried, if one failed.
func (p *Proxier) retryAt() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.retryAtLocked()
}

func (p *Proxier) retryAtLocked() (time.Time, bool) {
	if p.failures == 0 {
		return time.Time{}, false
	}
	return p.failedAt.Add(backoff(p.cfg.minSyncInterval, p.cfg.syncPeriod, p.failures)), true
}

// backoff returns the wait before retry number n (1 for the first): base
// (at least a second) doubled n-1 times, at most limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := max(base, time.Second)
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, max(limit, time.Second))
}

// limiter is a token bucket: SyncBurst tokens at most, one more every
// interval.
type limiter struct {
	interval time.Duration
	tokens   float64
	last     time.Time
}

func (l *limiter) refill(now time.Time) {
	if l.interval <= 0 {
		l.tokens = SyncBurst
		return
	}
	l.tokens = min(SyncBurst, l.tokens+float64(now.Sub(l.last))/float64(l.interval))
	l.last = now
}

func (l *limiter) take() bool {
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// wait returns how long until a token is there.
func (l *limiter) wait() time.Duration {
	if l.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - l.tokens) * float64(l.interval))
}
