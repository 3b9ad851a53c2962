package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/translate"
)

// applyFlags are the flags apply and cleanup share.
type applyFlags struct {
	netns   string
	backend string
}

func (a *applyFlags) register(fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&a.netns, "netns", "", "`path` of the network namespace to program (e.g. /var/run/netns/NAME); default: this process's")
	fs.StringVar(&a.backend, "iptables-backend", "", "iptables `backend`: nft or legacy; default: what the iptables command uses")
}

// options returns the proxier's options for the flags.
func (a *applyFlags) options(e *env) ([]proxier.Option, error) {
	opts := []proxier.Option{proxier.WithLogger(slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))}
	if a.netns != "" {
		if _, err := os.Stat(a.netns); err != nil {
			return nil, fmt.Errorf("--netns: %w", err)
		}
		opts = append(opts, proxier.WithNetNS(a.netns))
	}
	switch iptables.Backend(a.backend) {
	case iptables.BackendAuto, iptables.BackendNFT, iptables.BackendLegacy:
		opts = append(opts, proxier.WithIPTablesOptions(iptables.WithBackend(iptables.Backend(a.backend))))
	default:
		return nil, fmt.Errorf("--iptables-backend %q: want nft or legacy", a.backend)
	}
	return opts, nil
}

// proxierFor checks the mode and makes a proxier for it.
func proxierFor(mode string, opts []proxier.Option) (*proxier.Proxier, error) {
	switch translate.Mode(mode) {
	case translate.ModeIPTables, translate.ModeIPVS, translate.ModeNFTables, translate.ModeUserspace:
	default:
		return nil, fmt.Errorf("--mode %q: unknown; want iptables, ipvs, nftables or userspace", mode)
	}
	if err := canApply(); err != nil {
		return nil, err
	}
	p, err := proxier.New(translate.Mode(mode), opts...)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// apply makes the kernel match the plan through the proxier. In
// userspace mode the proxy runs in the foreground until SIGINT or
// SIGTERM, and its portal rules are removed when it stops, since they
// would lead nowhere without it.
func (e *env) apply(args []string) error {
	var in inputFlags
	var af applyFlags
	fs := e.newFlagSet("apply", "apply --mode iptables|ipvs|nftables|userspace [-f FILE] [--node NAME] [--netns PATH]")
	in.register(fs, true)
	af.register(fs)
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
	opts, err := af.options(e)
	if err != nil {
		return err
	}
	p, err := proxierFor(in.mode, opts)
	if err != nil {
		return err
	}
	if err := p.Sync(e.ctx, st); err != nil {
		return explainApply(err)
	}
	e.printApplied(p.Plan())
	if p.Mode() != translate.ModeUserspace {
		return nil
	}
	return e.runUserspace(p)
}

// runUserspace keeps the userspace proxy running until a signal, then
// removes its rules and closes it.
func (e *env) runUserspace(p *proxier.Proxier) error {
	ctx, stop := signal.NotifyContext(e.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(e.stdout, "userspace proxy running; stop it with Ctrl-C (SIGINT) or SIGTERM")
	<-ctx.Done()
	done, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := errors.Join(p.Cleanup(done), p.Close(done))
	if err == nil {
		fmt.Fprintln(e.stdout, "userspace proxy stopped; its rules are removed")
	}
	return err
}

func (e *env) printApplied(plan *translate.Plan) {
	if plan.IPSets != nil {
		members := 0
		for i := range plan.IPSets.Sets {
			members += len(plan.IPSets.Sets[i].Entries)
		}
		fmt.Fprintf(e.stdout, "applied ipsets: %d sets, %d members\n", len(plan.IPSets.Sets), members)
	}
	if plan.IPVS != nil {
		reals := 0
		for i := range plan.IPVS.VirtualServers {
			reals += len(plan.IPVS.VirtualServers[i].RealServers)
		}
		fmt.Fprintf(e.stdout, "applied ipvs: %d virtual servers, %d real servers, %d addresses on %s\n",
			len(plan.IPVS.VirtualServers), reals, len(plan.IPVS.Addresses), plan.IPVS.InterfaceOrDefault())
	}
	if plan.Userspace != nil {
		fmt.Fprintf(e.stdout, "applied userspace: %d listeners\n", len(plan.Userspace.Listeners))
	}
	for _, ip := range plan.IPTables {
		rules := 0
		for _, ts := range ip.Stats() {
			rules += ts.Rules
		}
		fmt.Fprintf(e.stdout, "applied %s: %d rules\n", ip.FamilyOrDefault(), rules)
	}
	for _, np := range plan.NFTables {
		rules, elems := 0, 0
		for i := range np.Chains {
			rules += np.Chains[i].RuleCount()
		}
		for i := range np.Sets {
			elems += len(np.Sets[i].Elements)
		}
		fmt.Fprintf(e.stdout, "applied %s table %s: %d chains, %d rules, %d sets, %d elements\n",
			np.FamilyOrDefault(), np.TableName(), len(np.Chains), rules, len(np.Sets), elems)
	}
}

// explainApply adds a hint to an error a user can fix.
func explainApply(err error) error {
	switch {
	case errors.Is(err, iptables.ErrToolMissing):
		return fmt.Errorf("%w; install the iptables package (apt-get install iptables)", err)
	case errors.Is(err, ipvs.ErrNoIPVS):
		return fmt.Errorf("%w; load it (modprobe ip_vs) or use another --mode", err)
	}
	return err
}

// cleanup removes what every mode creates, as kube-proxy --cleanup does;
// --mode only names the proxier that does it.
func (e *env) cleanup(args []string) error {
	var in inputFlags
	var af applyFlags
	fs := e.newFlagSet("cleanup", "cleanup [--mode M] [--netns PATH]")
	fs.StringVar(&in.mode, "mode", "iptables", "proxy `mode` of the proxier that cleans up; every mode's objects are removed whatever it is")
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := af.options(e)
	if err != nil {
		return err
	}
	p, err := proxierFor(in.mode, opts)
	if err != nil {
		return err
	}
	if err := p.Cleanup(e.ctx); err != nil {
		return explainApply(err)
	}
	fmt.Fprintln(e.stdout, "removed svcplan's iptables chains (ipv4, ipv6; nft and legacy), nftables tables, IPVS virtual servers, kube-ipvs0 and ipsets")
	return nil
}
