package proxier

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/translate"
	"github.com/svcplan/svcplan/userspace"
)

// Defaults of the timing options, kube-proxy's.
const (
	// DefaultMinSyncInterval is the default of [WithMinSyncInterval]:
	// kube-proxy's --iptables-min-sync-period.
	DefaultMinSyncInterval = time.Second
	// DefaultSyncPeriod is the default of [WithSyncPeriod]: kube-proxy's
	// --iptables-sync-period.
	DefaultSyncPeriod = 30 * time.Second
	// DefaultFullSyncPeriod is how often a sync rewrites every owned
	// object even when nothing changed, as kube-proxy's FullSyncPeriod.
	DefaultFullSyncPeriod = time.Hour
	// SyncBurst is how many syncs may follow each other without waiting
	// the minimum interval, as kube-proxy's BoundedFrequencyRunner allows.
	SyncBurst = 2
)

// Clock tells the time and makes timers. The default is the system
// clock; tests give a fake one with [WithClock] to drive [Proxier.Run]
// without waiting.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a timer made by a [Clock].
type Timer interface {
	// C returns the channel that receives the time when the timer fires.
	C() <-chan time.Time
	// Stop stops the timer; it reports whether it had not fired yet.
	Stop() bool
}

// systemClock is the Clock of the time package.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// UserspaceProxy is what the proxier needs of the userspace proxy:
// [userspace.Proxy] has these methods.
type UserspaceProxy interface {
	// Apply makes the proxy's listeners those of p.
	Apply(ctx context.Context, p *userspace.Plan) error
	// Close closes every listener.
	Close(ctx context.Context) error
}

var _ UserspaceProxy = (*userspace.Proxy)(nil)

// Listener opens the listening sockets of the health check servers. The
// default listens in the proxier's network namespace ([WithNetNS]).
type Listener interface {
	// Listen listens on the TCP address addr ("host:port").
	Listen(ctx context.Context, addr string) (net.Listener, error)
}

// Option configures a [Proxier].
type Option func(*config)

// config is what the options set.
type config struct {
	netnsPath       string
	logger          *slog.Logger
	registry        prometheus.Registerer
	compileOpts     []translate.Option
	iptablesOpts    []iptables.Option
	nftablesOpts    []nftables.Option
	ipsetOpts       []ipset.Option
	ipvsOpts        []ipvs.Option
	userspaceOpts   []userspace.Option
	minSyncInterval time.Duration
	syncPeriod      time.Duration
	fullSyncPeriod  time.Duration
	healthTimeout   time.Duration
	healthBind      netip.Addr
	clock           Clock
	listener        Listener
	conntrack       Conntrack
	noConntrack     bool
	ipt             map[iptables.Family]iptables.Applier
	nft             nftables.Applier
	sets            ipset.Applier
	vs              ipvs.Applier
	us              UserspaceProxy
}

func newConfig(opts []Option) config {
	c := config{
		minSyncInterval: DefaultMinSyncInterval,
		syncPeriod:      DefaultSyncPeriod,
		fullSyncPeriod:  DefaultFullSyncPeriod,
		clock:           systemClock{},
		ipt:             map[iptables.Family]iptables.Applier{},
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.healthTimeout <= 0 {
		c.healthTimeout = 2 * c.syncPeriod
	}
	return c
}

// WithNetNS makes the proxier program the network namespace at path (such
// as "/run/netns/NAME" or "/proc/PID/ns/net") instead of the caller's:
// its appliers, conntrack cleanup and health check servers all work
// there.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// WithLogger sets the logger for syncs, failures and health check
// servers; the default discards. It is also given to the appliers the
// proxier makes.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegistry registers the proxier's metrics (see the package doc) on
// r. Without it, no metric is registered anywhere.
func WithRegistry(r prometheus.Registerer) Option { return func(c *config) { c.registry = r } }

// WithCompileOptions passes opts to [translate.Compile] on every sync.
func WithCompileOptions(opts ...translate.Option) Option {
	return func(c *config) { c.compileOpts = append(c.compileOpts, opts...) }
}

// WithIPTablesOptions passes opts (a backend, binaries, an owner prefix)
// to the iptables appliers the proxier makes. [WithNetNS] and
// [WithLogger] are passed already.
func WithIPTablesOptions(opts ...iptables.Option) Option {
	return func(c *config) { c.iptablesOpts = append(c.iptablesOpts, opts...) }
}

// WithNFTablesOptions passes opts to the nftables applier the proxier
// makes.
func WithNFTablesOptions(opts ...nftables.Option) Option {
	return func(c *config) { c.nftablesOpts = append(c.nftablesOpts, opts...) }
}

// WithIPSetOptions passes opts (such as an owner prefix) to the ipset
// applier the proxier makes in IPVS mode and for Cleanup. [WithNetNS]
// and [WithLogger] are passed already.
func WithIPSetOptions(opts ...ipset.Option) Option {
	return func(c *config) { c.ipsetOpts = append(c.ipsetOpts, opts...) }
}

// WithIPVSOptions passes opts to the IPVS applier the proxier makes in
// IPVS mode and for Cleanup. [WithNetNS] and [WithLogger] are passed
// already.
func WithIPVSOptions(opts ...ipvs.Option) Option {
	return func(c *config) { c.ipvsOpts = append(c.ipvsOpts, opts...) }
}

// WithUserspaceOptions passes opts to the userspace proxy the proxier
// makes.
func WithUserspaceOptions(opts ...userspace.Option) Option {
	return func(c *config) { c.userspaceOpts = append(c.userspaceOpts, opts...) }
}

// WithMinSyncInterval sets the least time between two syncs of the
// [Proxier.Run] loop, after a burst of [SyncBurst] (default
// [DefaultMinSyncInterval]).
func WithMinSyncInterval(d time.Duration) Option {
	return func(c *config) { c.minSyncInterval = d }
}

// WithSyncPeriod sets how often the [Proxier.Run] loop re-applies the
// last state when nothing changed, which repairs what others changed
// (default [DefaultSyncPeriod]). It must be positive.
func WithSyncPeriod(d time.Duration) Option { return func(c *config) { c.syncPeriod = d } }

// WithFullSyncPeriod sets how often a sync starts from fresh appliers,
// which rewrite every owned object instead of only what changed (default
// [DefaultFullSyncPeriod]). Only appliers the proxier made are renewed.
func WithFullSyncPeriod(d time.Duration) Option { return func(c *config) { c.fullSyncPeriod = d } }

// WithHealthTimeout sets how long a queued state may wait for a
// successful sync before [Proxier.Healthz] reports unhealthy (default
// twice the sync period, as kube-proxy's).
func WithHealthTimeout(d time.Duration) Option { return func(c *config) { c.healthTimeout = d } }

// WithHealthCheckAddress makes the health check servers of services
// listen on a only, instead of every address of the namespace.
func WithHealthCheckAddress(a netip.Addr) Option { return func(c *config) { c.healthBind = a } }

// WithHealthCheckListener makes the health check servers listen through
// l, for tests.
func WithHealthCheckListener(l Listener) Option { return func(c *config) { c.listener = l } }

// WithClock sets the clock of the run loop, the metrics and the health
// checks, for tests.
func WithClock(clk Clock) Option { return func(c *config) { c.clock = clk } }

// WithConntrack sets what deletes stale UDP conntrack entries after a
// sync, for tests; the default works through netlink in the proxier's
// namespace.
func WithConntrack(ct Conntrack) Option { return func(c *config) { c.conntrack = ct } }

// WithoutConntrackCleanup turns the UDP conntrack cleanup off.
func WithoutConntrackCleanup() Option { return func(c *config) { c.noConntrack = true } }

// WithIPTablesApplier makes the proxier apply the iptables plans of
// family through a, such as an [iptables.Fake], instead of an applier it
// makes. Cleanup uses it too.
func WithIPTablesApplier(family iptables.Family, a iptables.Applier) Option {
	if family == "" {
		family = iptables.IPv4
	}
	return func(c *config) { c.ipt[family] = a }
}

// WithNFTablesApplier makes the proxier apply nftables plans (of both
// families) through a, such as an [nftables.Fake].
func WithNFTablesApplier(a nftables.Applier) Option { return func(c *config) { c.nft = a } }

// WithIPSetApplier makes the proxier apply the ipsets of IPVS plans
// through a, such as an [ipset.Fake], instead of an applier it makes.
// Cleanup uses it too.
func WithIPSetApplier(a ipset.Applier) Option { return func(c *config) { c.sets = a } }

// WithIPVSApplier makes the proxier apply the virtual servers, the
// kube-ipvs0 addresses and the sysctls of IPVS plans through a, such as
// an [ipvs.Fake], instead of an applier it makes. Cleanup uses it too.
func WithIPVSApplier(a ipvs.Applier) Option { return func(c *config) { c.vs = a } }

// WithUserspaceProxy makes the proxier run the listeners of userspace
// plans through p instead of a [userspace.Proxy] it makes.
func WithUserspaceProxy(p UserspaceProxy) Option { return func(c *config) { c.us = p } }
