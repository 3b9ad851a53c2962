package ipset

import (
	"context"
	"log/slog"
)

// Applier makes a kernel (or a [Fake] of one) hold a [Plan]. The real one
// is [New]'s *Kernel, on Linux.
type Applier interface {
	// Apply makes every set of p exist with exactly p's members, and
	// destroys the owned sets that p no longer holds. Sets the applier
	// does not own are never touched. Members are added before others are
	// removed, so a lookup never misses a member that both the old and
	// the new plan hold; a failure part way leaves sets that the next
	// Apply converges from.
	Apply(ctx context.Context, p *Plan) error
	// Cleanup destroys every set the applier owns, and nothing else.
	Cleanup(ctx context.Context) error
}

var _ Applier = (*Fake)(nil)

// DefaultOwnerPrefix is the name prefix of the sets an applier owns
// unless [WithOwnerPrefix] says otherwise: kube-proxy's.
const DefaultOwnerPrefix = "KUBE-"

// Option configures an applier made by [New] or [NewFake].
type Option func(*config)

// config is what the options set.
type config struct {
	netnsPath string
	netnsFd   int
	logger    *slog.Logger
	prefix    string
}

func newConfig(opts []Option) config {
	c := config{netnsFd: -1, prefix: DefaultOwnerPrefix}
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
// and Cleanup, so the namespace may be created after the applier.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// WithNetNSFd makes the applier work in the network namespace that the
// open file descriptor fd refers to. The applier duplicates fd for each
// call; the caller keeps fd open while the applier is used and closes it
// afterwards.
func WithNetNSFd(fd int) Option { return func(c *config) { c.netnsFd = fd } }

// WithLogger sets the logger for what the applier decides (a set
// rebuilt and swapped, drift repaired, a stale set still in use); the
// default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithOwnerPrefix sets the name prefix of the sets the applier owns
// besides those its plans name: Apply destroys owned sets that are not in
// the plan, and Cleanup destroys them all. The default is
// [DefaultOwnerPrefix]; the empty prefix makes the applier own only the
// sets its plans have named.
func WithOwnerPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// Stats counts what an applier did since it was made. Writes are counted
// one per kernel request: a set created, swapped or destroyed, or one
// member added or deleted.
type Stats struct {
	// Applies is the number of Apply calls.
	Applies int
	// Reads is the number of times the applier read the sets back (one
	// dump of every set, at each Apply and Cleanup).
	Reads int
	// Operations is the number of writes, Cleanup's included.
	Operations int
	// LastOperations is the number of writes the last Apply or Cleanup
	// made; 0 after one that found everything as planned.
	LastOperations int
	// Creates, Adds, Deletes, Swaps and Destroys split Operations by
	// kind: sets created, members added, members deleted, sets swapped,
	// sets destroyed.
	Creates, Adds, Deletes, Swaps, Destroys int
	// Rebuilds is the number of sets refilled by building a temporary set
	// and swapping it in, because most members changed or the set's
	// definition (bitmap range, too small a maxelem) did, or destroyed
	// and created again because its type or family did.
	Rebuilds int
	// Repairs is the number of sets this applier had applied that were
	// found missing, redefined, or holding other members than it left
	// (changed behind its back), and were repaired.
	Repairs int
	// InUse is the number of owned sets that the last Apply or Cleanup
	// could not destroy because a rule still refers to them; Apply tries
	// again each time.
	InUse int
}

// swapOverhead is the number of writes a rebuild costs beyond adding the
// members: creating the temporary set, swapping, destroying it.
const swapOverhead = 3
