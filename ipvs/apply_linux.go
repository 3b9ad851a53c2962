package ipvs

import (
	"context"
	"fmt"
	"sync"
)

// Kernel applies plans to a Linux kernel's IPVS table over netlink, with
// github.com/moby/ipvs, and keeps the dummy interface that holds the
// service addresses with github.com/vishvananda/netlink, in the caller's
// network namespace or another one ([WithNetNS], [WithNetNSFd]); it never
// runs ipvsadm or ip. Make one with [New]; it is safe for concurrent use.
//
// Each Apply first sets the sysctls IPVS mode needs ([RequiredSysctls])
// where they differ, then reads the interface and every virtual server
// with its real servers back, and writes only the difference, in this
// order, so that what is added comes before what is removed:
//
//  1. the interface is created (a dummy link) if missing and set up, and
//     the missing addresses are added as host routes (/32, /128);
//  2. missing virtual servers are created (masquerading, their address
//     family and netmask always given), changed ones (scheduler,
//     persistence) updated, missing real servers added and changed
//     weights set;
//  3. real servers the plan no longer holds are deleted: those of UDP
//     and SCTP virtual servers at once, those of TCP ones once they have
//     no active or inactive connection; until then they keep weight 0, so
//     that existing connections go on and new ones avoid them, and every
//     Apply checks them again ([Stats].Draining counts them);
//  4. virtual servers the plan no longer holds are deleted, then the
//     interface's addresses it no longer holds.
//
// An add that finds the object there, or a delete that finds it gone,
// counts as done. Applying a plan the kernel holds writes nothing; what
// someone else deleted or changed is repaired by the next Apply; a
// failure part way leaves a state the next Apply converges from.
//
// The Kernel owns every virtual server of its namespace, as kube-proxy
// does (those keyed by protocol, address and port; firewall-mark ones
// are left alone): Apply deletes those not in the plan and Cleanup
// deletes them all. The sysctls are left as Apply set them. It owns the interfaces its plans name (and kube-ipvs0), which
// Cleanup deletes; it refuses to take over an interface of that name
// that is not a dummy link. A kernel without IPVS gives errors that wrap
// [ErrNoIPVS] ("ip_vs module not loaded").
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
	k.sync = syncer{log: k.cfg.logger, stats: &k.st}
	return k, nil
}

// Stats returns what k did so far.
func (k *Kernel) Stats() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st
}

// Sysctls returns the sysctls IPVS mode needs with the values the last
// Apply read or wrote; the values are empty before the first Apply.
func (k *Kernel) Sysctls() []Sysctl {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := RequiredSysctls()
	for i := range out {
		out[i].Value = k.sync.sysctls[out[i].Name]
	}
	return out
}

// Apply makes the namespace hold p, as the [Kernel] doc describes. Its
// errors are [*ApplyError] values.
func (k *Kernel) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrInvalidPlan)}
	}
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Err: err}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run(func() error { return k.sync.apply(ctx, p) })
}

// Cleanup deletes every virtual server of the namespace and the
// interfaces k owns, and nothing else.
func (k *Kernel) Cleanup(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run(func() error { return k.sync.cleanup(ctx) })
}

func (k *Kernel) run(fn func() error) error {
	ns, err := k.cfg.openNS()
	if err != nil {
		return err
	}
	defer ns.close()
	st, err := ns.open()
	if err != nil {
		return &ApplyError{Op: "netns", Err: err}
	}
	defer st.close()
	k.sync.st = st
	defer func() { k.sync.st = nil }()
	return fn()
}
