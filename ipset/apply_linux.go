package ipset

import (
	"context"
	"fmt"
	"sync"
)

// Kernel applies plans to a Linux kernel's ipsets over netlink, with
// github.com/vishvananda/netlink, in the caller's network namespace or
// another one ([WithNetNS], [WithNetNSFd]); it never runs the ipset tool.
// Make one with [New]; it is safe for concurrent use.
//
// Each Apply reads every set of the namespace back (one dump) and writes
// only the difference from the plan, so that a set deleted or edited by
// someone else is repaired, and applying a plan the kernel holds writes
// nothing:
//
//   - a set that does not exist is created (with its family, or its port
//     range, given explicitly) and filled;
//   - a set that exists gets the missing members added, then, once every
//     set has its additions, the members the plan no longer holds
//     deleted;
//   - when deleting and adding would take more writes than building the
//     set afresh, or a bitmap's port range differs from the plan's, or a
//     hash set's maxelem is too small for the plan's members, a temporary
//     set is built and swapped in, one atomic change for the rules that
//     match the set, and the temporary set destroyed;
//   - a set of another type or family than planned is destroyed and
//     created again (which fails while a rule refers to it);
//   - last, the owned sets the plan no longer holds are destroyed; one
//     that a rule still refers to is left, logged and counted in
//     [Stats].InUse, and destroyed by a later Apply.
//
// Every member is sent with its protocol and the address family of its
// set: netlink v1.3.1 would send TCP for a member with a port and no
// protocol. The kernel has no transaction for ipsets; a failure part way
// leaves sets that the next Apply, reading them back, converges from.
type Kernel struct {
	cfg config

	mu   sync.Mutex
	sync syncer
	st   Stats
}

// New returns a Kernel working in the namespace the options name,
// checking that it can be opened.
func New(opts ...Option) (*Kernel, error) {
	k := &Kernel{cfg: newConfig(opts)}
	ns, err := k.cfg.openNS()
	if err != nil {
		return nil, err
	}
	ns.close()
	k.sync = syncer{prefix: k.cfg.prefix, log: k.cfg.logger, stats: &k.st}
	return k, nil
}

// Stats returns what k did so far.
func (k *Kernel) Stats() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st
}

// Apply makes the namespace's sets hold p, as the [Kernel] doc describes.
// Its errors are [*ApplyError] values.
func (k *Kernel) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrNoSuchSet)}
	}
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Err: err}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run(func() error { return k.sync.apply(ctx, p) })
}

// Cleanup destroys every set k owns in its namespace: those its plans
// named, those with its owner prefix, and its temporary sets. A set that
// a rule still refers to is left and reported in the error.
func (k *Kernel) Cleanup(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run(func() error { return k.sync.cleanup(ctx) })
}

// run opens the namespace and a netlink handle in it for fn.
func (k *Kernel) run(fn func() error) error {
	ns, err := k.cfg.openNS()
	if err != nil {
		return err
	}
	defer ns.close()
	st, err := ns.store()
	if err != nil {
		return &ApplyError{Op: "netns", Err: err}
	}
	defer st.close()
	k.sync.st = st
	defer func() { k.sync.st = nil }()
	return fn()
}
