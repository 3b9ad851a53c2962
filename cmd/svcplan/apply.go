package main

import (
	"fmt"
	"os"

	"github.com/svcplan/svcplan/iptables"
)

// applyFlags are the flags apply and cleanup share.
type applyFlags struct {
	netns   string
	backend string
}

func (a *applyFlags) register(in *inputFlags, fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&a.netns, "netns", "", "`path` of the network namespace to program (e.g. /var/run/netns/NAME); default: this process's")
	fs.StringVar(&a.backend, "iptables-backend", "", "iptables `backend`: nft or legacy; default: what the iptables command uses")
}

func (a *applyFlags) options() ([]iptables.Option, error) {
	var opts []iptables.Option
	if a.netns != "" {
		if _, err := os.Stat(a.netns); err != nil {
			return nil, fmt.Errorf("--netns: %w", err)
		}
		opts = append(opts, iptables.WithNetNS(a.netns))
	}
	switch iptables.Backend(a.backend) {
	case iptables.BackendAuto, iptables.BackendNFT, iptables.BackendLegacy:
		opts = append(opts, iptables.WithBackend(iptables.Backend(a.backend)))
	default:
		return nil, fmt.Errorf("--iptables-backend %q: want nft or legacy", a.backend)
	}
	return opts, nil
}

func (e *env) apply(args []string) error {
	var in inputFlags
	var af applyFlags
	fs := e.newFlagSet("apply", "apply --mode iptables [-f FILE] [--node NAME] [--netns PATH]")
	in.register(fs, true)
	af.register(&in, fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(in.files) > 1 {
		return fmt.Errorf("apply takes one -f, got %d", len(in.files))
	}
	st, err := e.load(&in, first(in.files))
	if err != nil {
		return err
	}
	p, err := compile(st, in.mode)
	if err != nil {
		return err
	}
	opts, err := af.options()
	if err != nil {
		return err
	}
	for _, ip := range p.IPTables {
		k, err := newApplier(ip.FamilyOrDefault(), opts...)
		if err != nil {
			return err
		}
		if err := k.Apply(e.ctx, ip); err != nil {
			return fmt.Errorf("applying %s rules: %w", ip.FamilyOrDefault(), err)
		}
		rules := 0
		for _, ts := range ip.Stats() {
			rules += ts.Rules
		}
		fmt.Fprintf(e.stdout, "applied %s: %d rules\n", ip.FamilyOrDefault(), rules)
	}
	return nil
}

func (e *env) cleanup(args []string) error {
	var in inputFlags
	var af applyFlags
	fs := e.newFlagSet("cleanup", "cleanup --mode iptables [--netns PATH]")
	fs.StringVar(&in.mode, "mode", "iptables", "proxy `mode` whose objects to remove")
	af.register(&in, fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if in.mode != "iptables" {
		return fmt.Errorf("--mode %s: cleanup of this mode is not implemented yet (only iptables is)", in.mode)
	}
	opts, err := af.options()
	if err != nil {
		return err
	}
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		k, err := newApplier(fam, opts...)
		if err != nil {
			return err
		}
		if err := k.Cleanup(e.ctx); err != nil {
			return fmt.Errorf("cleaning up %s rules: %w", fam, err)
		}
		fmt.Fprintf(e.stdout, "removed svcplan's %s rules\n", fam)
	}
	return nil
}
