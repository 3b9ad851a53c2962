package ipvs

import (
	"context"
	"log/slog"
)

// Applier makes a kernel (or a [Fake] of one) hold a [Plan]. The real one
// is [New]'s *Kernel, on Linux.
type Applier interface {
	// Apply makes the namespace's IPVS table hold exactly p's virtual
	// and real servers (real servers removed from TCP virtual servers
	// drain first, see [Kernel]), and the dummy interface p names hold
	// exactly p's addresses. What is added comes before what is removed,
	// so traffic never sees a gap; a failure part way leaves a state the
	// next Apply converges from.
	Apply(ctx context.Context, p *Plan) error
	// Cleanup deletes every virtual server of the namespace and the dummy
	// interface the applier's plans named, and nothing else.
	Cleanup(ctx context.Context) error
}

var _ Applier = (*Fake)(nil)

// The sysctls IPVS mode needs, which an Apply sets, with the value it
// sets, as kube-proxy does.
var requiredSysctls = [...]Sysctl{
	{Name: "net/ipv4/vs/conntrack", Value: "1"},
	{Name: "net/ipv4/vs/expire_nodest_conn", Value: "1"},
	{Name: "net/ipv4/vs/expire_quiescent_template", Value: "1"},
	{Name: "net/ipv4/ip_forward", Value: "1"},
}

// Sysctl is one kernel setting under /proc/sys, such as
// "net/ipv4/vs/conntrack", and its value.
type Sysctl struct {
	// Name is the path under /proc/sys, with slashes.
	Name string
	// Value is the value, without the trailing newline.
	Value string
}

// RequiredSysctls returns the sysctls an Apply sets in its namespace
// before anything else, with their values: IPVS connection tracking (so
// that iptables can masquerade IPVS traffic), expiring connections to
// deleted and quiesced real servers, and forwarding.
func RequiredSysctls() []Sysctl { return append([]Sysctl(nil), requiredSysctls[:]...) }

// Option configures an applier made by [New] or [NewFake].
type Option func(*config)

type config struct {
	netnsPath string
	netnsFd   int
	logger    *slog.Logger
}

func newConfig(opts []Option) config {
	c := config{netnsFd: -1}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// WithNetNS makes the applier work in the network namespace at path (such
// as "/run/netns/NAME" or "/proc/PID/ns/net") instead of the caller's. The
// path is opened, and checked to be a network namespace, at each Apply
// and Cleanup.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// WithNetNSFd makes the applier work in the network namespace that the
// open file descriptor fd refers to. The applier duplicates fd for each
// call; the caller keeps fd open while the applier is used.
func WithNetNSFd(fd int) Option { return func(c *config) { c.netnsFd = fd } }

// WithLogger sets the logger for what the applier decides (a real server
// draining, drift repaired, a sysctl changed); the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Stats counts what an applier did since it was made. Kernel operations
// are counted one per request: a virtual or real server created,
// updated or deleted, the interface created, set up or deleted, an
// address added or deleted, a sysctl written.
type Stats struct {
	// Applies is the number of Apply calls.
	Applies int
	// Reads is the number of read requests: the list of virtual servers,
	// the real servers of each, the interface and its addresses, the
	// sysctls.
	Reads int
	// Operations is the number of kernel writes, Cleanup's included.
	Operations int
	// LastOperations is the number of writes of the last Apply or
	// Cleanup; 0 after one that found everything as planned.
	LastOperations int
	// ServicesAdded, ServicesUpdated and ServicesDeleted count virtual
	// server writes.
	ServicesAdded, ServicesUpdated, ServicesDeleted int
	// RealAdded, RealUpdated and RealDeleted count real server writes;
	// RealUpdated includes weights set to 0 to drain.
	RealAdded, RealUpdated, RealDeleted int
	// AddressesAdded and AddressesDeleted count the interface's
	// addresses written.
	AddressesAdded, AddressesDeleted int
	// SysctlsSet counts the sysctls written (only those that differed).
	SysctlsSet int
	// Draining is the number of real servers removed from the plan that
	// still have connections, kept with weight 0 until they have none.
	Draining int
	// Repairs counts objects this applier had written that were found
	// missing or changed (virtual or real servers, the interface, an
	// address), and were repaired.
	Repairs int
}
