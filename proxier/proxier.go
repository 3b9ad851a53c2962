package proxier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// Proxier keeps the kernel of one network namespace in step with a
// [proxy.State] in one proxy mode. Make one with [New]; its methods are
// safe for concurrent use. Syncs never overlap: [Proxier.Sync] waits for
// the sync in progress, and [Proxier.Update] queues a state for the
// [Proxier.Run] loop, replacing any state still queued.
type Proxier struct {
	mode    translate.Mode
	cfg     config
	log     *slog.Logger
	clock   Clock
	metrics *metrics
	health  *healthState
	hc      *healthServers
	ct      Conntrack

	// syncMu serialises syncs and guards what they use.
	syncMu   sync.Mutex
	be       *backends
	compiler *translate.Compiler // iptables and nftables modes; nil in userspace
	applied  *proxy.State        // the state of the last successful sync
	lastPlan *translate.Plan
	lastFull time.Time // when the last full sync started; zero: never
	needFull bool      // the next sync must be full (after a failure or drift)

	// mu guards the queue and the loop's bookkeeping.
	mu       sync.Mutex
	queued   *proxy.State // waiting for the run loop; nil: none
	wanted   *proxy.State // the newest state given, by Sync or Update
	failures int          // consecutive failed syncs
	failedAt time.Time    // when the last failure ended
	resync   bool         // a sync found drift: sync again soon
	running  bool
	closed   bool
	kick     chan struct{}
}

// New returns a proxier for mode, which applies nothing until the first
// [Proxier.Sync] or [Proxier.Run]. Every mode is supported: iptables,
// nftables, ipvs and userspace; another returns an error wrapping
// [translate.ErrUnsupportedMode]. The metrics are registered on the
// [WithRegistry] registerer, if given; registering them twice on one
// registerer fails.
func New(mode translate.Mode, opts ...Option) (*Proxier, error) {
	switch mode {
	case translate.ModeIPTables, translate.ModeNFTables, translate.ModeIPVS, translate.ModeUserspace:
	default:
		return nil, &Error{Op: "new", Mode: mode, Err: fmt.Errorf("mode %q: %w", mode, translate.ErrUnsupportedMode)}
	}
	cfg := newConfig(opts)
	if cfg.syncPeriod <= 0 {
		return nil, &Error{Op: "new", Mode: mode, Err: fmt.Errorf("sync period %v: must be positive", cfg.syncPeriod)}
	}
	m, err := newMetrics(cfg.registry)
	if err != nil {
		return nil, &Error{Op: "new", Mode: mode, Err: fmt.Errorf("registering metrics: %w", err)}
	}
	p := &Proxier{
		mode:    mode,
		cfg:     cfg,
		log:     cfg.logger.With("mode", string(mode)),
		clock:   cfg.clock,
		metrics: m,
		health:  &healthState{clock: cfg.clock, timeout: cfg.healthTimeout},
		kick:    make(chan struct{}, 1),
	}
	p.be = newBackends(&p.cfg)
	if mode != translate.ModeUserspace {
		p.compiler = translate.NewCompiler(mode, cfg.compileOpts...)
	}
	listener := cfg.listener
	if listener == nil {
		listener = nsListener{path: cfg.netnsPath}
	}
	p.hc = &healthServers{log: p.log, listener: listener, bind: cfg.healthBind, healthy: p.Healthy, servers: map[svcName]*healthServer{}}
	switch {
	case cfg.noConntrack || mode == translate.ModeUserspace:
		// The userspace proxy's flows end at the proxy, not at endpoints.
	case cfg.conntrack != nil:
		p.ct = cfg.conntrack
	default:
		p.ct = newConntrack(cfg.netnsPath)
	}
	return p, nil
}

// Mode returns the proxier's mode.
func (p *Proxier) Mode() translate.Mode { return p.mode }

// Sync compiles st and applies it now, then deletes stale UDP conntrack
// entries and updates the health check servers and the metrics. It waits
// for a sync in progress, and a state queued by [Proxier.Update] before
// it is dropped: st is newer. The caller must not modify st afterwards.
// Its errors are [*Error] values; after a failure the [Proxier.Run] loop,
// if running, retries with backoff.
func (p *Proxier) Sync(ctx context.Context, st *proxy.State) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.noteWanted(st)
	p.queued = nil
	p.mu.Unlock()
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	return p.sync(ctx, st)
}

// Update queues st for the [Proxier.Run] loop, replacing a state queued
// before that has not been synced yet. The caller must not modify st
// afterwards.
func (p *Proxier) Update(st *proxy.State) {
	p.mu.Lock()
	p.noteWanted(st)
	p.queued = st
	p.mu.Unlock()
	p.health.queued()
	for _, f := range []string{familyLabel(false), familyLabel(true)} {
		p.metrics.lastQueued.WithLabelValues(f).Set(float64(p.clock.Now().UnixNano()) / 1e9)
	}
	p.wake()
}

// noteWanted records st as the newest state and counts its changes;
// p.mu is held.
func (p *Proxier) noteWanted(st *proxy.State) {
	svcs, eps := countChanges(p.wanted, st)
	p.metrics.serviceTotal.Add(float64(svcs))
	p.metrics.endpointTotal.Add(float64(eps))
	p.wanted = st
	svcs, eps = countChanges(p.applied, st)
	p.metrics.servicePending.Set(float64(svcs))
	p.metrics.endpointPending.Set(float64(eps))
}

func (p *Proxier) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// sync compiles and applies st; p.syncMu is held.
func (p *Proxier) sync(ctx context.Context, st *proxy.State) error {
	start := p.clock.Now()
	p.health.queued()
	plan, err := p.compile(st)
	if err != nil {
		p.metrics.syncFailures.WithLabelValues("compile").Inc()
		p.failed()
		return &Error{Op: "compile", Mode: p.mode, Err: err}
	}
	full := p.needFull || p.lastFull.IsZero() || start.Sub(p.lastFull) >= p.cfg.fullSyncPeriod
	if full {
		p.be.renew()
		p.lastFull = start
	}
	before := p.be.counts()
	if err := p.be.apply(ctx, plan); err != nil {
		p.applyFailed(err)
		return &Error{Op: "apply", Mode: p.mode, Err: err}
	}
	after := p.be.counts()
	p.needFull = false
	if after.repairs > before.repairs {
		p.log.Warn("owned objects had changed behind the proxier's back; repaired, and a full sync follows", "repairs", after.repairs-before.repairs)
		p.metrics.driftRepairs.Inc()
		p.needFull = true
	}
	fams := planFamilies(plan)
	for range after.fallbacks - before.fallbacks {
		p.metrics.iptablesPartialFailures.WithLabelValues(fams[0]).Inc()
	}
	p.cleanConntrack(ctx, st)
	if err := p.hc.sync(ctx, st); err != nil {
		p.log.Warn("health check servers", "err", err)
	}
	p.applied, p.lastPlan = st, plan
	end := p.clock.Now()
	d := end.Sub(start).Seconds()
	for _, f := range fams {
		p.metrics.syncDuration.WithLabelValues(f).Observe(d)
		if full || after.full > before.full {
			p.metrics.fullDuration.WithLabelValues(f).Observe(d)
		} else {
			p.metrics.partialDuration.WithLabelValues(f).Observe(d)
		}
		p.metrics.lastSync.WithLabelValues(f).Set(float64(end.UnixNano()) / 1e9)
	}
	p.metrics.observePlan(plan)
	p.metrics.ipvsDraining.Set(float64(after.draining))
	p.metrics.observeNoLocal(st)
	p.succeeded(st)
	p.log.Debug("synced", "full", full, "duration", end.Sub(start))
	return nil
}

// compile compiles st: incrementally with a [translate.Compiler] in the
// iptables and nftables modes, and in userspace mode giving the proxy's
// ports of the last plan back so that listeners keep their ports.
func (p *Proxier) compile(st *proxy.State) (*translate.Plan, error) {
	if p.compiler != nil {
		return p.compiler.Compile(st)
	}
	opts := p.cfg.compileOpts
	if p.mode == translate.ModeUserspace && p.lastPlan != nil && p.lastPlan.Userspace != nil {
		opts = append(opts[:len(opts):len(opts)], translate.WithUserspacePorts(p.lastPlan.Userspace.Ports()))
	}
	return translate.Compile(st, p.mode, opts...)
}

func (p *Proxier) applyFailed(err error) {
	p.metrics.syncFailures.WithLabelValues("apply").Inc()
	p.needFull = true
	backend, fam := backendIPTables, familyLabel(false)
	var ae *applyError
	if errors.As(err, &ae) {
		backend = ae.backend
		if ae.family != "" {
			fam = ae.family
		}
	}
	switch backend {
	case backendNFTables:
		p.metrics.nftablesFailures.WithLabelValues(fam).Inc()
	case backendIPSet, backendIPVS:
		p.metrics.ipvsFailures.WithLabelValues(backend).Inc()
	default:
		p.metrics.iptablesFailures.WithLabelValues(fam).Inc()
	}
	p.log.Error("sync failed", "err", err)
	p.failed()
}

func (p *Proxier) failed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures++
	p.failedAt = p.clock.Now()
	p.wakeLocked()
}

func (p *Proxier) succeeded(st *proxy.State) {
	p.mu.Lock()
	p.failures = 0
	p.resync = p.needFull
	queued := p.queued
	svcs, eps := countChanges(st, queued)
	if queued == nil {
		svcs, eps = 0, 0
	}
	p.metrics.servicePending.Set(float64(svcs))
	p.metrics.endpointPending.Set(float64(eps))
	p.mu.Unlock()
	if queued == nil {
		p.health.updated()
	} else {
		// A newer state waits: the proxier is up to date with st only.
		p.health.updated()
		p.health.queued()
	}
	if p.resync {
		p.wake()
	}
}

func (p *Proxier) wakeLocked() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// cleanConntrack deletes the UDP flows that st leaves stale, per family,
// and counts them. Failures are logged: the rules are in place.
func (p *Proxier) cleanConntrack(ctx context.Context, st *proxy.State) {
	if p.ct == nil {
		return
	}
	for _, ipv6 := range []bool{false, true} {
		s := staleFlows(p.applied, st, ipv6)
		if s.Empty() {
			continue
		}
		start := p.clock.Now()
		n, err := p.ct.DeleteStale(ctx, ipv6, s)
		fam := familyLabel(ipv6)
		p.metrics.conntrackDuration.WithLabelValues(fam).Observe(p.clock.Now().Sub(start).Seconds())
		p.metrics.conntrackDeleted.WithLabelValues(fam).Add(float64(n))
		if err != nil {
			p.log.Warn("conntrack cleanup", "family", fam, "err", err)
		} else if n > 0 {
			p.log.Info("deleted stale UDP conntrack entries", "family", fam, "entries", n)
		}
	}
}

// Cleanup removes the objects of every mode from the namespace, as
// kube-proxy --cleanup does: the owned iptables chains of both families
// (and the jumps into them, which include the userspace portal rules and
// IPVS mode's rules), through iptables-nft and iptables-legacy where
// both are installed; the nftables "kube-proxy" tables; the userspace
// listeners; every IPVS virtual server and the kube-ipvs0 interface
// (skipped when the kernel has no IPVS); and, once no rule matches them,
// the KUBE- ipsets. Other chains, rules, tables, sets and interfaces are
// left alone. The proxier forgets what it applied; the next sync writes
// everything again.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.be.renew()
	err := p.be.cleanup(ctx)
	var ae *applyError
	if errors.As(err, &ae) && ae.backend == backendNFTables {
		p.metrics.nftablesCleanupFailures.WithLabelValues(familyLabel(false)).Inc()
	}
	p.hc.closeAll()
	p.applied, p.lastPlan, p.lastFull = nil, nil, time.Time{}
	if err != nil {
		return &Error{Op: "cleanup", Mode: p.mode, Err: err}
	}
	return nil
}

// Close stops the health check servers and closes the userspace proxy
// (its listeners close; open connections get until ctx is done). Rules
// stay in the kernel: use [Proxier.Cleanup] first to remove them. After
// Close, Sync and Run return [ErrClosed].
func (p *Proxier) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wake()
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.hc.closeAll()
	if err := p.be.close(ctx); err != nil {
		return &Error{Op: "close", Mode: p.mode, Err: err}
	}
	return nil
}

// HealthChecks returns the service health check servers running, sorted
// by namespace and name.
func (p *Proxier) HealthChecks() []HealthCheck { return p.hc.list() }

// Applied returns the state of the last successful sync, nil before
// the first or after Cleanup. The caller must not modify it.
func (p *Proxier) Applied() *proxy.State {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	return p.applied
}

// Plan returns the plan of the last successful sync, nil before the
// first or after Cleanup. The caller must not modify it.
func (p *Proxier) Plan() *translate.Plan {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	return p.lastPlan
}
