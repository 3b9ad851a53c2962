package iptables

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// Applier makes a kernel (or a [Fake] of one) hold a [Plan]. The real one
// is [New]'s *Kernel, on Linux.
type Applier interface {
	// Apply makes the owned chains of p's family and the jumps into them
	// exactly p's, leaving every other chain and rule alone. Each table is
	// changed atomically: when Apply fails for a table, the table keeps
	// the rules it had.
	Apply(ctx context.Context, p *Plan) error
	// Cleanup removes every owned chain and every rule of a built-in chain
	// that jumps into one, in every table of the family, and nothing else.
	Cleanup(ctx context.Context) error
}

var _ Applier = (*Fake)(nil)

// Backend is an iptables implementation: the nf_tables based one or the
// legacy x_tables one.
type Backend string

// The backends.
const (
	// BackendAuto, the zero value, picks the backend the system's
	// "iptables" command uses.
	BackendAuto Backend = ""
	// BackendNFT is iptables-nft (iptables over nf_tables).
	BackendNFT Backend = "nft"
	// BackendLegacy is iptables-legacy (x_tables).
	BackendLegacy Backend = "legacy"
)

// DefaultOwnerPrefix is the prefix of the chains an applier owns unless
// told otherwise.
const DefaultOwnerPrefix = "KUBE-"

// DefaultVerifyLimit is the default of [WithVerifyLimit].
const DefaultVerifyLimit = 20000

// Option configures an applier made by New.
type Option func(*config)

// config is what the options set.
type config struct {
	netnsPath   string
	netnsFd     int
	restorePath string
	savePath    string
	ownerPrefix string
	logger      *slog.Logger
	backend     Backend
	observer    func(Table, []byte)
	verifyLimit int
}

func newConfig(opts []Option) config {
	c := config{netnsFd: -1, ownerPrefix: DefaultOwnerPrefix, verifyLimit: DefaultVerifyLimit}
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
// path is opened at each use, so the namespace may be created later.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// WithNetNSFd makes the applier work in the network namespace that the
// open file descriptor fd refers to. The caller keeps fd open while the
// applier is used and closes it afterwards.
func WithNetNSFd(fd int) Option { return func(c *config) { c.netnsFd = fd } }

// WithBinaries sets the paths of the restore and save tools, such as
// "/usr/sbin/iptables-nft-restore" and "/usr/sbin/iptables-nft-save". The
// iptables command itself is taken to be restore without its "-restore"
// suffix. Without this option the tools are found on PATH for the backend.
func WithBinaries(restore, save string) Option {
	return func(c *config) { c.restorePath, c.savePath = restore, save }
}

// WithOwnerPrefix sets the prefix of owned chain names; the default is
// [DefaultOwnerPrefix]. Every chain of a plan must carry it.
func WithOwnerPrefix(prefix string) Option { return func(c *config) { c.ownerPrefix = prefix } }

// WithLogger sets the logger for what the applier decides (full or partial
// sync, drift found, fallbacks); the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithBackend chooses the backend instead of detecting it from
// "iptables --version".
func WithBackend(b Backend) Option { return func(c *config) { c.backend = b } }

// WithRestoreObserver calls f with the exact input of each iptables-restore
// run, before it runs, for tests and debugging. f must not keep input.
func WithRestoreObserver(f func(table Table, input []byte)) Option {
	return func(c *config) { c.observer = f }
}

// WithVerifyLimit sets the number of owned rules (in all tables) up to
// which, when something else changed nf_tables since the last Apply, the
// iptables-nft applier reads a table back with iptables-save and checks
// every owned chain's rule count; above it, it checks only the canary
// chain and the jumps, which costs a few milliseconds instead of seconds
// (iptables-nft-save of one table costs as much as of all: about 3 s at
// 300 000 rules), and so misses an owned chain flushed on its own. The
// legacy applier always reads the table back, which is as cheap as any
// narrower check there. The default is [DefaultVerifyLimit].
func WithVerifyLimit(rules int) Option { return func(c *config) { c.verifyLimit = rules } }

// Stats counts what an applier did since it was made.
type Stats struct {
	// Applies is the number of Apply calls.
	Applies int
	// Restores is the number of restores run (iptables-restore for the
	// kernel; table writes for a Fake), one per table written.
	Restores int
	// FullRestores is the number of Restores that rewrote every owned
	// chain of their table.
	FullRestores int
	// PartialRestores is the number of Restores that wrote only changed
	// chains.
	PartialRestores int
	// Fallbacks is the number of partial restores that failed and were
	// redone as full ones.
	Fallbacks int
	// Verifications is the number of times a table was read back because
	// something else had changed it since the last Apply.
	Verifications int
	// Repairs is the number of verifications that found drift: the
	// canary gone, an owned chain missing, holding another number of
	// rules or stale, or the jumps not as last applied.
	Repairs int
	// RestoreBytes is the total size of the restore input written.
	RestoreBytes int64
}

// RestoreError is an iptables-restore run that failed: the table, the
// line of the input it reported and that line's text, and what it printed.
// It is usually found wrapped in an [*Error] with Op "apply".
type RestoreError struct {
	// Table is the table being restored.
	Table Table
	// Line is the 1-based line of the input that failed; 0 when the tool
	// did not say.
	Line int
	// LineText is the text of that line; empty when Line is 0.
	LineText string
	// Stderr is what the tool printed on standard error, trimmed.
	Stderr string
	// Err is the cause: the process's exit error, possibly wrapped with
	// [ErrNotRoot] or [ErrToolMissing].
	Err error
}

// Error returns a one-line description naming the table, line and message.
func (e *RestoreError) Error() string {
	var b strings.Builder
	b.WriteString("iptables-restore of table ")
	b.WriteString(string(e.Table))
	if e.Line > 0 {
		b.WriteString(" at line ")
		b.WriteString(strconv.Itoa(e.Line))
		if e.LineText != "" {
			b.WriteString(" (")
			b.WriteString(e.LineText)
			b.WriteString(")")
		}
	}
	if msg := stderrMessage(e.Stderr); msg != "" {
		b.WriteString(": ")
		b.WriteString(msg)
	} else if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *RestoreError) Unwrap() error { return e.Err }

// Sentinel errors of the appliers.
var (
	// ErrNotRoot is returned when the kernel refuses the change for lack
	// of privilege (root or CAP_NET_ADMIN in the namespace is needed).
	ErrNotRoot = errors.New("permission denied: changing iptables needs root (CAP_NET_ADMIN)")
	// ErrToolMissing is returned when an iptables tool is not installed.
	ErrToolMissing = errors.New("iptables tool not found")
	// ErrFamily is returned for a plan of another family than the
	// applier's.
	ErrFamily = errors.New("plan of another family")
)

// CanaryChain returns the name of the empty chain an applier keeps in each
// table it writes, whose disappearance tells that the table was flushed
// behind its back.
func CanaryChain(ownerPrefix string) string { return ownerPrefix + "PROXY-CANARY" }

// planUses reports whether p has chains or jumps in t.
func planUses(p *Plan, t Table) bool {
	if tc := p.Table(t); tc != nil && len(tc.Chains) > 0 {
		return true
	}
	for _, j := range p.Jumps {
		if j.Table == t {
			return true
		}
	}
	return false
}

// jumpsEqual reports whether a and b have the same jumps in t.
func jumpsEqual(a, b *Plan, t Table) bool {
	var ja, jb []Jump
	for _, j := range a.Jumps {
		if j.Table == t {
			ja = append(ja, j)
		}
	}
	for _, j := range b.Jumps {
		if j.Table == t {
			jb = append(jb, j)
		}
	}
	return slices.EqualFunc(ja, jb, func(x, y Jump) bool {
		return x.Chain == y.Chain && x.Comment == y.Comment && x.Target == y.Target && slices.Equal(x.Match, y.Match)
	})
}

// countRules returns the number of rules of p's chains in t.
func countRules(p *Plan, t Table) int {
	if p == nil {
		return 0
	}
	n := 0
	if tc := p.Table(t); tc != nil {
		for i := range tc.Chains {
			n += tc.Chains[i].n
		}
	}
	return n
}

// copyPlan returns a copy of p that shares only immutable rule text.
func copyPlan(p *Plan) *Plan {
	c := &Plan{Family: p.Family, Tables: make([]TableChains, len(p.Tables)), Jumps: make([]Jump, len(p.Jumps))}
	for i, tc := range p.Tables {
		c.Tables[i] = TableChains{Table: tc.Table, Chains: slices.Clone(tc.Chains)}
	}
	for i, j := range p.Jumps {
		j.Match = slices.Clone(j.Match)
		c.Jumps[i] = j
	}
	return c
}
