package proxier

import (
	"context"
	"errors"
	"fmt"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/translate"
	"github.com/svcplan/svcplan/userspace"
)

// backends holds the appliers of every mode: those given by options,
// kept for the proxier's life, and those the proxier made, renewed for a
// full sync. It is used under Proxier.syncMu.
type backends struct {
	cfg    *config
	ipt    map[iptables.Family]iptables.Applier
	nft    nftables.Applier
	sets   ipset.Applier
	vs     ipvs.Applier
	us     UserspaceProxy
	usOwn  bool
	usUsed bool
	// families are the iptables families the last apply wrote.
	families map[iptables.Family]bool
	// nftFamilies are the nftables families whose table the last apply
	// wrote; they outlive renew, as the tables do.
	nftFamilies map[nftables.Family]bool
}

func newBackends(cfg *config) *backends {
	b := &backends{cfg: cfg, ipt: map[iptables.Family]iptables.Applier{},
		families: map[iptables.Family]bool{}, nftFamilies: map[nftables.Family]bool{}}
	b.renew()
	if cfg.us != nil {
		b.us = cfg.us
	}
	return b
}

// renew forgets the appliers the proxier made, so that the next use
// makes fresh ones, which rewrite every owned object.
func (b *backends) renew() {
	clear(b.ipt)
	for f, a := range b.cfg.ipt {
		b.ipt[f] = a
	}
	b.nft = b.cfg.nft
	b.sets = b.cfg.sets
	b.vs = b.cfg.vs
}

// errNotGiven is returned for a backend the proxier would have to make
// itself while other appliers were given by options. A proxier given any
// applier (a test with Fakes, usually) never makes a kernel applier: a
// forgotten option must not reach the caller's own namespace.
var errNotGiven = errors.New("no applier given for this backend, and the proxier makes none when others are given by options")

// given reports whether any applier was given by an option.
func (c *config) given() bool {
	return len(c.ipt) > 0 || c.nft != nil || c.sets != nil || c.vs != nil
}

func (b *backends) iptables(f iptables.Family) (iptables.Applier, error) {
	if a := b.ipt[f]; a != nil {
		return a, nil
	}
	if b.cfg.given() {
		return nil, fmt.Errorf("iptables %s: %w", f, errNotGiven)
	}
	a, err := b.cfg.newIPTables(f)
	if err != nil {
		return nil, err
	}
	b.ipt[f] = a
	return a, nil
}

func (b *backends) nftables() (nftables.Applier, error) {
	if b.nft != nil {
		return b.nft, nil
	}
	if b.cfg.given() {
		return nil, fmt.Errorf("nftables: %w", errNotGiven)
	}
	a, err := b.cfg.newNFTables()
	if err != nil {
		return nil, err
	}
	b.nft = a
	return a, nil
}

func (b *backends) ipset() (ipset.Applier, error) {
	if b.sets != nil {
		return b.sets, nil
	}
	if b.cfg.given() {
		return nil, fmt.Errorf("ipset: %w", errNotGiven)
	}
	a, err := b.cfg.newIPSet()
	if err != nil {
		return nil, err
	}
	b.sets = a
	return a, nil
}

func (b *backends) ipvs() (ipvs.Applier, error) {
	if b.vs != nil {
		return b.vs, nil
	}
	if b.cfg.given() {
		return nil, fmt.Errorf("ipvs: %w", errNotGiven)
	}
	a, err := b.cfg.newIPVS()
	if err != nil {
		return nil, err
	}
	b.vs = a
	return a, nil
}

func (b *backends) userspace() UserspaceProxy {
	if b.us == nil {
		opts := []userspace.Option{userspace.WithLogger(b.cfg.logger)}
		if b.cfg.netnsPath != "" {
			opts = append(opts, userspace.WithNetNS(b.cfg.netnsPath))
		}
		b.us = userspace.NewProxy(append(opts, b.cfg.userspaceOpts...)...)
		b.usOwn = true
	}
	b.usUsed = true
	return b.us
}

// The backends an applyError names.
const (
	backendIPTables = "iptables"
	backendNFTables = "nftables"
	backendIPSet    = "ipset"
	backendIPVS     = "ipvs"
)

// applyError is an apply that failed in one backend and family, for the
// failure metrics.
type applyError struct {
	backend string
	family  string
	err     error
}

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// apply applies plan with the appliers of its mode.
func (b *backends) apply(ctx context.Context, plan *translate.Plan) error {
	switch plan.Mode {
	case translate.ModeIPTables:
		return b.applyIPTables(ctx, plan.IPTables)
	case translate.ModeNFTables:
		return b.applyNFTables(ctx, plan.NFTables)
	case translate.ModeIPVS:
		return b.applyIPVS(ctx, plan)
	case translate.ModeUserspace:
		// Listeners first, so that the portal rules lead to open ports.
		if err := b.userspace().Apply(ctx, plan.Userspace); err != nil {
			return fmt.Errorf("applying userspace listeners: %w", err)
		}
		return b.applyIPTables(ctx, plan.IPTables)
	}
	return fmt.Errorf("mode %q: %w", plan.Mode, translate.ErrUnsupportedMode)
}

// applyNFTables applies each family's table. When a family the last
// apply wrote is gone from plans, its table is deleted: the applier
// deletes the owned tables only all together, so both go and the planned
// ones are written again, from scratch.
func (b *backends) applyNFTables(ctx context.Context, plans []*nftables.Plan) error {
	a, err := b.nftables()
	if err != nil {
		return &applyError{backend: backendNFTables, family: familyLabel(false), err: err}
	}
	now := map[nftables.Family]bool{}
	for _, np := range plans {
		now[np.FamilyOrDefault()] = true
	}
	for f := range b.nftFamilies {
		if now[f] {
			continue
		}
		b.cfg.logger.Info("nftables family no longer planned; deleting the owned tables and writing the planned ones again", "family", f)
		if err := a.Cleanup(ctx); err != nil {
			return &applyError{backend: backendNFTables, family: familyLabel(f == nftables.IPv6), err: fmt.Errorf("removing the %s table no longer planned: %w", f, err)}
		}
		break
	}
	b.nftFamilies = map[nftables.Family]bool{}
	for _, np := range plans {
		f := np.FamilyOrDefault()
		if err := a.Apply(ctx, np); err != nil {
			return &applyError{backend: backendNFTables, family: familyLabel(f == nftables.IPv6), err: fmt.Errorf("applying %s table %s: %w", f, np.TableName(), err)}
		}
		b.nftFamilies[f] = true
	}
	return nil
}

// applyIPVS applies an IPVS plan: the ipsets first, then the virtual
// servers with the dummy interface's addresses and the sysctls, then the
// fixed iptables rules, which match the sets by name and so must find
// them. Each call reads the IPVS table back, which is how real servers
// draining after their endpoint left get deleted once idle.
func (b *backends) applyIPVS(ctx context.Context, plan *translate.Plan) error {
	sets, vsPlan := plan.IPSets, plan.IPVS
	if sets == nil {
		sets = &ipset.Plan{}
	}
	if vsPlan == nil {
		vsPlan = &ipvs.Plan{}
	}
	sa, err := b.ipset()
	if err != nil {
		return &applyError{backend: backendIPSet, err: err}
	}
	if err := sa.Apply(ctx, sets); err != nil {
		return &applyError{backend: backendIPSet, err: fmt.Errorf("applying ipsets: %w", err)}
	}
	va, err := b.ipvs()
	if err != nil {
		return &applyError{backend: backendIPVS, err: err}
	}
	if err := va.Apply(ctx, vsPlan); err != nil {
		return &applyError{backend: backendIPVS, err: fmt.Errorf("applying ipvs virtual servers: %w", err)}
	}
	return b.applyIPTables(ctx, plan.IPTables)
}

// applyIPTables applies each family's plan, and cleans a family the
// previous apply wrote and this plan lacks.
func (b *backends) applyIPTables(ctx context.Context, plans []*iptables.Plan) error {
	now := map[iptables.Family]bool{}
	for _, ip := range plans {
		f := ip.FamilyOrDefault()
		a, err := b.iptables(f)
		if err != nil {
			return &applyError{backend: backendIPTables, family: familyLabel(f == iptables.IPv6), err: err}
		}
		if err := a.Apply(ctx, ip); err != nil {
			return &applyError{backend: backendIPTables, family: familyLabel(f == iptables.IPv6), err: fmt.Errorf("applying %s rules: %w", f, err)}
		}
		now[f] = true
	}
	for f := range b.families {
		if now[f] {
			continue
		}
		a, err := b.iptables(f)
		if err == nil {
			err = a.Cleanup(ctx)
		}
		if err != nil {
			return &applyError{backend: backendIPTables, family: familyLabel(f == iptables.IPv6), err: fmt.Errorf("removing %s rules no longer planned: %w", f, err)}
		}
	}
	b.families = now
	return nil
}

// counts sums what the appliers report through their Stats methods (the
// kernel appliers and the Fakes have them).
type counts struct {
	full, partial, repairs, fallbacks int
	// draining is the IPVS applier's real servers draining.
	draining int
}

func (b *backends) counts() counts {
	var c counts
	for _, a := range b.ipt {
		if s, ok := a.(interface{ Stats() iptables.Stats }); ok {
			st := s.Stats()
			c.full += st.FullRestores
			c.partial += st.PartialRestores
			c.repairs += st.Repairs
			c.fallbacks += st.Fallbacks
		}
	}
	if s, ok := b.nft.(interface{ Stats() nftables.Stats }); ok {
		st := s.Stats()
		c.full += st.FullBatches
		c.partial += st.PartialBatches
		c.repairs += st.Repairs
	}
	if s, ok := b.sets.(interface{ Stats() ipset.Stats }); ok {
		c.repairs += s.Stats().Repairs
	}
	if s, ok := b.vs.(interface{ Stats() ipvs.Stats }); ok {
		st := s.Stats()
		c.repairs += st.Repairs
		c.draining = st.Draining
	}
	return c
}

// cleanup removes the objects of every mode: the owned iptables chains of
// both families and both backends (which include the userspace portals
// and IPVS mode's rules), the nftables tables, the userspace listeners,
// the IPVS virtual servers with kube-ipvs0, and last the owned ipsets,
// which the iptables rules no longer match. An applier whose tool is
// missing has nothing to remove and is skipped, as is IPVS when the
// kernel has none.
func (b *backends) cleanup(ctx context.Context) error {
	var errs []error
	for _, f := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		errs = append(errs, b.cleanupIPTables(ctx, f))
	}
	clear(b.families)
	a, err := b.nftables()
	if err == nil {
		err = a.Cleanup(ctx)
	}
	if err != nil && !errors.Is(err, errNotGiven) {
		errs = append(errs, &applyError{backend: backendNFTables, err: fmt.Errorf("removing nftables tables: %w", err)})
	}
	clear(b.nftFamilies)
	if b.usUsed {
		if err := b.us.Apply(ctx, &userspace.Plan{}); err != nil {
			errs = append(errs, fmt.Errorf("closing userspace listeners: %w", err))
		}
	}
	va, err := b.ipvs()
	if err == nil {
		err = va.Cleanup(ctx)
	}
	switch {
	case errors.Is(err, errNotGiven):
	case errors.Is(err, ipvs.ErrNoIPVS):
		b.cfg.logger.Debug("cleanup: the kernel has no IPVS, nothing to remove", "err", err)
	case err != nil:
		errs = append(errs, fmt.Errorf("removing ipvs virtual servers and interface: %w", err))
	}
	sa, err := b.ipset()
	if err == nil {
		err = sa.Cleanup(ctx)
	}
	if err != nil && !errors.Is(err, errNotGiven) {
		errs = append(errs, fmt.Errorf("removing ipsets: %w", err))
	}
	return errors.Join(errs...)
}

// cleanupIPTables removes the owned chains of family f with its applier
// and, unless that applier was given by an option, with the other
// iptables backend too when its tools are installed: rules written
// through iptables-legacy are invisible to iptables-nft and the other way
// round, and a node may have used either.
func (b *backends) cleanupIPTables(ctx context.Context, f iptables.Family) error {
	a, err := b.iptables(f)
	if errors.Is(err, errNotGiven) {
		return nil
	}
	if errors.Is(err, iptables.ErrToolMissing) {
		b.cfg.logger.Info("cleanup: no iptables tool, nothing to remove", "family", f, "err", err)
		return nil
	}
	if err == nil {
		err = a.Cleanup(ctx)
	}
	if err != nil {
		return fmt.Errorf("removing %s iptables rules: %w", f, err)
	}
	k, ok := a.(interface{ Backend() iptables.Backend })
	if b.cfg.ipt[f] != nil || !ok {
		return nil
	}
	for _, other := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		if other == k.Backend() {
			continue
		}
		oa, err := b.cfg.newIPTables(f, iptables.WithBackend(other))
		if errors.Is(err, iptables.ErrToolMissing) {
			b.cfg.logger.Debug("cleanup: no tools of the other iptables backend", "family", f, "backend", other, "err", err)
			continue
		}
		if err == nil {
			err = oa.Cleanup(ctx)
		}
		if err != nil {
			return fmt.Errorf("removing %s iptables rules of backend %s: %w", f, other, err)
		}
	}
	return nil
}

// close closes the userspace proxy, if one was used.
func (b *backends) close(ctx context.Context) error {
	if b.us == nil || (!b.usUsed && !b.usOwn) {
		return nil
	}
	return b.us.Close(ctx)
}

// familyLabel is kube-proxy's ip_family label value.
func familyLabel(ipv6 bool) string {
	if ipv6 {
		return "IPv6"
	}
	return "IPv4"
}
