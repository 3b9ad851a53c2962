package nftables

import (
	"context"
	"errors"
	"log/slog"
	"strings"
)

// Applier makes a kernel (or a [Fake] of one) hold a [Plan]. The real one
// is [New]'s *Kernel, on Linux.
type Applier interface {
	// Apply makes the table that p names exactly p: its sets, maps,
	// elements, chains and rules, in one atomic change. Other tables are
	// left alone. When Apply fails, the table keeps what it held.
	Apply(ctx context.Context, p *Plan) error
	// Cleanup deletes the "ip" and "ip6" tables named DefaultTableName,
	// and any other table the applier wrote, and nothing else.
	Cleanup(ctx context.Context) error
}

var _ Applier = (*Fake)(nil)

// MaxElementsPerMessage is the most set elements an applier sends in one
// netlink message. Messages are also kept under the 64 KiB that a netlink
// attribute can hold, so an element list with long verdict chain names or
// comments is cut into smaller pieces.
const MaxElementsPerMessage = 1000

// Option configures an applier made by [New] or [NewFake].
type Option func(*config)

// config is what the options set.
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
// path is opened at each Apply and Cleanup, so the namespace may be
// created after the applier.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// WithNetNSFd makes the applier work in the network namespace that the
// open file descriptor fd refers to. The caller keeps fd open while the
// applier is used and closes it afterwards.
func WithNetNSFd(fd int) Option { return func(c *config) { c.netnsFd = fd } }

// WithLogger sets the logger for what the applier decides (full or
// partial batch, drift found and repaired); the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Stats counts what an applier did since it was made.
type Stats struct {
	// Applies is the number of Apply calls.
	Applies int
	// Batches is the number of batches committed (netlink transactions
	// for the kernel; atomic changes for a Fake), Cleanup's included.
	// Applying a plan that the table already holds sends none.
	Batches int
	// FullBatches is the number of Apply batches that replaced a whole
	// table: the first for a table, and repairs of a table deleted or
	// changed beyond a chain's rules.
	FullBatches int
	// PartialBatches is the number of Apply batches that wrote only what
	// changed: new and changed chains and sets, and element differences.
	PartialBatches int
	// Messages is the number of netlink messages in the batches, the
	// batch delimiters not counted (for a Fake, the same count of the
	// operations it ran).
	Messages int
	// Verifications is the number of times an applier read a table back
	// because the ruleset changed since its last batch.
	Verifications int
	// Repairs is the number of verifications that found the table
	// different from what was applied: deleted, a chain missing, flushed
	// or holding other rules, a set's elements changed.
	Repairs int
}

// ApplyError is an Apply or Cleanup that failed, shaped like
// [net.OpError]: what was being done, on which table, chain or set, and
// the cause, often a kernel errno, [ErrNotRoot] or an [*Error] from
// [Plan.Validate].
type ApplyError struct {
	// Op is the operation: "validate" (the plan was refused before
	// anything was sent), "build" (a netlink message could not be made),
	// "flush" (the kernel refused the batch; nothing of it was
	// applied), "read" (reading the table back failed), "netns" (the
	// namespace could not be opened) or "cleanup".
	Op string
	// Table is the table concerned; its zero value means none in
	// particular.
	Table Table
	// Chain is the chain concerned; empty means none in particular.
	Chain string
	// Set is the set or map concerned; empty means none in particular.
	Set string
	// Err is the cause.
	Err error
}

// Error returns the error as text, such as
// `nftables flush table ip kube-proxy: permission denied`.
func (e *ApplyError) Error() string {
	var b strings.Builder
	b.WriteString("nftables ")
	b.WriteString(e.Op)
	if e.Table != (Table{}) {
		b.WriteString(" table ")
		f := e.Table.Family
		if f == "" {
			f = IPv4
		}
		b.WriteString(string(f))
		b.WriteByte(' ')
		name := e.Table.Name
		if name == "" {
			name = DefaultTableName
		}
		b.WriteString(name)
	}
	if e.Chain != "" {
		b.WriteString(" chain ")
		b.WriteString(e.Chain)
	}
	if e.Set != "" {
		b.WriteString(" set ")
		b.WriteString(e.Set)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *ApplyError) Unwrap() error { return e.Err }

// Sentinel errors of the appliers.
var (
	// ErrNotRoot is returned when the kernel refuses a change or a read
	// for lack of privilege: root, or CAP_NET_ADMIN in the namespace, is
	// needed.
	ErrNotRoot = errors.New("permission denied: changing nftables needs root (CAP_NET_ADMIN)")
	// ErrNotNetNS is returned when the path or descriptor given with
	// [WithNetNS] or [WithNetNSFd] is not a network namespace.
	ErrNotNetNS = errors.New("not a network namespace")
	// ErrBusy is returned by a [Fake] for deleting a chain or set that a
	// rule or element still refers to, as the kernel answers EBUSY.
	ErrBusy = errors.New("object in use")
	// ErrExists is returned by a [Fake] for adding an element whose key
	// the set holds with another verdict, as the kernel answers EEXIST.
	ErrExists = errors.New("element exists")
	// ErrMissing is returned by a [Fake] for flushing or deleting a
	// table, chain, set or element that does not exist, as the kernel
	// answers ENOENT.
	ErrMissing = errors.New("object does not exist")
)
