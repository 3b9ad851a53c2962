package proxier

import (
	"context"
	"errors"
	"fmt"

	"github.com/svcplan/svcplan/iptables"
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
	us     UserspaceProxy
	usOwn  bool
	usUsed bool
	// families are the iptables families the last apply wrote.
	families map[iptables.Family]bool
}

func newBackends(cfg *config) *backends {
	b := &backends{cfg: cfg, ipt: map[iptables.Family]iptables.Applier{}, families: map[iptables.Family]bool{}}
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
}

func (b *backends) iptables(f iptables.Family) (iptables.Applier, error) {
	if a := b.ipt[f]; a != nil {
		return a, nil
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
	a, err := b.cfg.newNFTables()
	if err != nil {
		return nil, err
	}
	b.nft = a
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

// applyError is an apply that failed in one family, for the failure
// metrics.
type applyError struct {
	family string
	err    error
}

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// apply applies plan with the appliers of its mode.
func (b *backends) apply(ctx context.Context, plan *translate.Plan) error {
	switch plan.Mode {
	case translate.ModeIPTables:
		return b.applyIPTables(ctx, plan.IPTables)
	case translate.ModeNFTables:
		a, err := b.nftables()
		if err != nil {
			return err
		}
		for _, np := range plan.NFTables {
			if err := a.Apply(ctx, np); err != nil {
				return &applyError{family: familyLabel(np.FamilyOrDefault() == nftables.IPv6), err: fmt.Errorf("applying %s table %s: %w", np.FamilyOrDefault(), np.TableName(), err)}
			}
		}
		return nil
	case translate.ModeUserspace:
		// Listeners first, so that the portal rules lead to open ports.
		if err := b.userspace().Apply(ctx, plan.Userspace); err != nil {
			return fmt.Errorf("applying userspace listeners: %w", err)
		}
		return b.applyIPTables(ctx, plan.IPTables)
	}
	return fmt.Errorf("mode %q: %w", plan.Mode, translate.ErrUnsupportedMode)
}

// applyIPTables applies each family's plan, and cleans a family the
// previous apply wrote and this plan lacks.
func (b *backends) applyIPTables(ctx context.Context, plans []*iptables.Plan) error {
	now := map[iptables.Family]bool{}
	for _, ip := range plans {
		f := ip.FamilyOrDefault()
		a, err := b.iptables(f)
		if err != nil {
			return &applyError{family: familyLabel(f == iptables.IPv6), err: err}
		}
		if err := a.Apply(ctx, ip); err != nil {
			return &applyError{family: familyLabel(f == iptables.IPv6), err: fmt.Errorf("applying %s rules: %w", f, err)}
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
			return &applyError{family: familyLabel(f == iptables.IPv6), err: fmt.Errorf("removing %s rules no longer planned: %w", f, err)}
		}
	}
	b.families = now
	return nil
}

// counts sums what the appliers report through their Stats methods (the
// kernel appliers and the Fakes have them).
type counts struct {
	full, partial, repairs, fallbacks int
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
	return c
}

// cleanup removes the objects of every mode: the owned iptables chains of
// both families (which include the userspace portals), the nftables
// tables, and the userspace listeners. An applier whose tool is missing
// has nothing to remove and is skipped.
func (b *backends) cleanup(ctx context.Context) error {
	var errs []error
	for _, f := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		a, err := b.iptables(f)
		if errors.Is(err, iptables.ErrToolMissing) {
			b.cfg.logger.Info("cleanup: no iptables tool, nothing to remove", "family", f, "err", err)
			continue
		}
		if err == nil {
			err = a.Cleanup(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing %s iptables rules: %w", f, err))
		}
	}
	clear(b.families)
	a, err := b.nftables()
	if err == nil {
		err = a.Cleanup(ctx)
	}
	if err != nil {
		errs = append(errs, &applyError{family: "", err: fmt.Errorf("removing nftables tables: %w", err)})
	}
	if b.usUsed {
		if err := b.us.Apply(ctx, &userspace.Plan{}); err != nil {
			errs = append(errs, fmt.Errorf("closing userspace listeners: %w", err))
		}
	}
	return errors.Join(errs...)
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
