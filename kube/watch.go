package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/svcplan/svcplan/proxy"
)

// LabelServiceProxyName is the label that hands a Service to another
// proxy: kube-proxy, and a [Watcher], leave out every Service (and
// EndpointSlice) that carries it, whatever its value.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// The default retry backoff of a Watcher after a failed Sync.
const (
	// DefaultRetryMin is the wait before the first retry.
	DefaultRetryMin = time.Second
	// DefaultRetryMax is the longest wait between retries.
	DefaultRetryMax = 30 * time.Second
)

// Syncer is what a [Watcher] feeds: it makes the node match a State.
// proxier.Proxier is one. Sync may keep st; the Watcher never changes a
// State after passing it.
type Syncer interface {
	// Sync makes the node proxy as st says, or returns why it could not.
	Sync(ctx context.Context, st *proxy.State) error
}

// ErrWatcherRunning is returned by [Watcher.Run] when the Watcher is
// already running, or has run.
var ErrWatcherRunning = errors.New("watcher already run")

// WatcherOption configures a Watcher made by [NewWatcher].
type WatcherOption func(*watcherConfig)

// watcherConfig is what the WatcherOptions set.
type watcherConfig struct {
	stateOpts          []Option
	proxyConfig        *ProxyConfig
	resync             time.Duration
	logger             *slog.Logger
	retryMin, retryMax time.Duration
}

// WithStateOptions passes opts to [StateFor] for every State the Watcher
// builds, such as [WithClusterCIDRs] and [WithNodePortAddresses].
func WithStateOptions(opts ...Option) WatcherOption {
	return func(c *watcherConfig) { c.stateOpts = append(c.stateOpts, opts...) }
}

// WithProxyConfig gives the Watcher the node's KubeProxyConfiguration, as
// [Read] decodes it, which [StateFor] applies before the state options.
func WithProxyConfig(pc *ProxyConfig) WatcherOption {
	return func(c *watcherConfig) { c.proxyConfig = pc }
}

// WithResync sets the informers' resync period: every d, every cached
// object is delivered again, and the Watcher sends the State again. Zero,
// the default, never resyncs.
func WithResync(d time.Duration) WatcherOption {
	return func(c *watcherConfig) { c.resync = d }
}

// WithLogger sets the logger for what the Watcher does (caches synced,
// States sent, Sync failures, new conversion warnings); the default
// discards.
func WithLogger(l *slog.Logger) WatcherOption {
	return func(c *watcherConfig) { c.logger = l }
}

// WithRetryBackoff sets the wait after a failed Sync before the newest
// State is sent again: first minWait, doubled after each failure up to
// maxWait, and back to minWait after a success. The defaults are
// [DefaultRetryMin] and [DefaultRetryMax].
func WithRetryBackoff(minWait, maxWait time.Duration) WatcherOption {
	return func(c *watcherConfig) { c.retryMin, c.retryMax = minWait, maxWait }
}

// Watcher keeps a [Syncer] fed with the [proxy.State] of one node, built
// from the Services, EndpointSlices and Node of a live cluster. It is made
// by [NewWatcher] and works while [Watcher.Run] runs.
type Watcher struct {
	client kubernetes.Interface
	node   string
	sink   Syncer
	cfg    watcherConfig

	// dirty holds a token when the caches changed since the last build.
	dirty chan struct{}
	// caches are Run's informers, once Run made them.
	caches  atomic.Pointer[caches]
	started atomic.Bool
	synced  atomic.Bool
	sent    atomic.Int64
}

// NewWatcher returns a Watcher that feeds sink with the State of the node
// named node, read through client. It starts nothing: see [Watcher.Run].
// The error is for a nil client or sink, or an empty node name.
func NewWatcher(client kubernetes.Interface, node string, sink Syncer, opts ...WatcherOption) (*Watcher, error) {
	switch {
	case client == nil:
		return nil, errors.New("making a watcher: nil client")
	case sink == nil:
		return nil, errors.New("making a watcher: nil sink")
	case node == "":
		return nil, fmt.Errorf("making a watcher: %w", ErrNoNodeName)
	}
	cfg := watcherConfig{retryMin: DefaultRetryMin, retryMax: DefaultRetryMax}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.retryMin <= 0 {
		cfg.retryMin = DefaultRetryMin
	}
	cfg.retryMax = max(cfg.retryMax, cfg.retryMin)
	return &Watcher{client: client, node: node, sink: sink, cfg: cfg, dirty: make(chan struct{}, 1)}, nil
}

// HasSynced reports whether the Watcher's caches have synced, after which
// it sends States.
func (w *Watcher) HasSynced() bool { return w.synced.Load() }

// Sent returns the number of States the Watcher passed to its Syncer
// whose Sync succeeded.
func (w *Watcher) Sent() int64 { return w.sent.Load() }

// Run watches the cluster and feeds the Syncer until ctx is done. It
// starts informers on Services and EndpointSlices (all namespaces, without
// the [LabelServiceProxyName] and service.kubernetes.io/headless labels,
// as kube-proxy selects them) and on the node's own Node, and waits until
// all three caches have synced before it sends anything.
//
// From then on every change marks the State stale, and one goroutine
// rebuilds it with [StateFor] and passes the newest one to Sync, so that
// changes arriving while Sync runs are coalesced into the next State and
// two Syncs never run at once. Services that the State cannot hold
// (those [proxy.State.Validate] finds fault with) are left out and logged,
// as kube-proxy skips a bad service rather than the whole node. After a
// failed Sync the Watcher waits (see [WithRetryBackoff]) and sends the
// newest State again.
//
// Run returns nil when ctx is cancelled after the caches synced, and an
// error wrapping ctx's error when they never did. A Watcher runs once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return ErrWatcherRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	proxied, err := proxiedSelector()
	if err != nil {
		cancel()
		return fmt.Errorf("watching: %w", err)
	}
	objs := informers.NewSharedInformerFactoryWithOptions(w.client, w.cfg.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = proxied.String() }))
	nodes := informers.NewSharedInformerFactoryWithOptions(w.client, w.cfg.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(metav1.ObjectNameField, w.node).String()
		}))
	defer func() {
		cancel()
		objs.Shutdown()
		nodes.Shutdown()
	}()
	c := &caches{
		services: objs.Core().V1().Services(),
		slices:   objs.Discovery().V1().EndpointSlices(),
		nodes:    nodes.Core().V1().Nodes(),
		proxied:  proxied,
		node:     w.node,
	}
	w.caches.Store(c)
	synced, err := c.register(w.markDirty, w.watchError)
	if err != nil {
		return fmt.Errorf("watching: %w", err)
	}
	objs.Start(ctx.Done())
	nodes.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("waiting for the caches to sync: %w", context.Cause(ctx))
	}
	w.synced.Store(true)
	w.cfg.logger.Info("caches synced", "node", w.node)
	w.markDirty()
	w.loop(ctx, c)
	return nil
}

// proxiedSelector returns kube-proxy's label selector for the Services
// and EndpointSlices it proxies.
func proxiedSelector() (labels.Selector, error) {
	noProxyName, err := labels.NewRequirement(LabelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return nil, err
	}
	notHeadless, err := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	if err != nil {
		return nil, err
	}
	return labels.NewSelector().Add(*noProxyName, *notHeadless), nil
}

// markDirty records that the caches changed; it never blocks.
func (w *Watcher) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// watchError logs a failed list or watch, which the informer retries.
func (w *Watcher) watchError(what string, err error) {
	w.cfg.logger.Warn("list or watch failed; retrying", "resource", what, "err", err)
}

// loop sends the newest State each time the caches change, until ctx is
// done.
func (w *Watcher) loop(ctx context.Context, c *caches) {
	wait := w.cfg.retryMin
	warned := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.dirty:
		}
		st, ok := w.build(c, warned)
		if !ok {
			continue // nothing to send until the next change
		}
		start := time.Now()
		err := w.sink.Sync(ctx, st)
		if err == nil {
			w.sent.Add(1)
			wait = w.cfg.retryMin
			w.cfg.logger.Debug("state sent", "services", len(st.Services), "took", time.Since(start))
			continue
		}
		if ctx.Err() != nil {
			return
		}
		w.cfg.logger.Error("sync failed; retrying", "err", err, "retryIn", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, w.cfg.retryMax)
		w.markDirty()
	}
}

// sleep waits for d or until ctx is done; false means ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// build returns the State of the cached objects, with the services that
// fail validation left out; false means there is no State to send. Each
// conversion warning is logged when it first appears; warned holds those
// of the last build.
func (w *Watcher) build(c *caches, warned map[string]bool) (*proxy.State, bool) {
	objs, err := c.objects()
	if err != nil {
		w.cfg.logger.Error("reading the caches", "err", err)
		return nil, false
	}
	objs.ProxyConfig = w.cfg.proxyConfig
	st, warns, err := StateFor(objs, w.node, w.cfg.stateOpts...)
	now := map[string]bool{}
	for _, wn := range warns {
		s := wn.String()
		if !warned[s] {
			w.cfg.logger.Info("conversion warning", "warning", s)
		}
		now[s] = true
	}
	clear(warned)
	for s := range now {
		warned[s] = true
	}
	if err != nil {
		w.cfg.logger.Error("building the node's state", "err", err)
		return nil, false
	}
	dropped, err := dropInvalid(&st)
	for _, d := range dropped {
		w.cfg.logger.Error("service left out: invalid", "service", d.service, "err", d.err)
	}
	if err != nil {
		w.cfg.logger.Error("the node's state is invalid; waiting for a change", "err", err)
		return nil, false
	}
	return &st, true
}
