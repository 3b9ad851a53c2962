package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	"golang.org/x/sys/unix"
)

// Kernel applies plans of one family to a Linux kernel's iptables, in the
// caller's network namespace or another one, through iptables-restore. It
// remembers the last plan it applied: the next Apply writes only the
// chains that changed, and no restore at all when nothing did and nothing
// else touched the tables. Make one with [New]; it is safe for concurrent
// use.
//
// Each table is written by one "iptables-restore --noflush" run, so that
// it changes atomically and other programs' chains and rules stay. The
// jumps from built-in chains are part of the same input: rules into owned
// chains that are not the plan's jumps, in order, at the top of their
// chain, are deleted by their text and the plan's inserted first. (They
// are not managed with single iptables commands, which iptables-legacy
// makes cost a read of the whole table each: almost a second at 300 000
// rules.) A full rewrite validates the plan while iptables-restore parses
// the input and holds back the COMMIT until validation passed.
//
// iptables-nft 1.8 takes time quadratic in the number of chains named in
// one restore with --noflush (see [RestoreOptions.ListFirst]); Kernel
// starts large restores with "-S" to avoid that, after creating any
// built-in chain the input uses that nf_tables lacks. A partial restore
// into a large iptables-nft table still costs the kernel a walk of every
// rule reachable from the built-in chains (nf_tables validates the whole
// table on a commit that adds a rule): about 0.4 s at 300 000 rules.
//
// To notice changes made behind its back cheaply, Kernel keeps a
// fingerprint of each table it wrote: the nf_tables generation (which
// every nf_tables change bumps) for iptables-nft, the table's entry count
// and size for iptables-legacy. While the fingerprint holds, Apply trusts
// its memory and runs no tool to check. When it moved, Apply reads the
// table back (see [WithVerifyLimit]) and repairs owned chains that are
// missing or hold another number of rules, stale owned chains, and jumps;
// when the canary chain ([CanaryChain]) is gone, it rewrites the whole
// table. A change between a restore and the reading of the fingerprint
// right after it goes unnoticed.
type Kernel struct {
	family   Family
	cfg      config
	backend  Backend
	restore  string
	save     string
	iptables string
	args     []string
	ipt      *goipt.IPTables
	canary   string

	mu      sync.Mutex
	applied *Plan
	tables  map[Table]*kernelTable
	// saves caches, within one Apply or Cleanup, what one iptables-save
	// of every table showed; a table is dropped from it once written.
	saves map[Table]*savedTable
	genID uint32
	genOK bool
	stats Stats
}

// kernelTable is what Kernel knows of one table it wrote.
type kernelTable struct {
	// trusted tells that the table holds applied's chains and jumps as of
	// the last fingerprint.
	trusted bool
	// info is the legacy fingerprint.
	info legacyInfo
	// rules estimates the rules the table holds.
	rules int
}

// New returns a Kernel for family (empty means IPv4) with the given
// options. It finds the iptables tools for the backend, detected from
// "iptables --version" unless [WithBackend] or [WithBinaries] says, and
// checks which flags the restore tool takes. It reports [ErrToolMissing]
// when a tool is not installed.
func New(family Family, opts ...Option) (*Kernel, error) {
	if family == "" {
		family = IPv4
	}
	if family != IPv4 && family != IPv6 {
		return nil, &Error{Op: "new", Err: fmt.Errorf("family %q: %w", family, ErrSyntax)}
	}
	k := &Kernel{family: family, cfg: newConfig(opts), tables: map[Table]*kernelTable{}}
	k.canary = CanaryChain(k.cfg.ownerPrefix)
	if err := checkChainName(k.canary); err != nil {
		return nil, &Error{Op: "new", Err: fmt.Errorf("owner prefix %q: %w", k.cfg.ownerPrefix, err)}
	}
	if err := k.findTools(); err != nil {
		return nil, &Error{Op: "new", Err: err}
	}
	proto := goipt.ProtocolIPv4
	if family == IPv6 {
		proto = goipt.ProtocolIPv6
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(k.iptables), goipt.Timeout(5))
	if err != nil {
		return nil, &Error{Op: "new", Err: toolError(k.iptables, err)}
	}
	k.ipt = ipt
	if k.args, err = k.restoreFlags(); err != nil {
		return nil, &Error{Op: "new", Err: err}
	}
	return k, nil
}

// Backend returns the backend k writes through.
func (k *Kernel) Backend() Backend { return k.backend }

// Stats returns what k did so far.
func (k *Kernel) Stats() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}

// findTools sets the backend and the tool paths.
func (k *Kernel) findTools() error {
	base := "iptables"
	if k.family == IPv6 {
		base = "ip6tables"
	}
	if k.cfg.restorePath != "" {
		k.restore, k.save = k.cfg.restorePath, k.cfg.savePath
		k.iptables = strings.TrimSuffix(k.restore, "-restore")
		k.backend = k.cfg.backend
		if k.backend == BackendAuto {
			b, err := versionBackend(k.restore)
			if err != nil {
				return err
			}
			k.backend = b
		}
		return nil
	}
	k.backend = k.cfg.backend
	if k.backend == BackendAuto {
		path, err := exec.LookPath(base)
		if err != nil {
			return toolError(base, err)
		}
		if k.backend, err = versionBackend(path); err != nil {
			return err
		}
	}
	var err error
	if k.iptables, err = findTool(base, string(k.backend), ""); err != nil {
		return err
	}
	if k.restore, err = findTool(base, string(k.backend), "-restore"); err != nil {
		return err
	}
	k.save, err = findTool(base, string(k.backend), "-save")
	return err
}

// findTool finds base-backend+suffix on PATH, or base+suffix when it uses
// that backend.
func findTool(base, backend, suffix string) (string, error) {
	if p, err := exec.LookPath(base + "-" + backend + suffix); err == nil {
		return p, nil
	}
	p, err := exec.LookPath(base + suffix)
	if err != nil {
		return "", toolError(base+"-"+backend+suffix, err)
	}
	b, err := versionBackend(p)
	if err != nil {
		return "", err
	}
	if string(b) != backend {
		return "", fmt.Errorf("%s uses backend %s, not %s: %w", p, b, backend, ErrToolMissing)
	}
	return p, nil
}

// versionBackend runs tool --version and tells its backend.
func versionBackend(tool string) (Backend, error) {
	out, err := exec.Command(tool, "--version").CombinedOutput()
	if err != nil {
		return "", toolError(tool, err)
	}
	switch s := string(out); {
	case strings.Contains(s, "(nf_tables)"):
		return BackendNFT, nil
	case strings.Contains(s, "(legacy)"), strings.Contains(s, " v1.6"), strings.Contains(s, " v1.4"):
		return BackendLegacy, nil
	default:
		return "", fmt.Errorf("%s --version: backend not recognised in %q", tool, strings.TrimSpace(s))
	}
}

// toolError wraps an error running tool with ErrToolMissing or ErrNotRoot
// where it is one of those.
func toolError(tool string, err error) error {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %w (install the iptables package): %w", tool, ErrToolMissing, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: %w: %w", tool, ErrNotRoot, err)
	}
	return fmt.Errorf("%s: %w", tool, err)
}

// restoreFlags returns the flags for iptables-restore, dropping the wait
// options this version refuses or calls deprecated.
func (k *Kernel) restoreFlags() ([]string, error) {
	base := []string{"--noflush", "--counters"}
	var lastErr error
	for _, wait := range [][]string{{"-w", "5", "-W", "100000"}, {"-w", "5"}, nil} {
		args := append(slices.Clip(base), wait...)
		var stderr bytes.Buffer
		err := k.inNetNS(func() error {
			cmd := exec.Command(k.restore, append(args, "--test")...)
			cmd.Stdin, cmd.Stderr = strings.NewReader(""), &stderr
			return cmd.Run()
		})
		switch {
		case err == nil && !strings.Contains(stderr.String(), "deprecated"):
			return args, nil
		case err != nil:
			lastErr = fmt.Errorf("%s --test: %w: %s", k.restore, toolError(k.restore, err), strings.TrimSpace(stderr.String()))
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return base, nil
}

// inNetNS runs fn with its goroutine's OS thread in k's network
// namespace, so that processes it starts and sockets it opens are there.
// It runs fn on a new goroutine locked to its thread, and moves the thread
// back to its own namespace afterwards; should that fail, the thread stays
// locked and ends with the goroutine. (Merely ending a locked goroutine
// is not enough: the runtime keeps the process's main thread alive, in
// the other namespace, which /proc/self then shows.)
func (k *Kernel) inNetNS(fn func() error) error {
	if k.cfg.netnsPath == "" && k.cfg.netnsFd < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restore, err := k.enterNetNS()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if rerr := restore(); rerr != nil {
			errc <- errors.Join(err, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// enterNetNS moves the calling thread into k's namespace and returns the
// function that moves it back.
func (k *Kernel) enterNetNS() (restore func() error, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening own network namespace: %w", err)
	}
	fd := k.cfg.netnsFd
	if k.cfg.netnsPath != "" {
		if fd, err = unix.Open(k.cfg.netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			unix.Close(orig)
			return nil, fmt.Errorf("opening network namespace %s: %w", k.cfg.netnsPath, err)
		}
		defer unix.Close(fd)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		return nil, fmt.Errorf("entering network namespace: %w", privilege(err))
	}
	return func() error {
		defer unix.Close(orig)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("returning from network namespace: %w", err)
		}
		return nil
	}, nil
}

// run runs tool with args and stdin in k's namespace and returns its
// standard output; discard drops the output instead.
func (k *Kernel) run(ctx context.Context, stdin []byte, discard bool, tool string, args ...string) ([]byte, string, error) {
	var stdout, stderr bytes.Buffer
	err := k.inNetNS(func() error {
		cmd := exec.CommandContext(ctx, tool, args...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		if !discard {
			cmd.Stdout = &stdout
		}
		cmd.Stderr = &stderr
		return cmd.Run()
	})
	return stdout.Bytes(), stderr.String(), err
}

// Apply makes the kernel's owned chains and jumps of p's family p's,
// table by table, as the [Kernel] doc describes. It validates p first
// (see [Plan.Validate]) and refuses chains without the owner prefix. An
// error from a restore is an [*Error] wrapping a [*RestoreError]; the
// tables that failed keep their previous rules and get a full rewrite at
// the next Apply.
func (k *Kernel) Apply(ctx context.Context, p *Plan) error {
	if err := k.check(p); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stats.Applies++
	tables := k.tablesOf(p)
	moved, err := k.fingerprintsMoved(tables)
	if err != nil {
		return &Error{Op: "apply", Err: err}
	}
	k.saves = nil
	defer func() { k.saves = nil }()
	if k.tablesToRead(tables, moved) >= 2 {
		if err := k.saveAll(ctx); err != nil {
			return err
		}
	}
	var errs []error
	for _, t := range tables {
		if err := k.applyTable(ctx, p, t, moved[t]); err != nil {
			// The kernel holds what it held before, which k.applied
			// will not describe: rewrite the table in full next time.
			k.tables[t].trusted = false
			errs = append(errs, err)
		}
	}
	k.applied = copyPlan(p)
	for _, t := range tables {
		if planUses(p, t) {
			continue
		}
		if st := k.tables[t]; st != nil && st.trusted {
			delete(k.tables, t)
		}
	}
	if err := k.recordFingerprints(); err != nil {
		errs = append(errs, &Error{Op: "apply", Err: err})
	}
	return errors.Join(errs...)
}

// check validates p for k.
func (k *Kernel) check(p *Plan) error {
	if p == nil {
		return &Error{Op: "apply", Err: fmt.Errorf("nil plan: %w", ErrSyntax)}
	}
	if p.FamilyOrDefault() != k.family {
		return &Error{Op: "apply", Err: fmt.Errorf("%s plan on %s applier: %w", p.FamilyOrDefault(), k.family, ErrFamily)}
	}
	for _, tc := range p.Tables {
		for i := range tc.Chains {
			if name := tc.Chains[i].Name; !strings.HasPrefix(name, k.cfg.ownerPrefix) || name == k.canary {
				return &Error{Op: "apply", Table: tc.Table, Chain: name,
					Err: fmt.Errorf("chain not named with owner prefix %q or reserved: %w", k.cfg.ownerPrefix, ErrChainName)}
			}
		}
	}
	return nil
}

// applyOrder is the order tables are written in: the small ones first,
// since reading one back with iptables-nft-save costs time in proportion
// to the rules of every table.
func applyOrder() [4]Table { return [...]Table{TableFilter, TableRaw, TableMangle, TableNAT} }

// tablesOf returns the tables p uses and those k wrote before, in
// applyOrder.
func (k *Kernel) tablesOf(p *Plan) []Table {
	var out []Table
	for _, t := range applyOrder() {
		if _, ok := k.tables[t]; ok || planUses(p, t) || k.applied != nil && planUses(k.applied, t) {
			out = append(out, t)
		}
	}
	for _, tc := range p.Tables {
		if !slices.Contains(out, tc.Table) {
			out = append(out, tc.Table)
		}
	}
	return out
}

// applyTable brings table t to p: with a partial restore when k trusts
// what it knows of t, after repairing what a verification found when the
// fingerprint moved, and with a full one otherwise or when the partial one
// fails.
func (k *Kernel) applyTable(ctx context.Context, p *Plan, t Table, moved bool) error {
	st := k.tables[t]
	if st == nil {
		st = &kernelTable{}
		k.tables[t] = st
	}
	opts := RestoreOptions{OwnerPrefix: k.cfg.ownerPrefix}
	if !planUses(p, t) {
		opts.Delete = []string{k.canary}
	}
	full := !st.trusted || k.applied == nil
	var saved *savedTable
	if !full && moved {
		v, err := k.verify(ctx, p, t)
		if err != nil {
			return err
		}
		full, saved = v.lost, v.saved
		opts.Rewrite, opts.Builtin = v.rewrite, v.builtin
		opts.Delete = append(opts.Delete, v.stale...)
	}
	if !full {
		failed, err := k.partialSync(ctx, p, t, opts)
		if !failed {
			return err
		}
		k.stats.Fallbacks++
		k.cfg.logger.Warn("iptables partial restore failed, restoring in full", "table", t, "err", err)
		saved = nil
	}
	return k.fullRestore(ctx, p, t, saved)
}

// partialSync writes the chains and jumps of t that differ between
// k.applied and p, and what opts asks to repair. failed tells that the
// restore ran and failed, so that a full one may succeed; an error
// without it (an invalid plan) wrote nothing.
func (k *Kernel) partialSync(ctx context.Context, p *Plan, t Table, opts RestoreOptions) (failed bool, err error) {
	d := diffChains(tableChains(k.applied, t), tableChains(p, t))
	if len(d.write)+len(d.removed)+len(opts.Rewrite)+len(opts.Delete) == 0 && opts.Builtin == nil &&
		jumpsEqual(k.applied, p, t) {
		return false, nil
	}
	write := d.write
	if len(opts.Rewrite) > 0 {
		write = addRewrites(write, tableChains(p, t), opts.Rewrite)
	}
	if write == nil {
		write = []int{} // validate no chain, not all
	}
	if err := validateWrites(p, t, write); err != nil {
		return false, fmt.Errorf("iptables apply: %w", err)
	}
	input, err := partialRestore(k.applied, p, t, opts, d)
	if err != nil || input == nil {
		return false, err
	}
	// Without a reading of the built-in chains, the jumps are inserted at
	// position 1, which iptables-nft refuses after "-S" when the chain is
	// empty: rule "-S" out then.
	st := k.tables[t]
	rules := st.rules
	if opts.Builtin == nil && !jumpsEqual(k.applied, p, t) {
		rules = -1
	}
	if err := k.runRestore(ctx, t, input, false, rules, nil); err != nil {
		return true, err
	}
	st.rules += countRules(p, t) - countRules(k.applied, t)
	return false, nil
}

// fullRestore rewrites table t from p, reading it back first unless saved
// is a reading of it already.
func (k *Kernel) fullRestore(ctx context.Context, p *Plan, t Table, saved *savedTable) error {
	if saved == nil {
		var err error
		if saved, err = k.saveTable(ctx, t); err != nil {
			return err
		}
	}
	// Validating the whole table takes long enough at scale to run it
	// alongside building the input and iptables-restore's parsing of it;
	// the COMMIT that makes the kernel act waits for it.
	valid := make(chan error, 1)
	go func() { valid <- validateWrites(p, t, nil) }()
	gate := sync.OnceValue(func() error {
		if err := <-valid; err != nil {
			return fmt.Errorf("iptables apply: %w", err)
		}
		return nil
	})
	opts := RestoreOptions{OwnerPrefix: k.cfg.ownerPrefix, Builtin: saved.builtin}
	keep := ""
	if planUses(p, t) {
		opts.Canary, keep = k.canary, k.canary
	}
	opts.Delete = saved.staleChains(p, t, keep)
	start := time.Now()
	input, err := FullRestore(p, t, opts)
	if err != nil {
		return errors.Join(err, gate())
	}
	k.cfg.logger.Debug("iptables built restore input", "table", t, "duration", time.Since(start))
	if err := k.runRestore(ctx, t, input, true, saved.rules, gate); err != nil {
		return err
	}
	st := k.tables[t]
	st.trusted = true
	st.rules = saved.rules + countRules(p, t)
	for _, n := range saved.owned {
		st.rules -= n
	}
	return nil
}

// runRestore feeds input for table t to iptables-restore. tableRules
// estimates the rules the table holds, for deciding on
// [RestoreOptions.ListFirst]; -1 rules it out. When gate is not nil, the
// input's last line (COMMIT, before which iptables-restore changes nothing
// in the kernel) is held back until gate returns, and the run abandoned if
// it returns an error.
func (k *Kernel) runRestore(ctx context.Context, t Table, input []byte, full bool, tableRules int, gate func() error) error {
	if gate == nil {
		gate = func() error { return nil }
	}
	if k.backend == BackendNFT && tableRules >= 0 {
		if lines, chains := countDecls(input); listFirstPays(lines, chains, tableRules) {
			if err := k.ensureBaseChains(ctx, t, input, gate); err != nil {
				return err
			}
			input = withListFirst(input)
		}
	}
	if k.cfg.observer != nil {
		k.cfg.observer(t, input)
	}
	k.stats.Restores++
	k.stats.RestoreBytes += int64(len(input))
	if full {
		k.stats.FullRestores++
	} else {
		k.stats.PartialRestores++
	}
	delete(k.saves, t)
	start := time.Now()
	stderr, err := k.restoreProcess(ctx, input, gate)
	k.cfg.logger.Debug("iptables-restore", "table", t, "full", full, "bytes", len(input),
		"duration", time.Since(start), "err", err)
	if err == nil {
		return nil
	}
	if ge, ok := errors.AsType[gateError](err); ok {
		return ge.err
	}
	if ctx.Err() != nil {
		return &Error{Op: "apply", Table: t, Err: ctx.Err()}
	}
	if _, ok := errors.AsType[*exec.ExitError](err); !ok {
		return &Error{Op: "apply", Table: t, Err: toolError(k.restore, err)}
	}
	re := parseRestoreError(t, input, stderr, err)
	return &Error{Op: "apply", Table: t, Line: re.Line, Err: re}
}

// gateError is a gate's refusal, which abandoned a restore.
type gateError struct{ err error }

func (e gateError) Error() string { return e.err.Error() }

// restoreProcess runs iptables-restore in k's namespace with input on its
// standard input, holding the last line back until gate returns.
func (k *Kernel) restoreProcess(ctx context.Context, input []byte, gate func() error) (string, error) {
	var stderr bytes.Buffer
	body, last := splitLastLine(input)
	err := k.inNetNS(func() error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cmd := exec.CommandContext(ctx, k.restore, k.args...)
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		// A write fails only when the tool exited early, which Wait
		// reports.
		_, werr := stdin.Write(body)
		if gerr := gate(); gerr != nil {
			cancel()
			_ = cmd.Wait()
			return gateError{gerr}
		}
		if werr == nil {
			_, _ = stdin.Write(last)
		}
		_ = stdin.Close()
		return cmd.Wait()
	})
	return stderr.String(), err
}

// splitLastLine splits input before its last line.
func splitLastLine(input []byte) (body, last []byte) {
	i := bytes.LastIndexByte(bytes.TrimSuffix(input, []byte("\n")), '\n')
	return input[:i+1], input[i+1:]
}

// tablesToRead counts the tables Apply will read back with iptables-save:
// those to rewrite in full and those to verify by reading them.
func (k *Kernel) tablesToRead(tables []Table, moved map[Table]bool) int {
	n := 0
	for _, t := range tables {
		st := k.tables[t]
		if st == nil || !st.trusted || k.applied == nil || moved[t] && k.verifiesBySave(t) {
			n++
		}
	}
	return n
}

// saveAll reads every table back with one iptables-save into k.saves.
func (k *Kernel) saveAll(ctx context.Context) error {
	out, err := k.runSave(ctx)
	if err != nil {
		return err
	}
	k.saves = scanSave(string(out), k.cfg.ownerPrefix)
	for _, t := range applyOrder() {
		if k.saves[t] == nil {
			k.saves[t] = &savedTable{owned: map[string]int{}, builtin: map[string][]string{}}
		}
	}
	return nil
}

// saveTable reads table t back, from k.saves when it holds it, else
// with iptables-save -t.
func (k *Kernel) saveTable(ctx context.Context, t Table) (*savedTable, error) {
	if s := k.saves[t]; s != nil {
		return s, nil
	}
	out, err := k.runSave(ctx, "-t", string(t))
	if err != nil {
		return nil, err
	}
	if s := scanSave(string(out), k.cfg.ownerPrefix)[t]; s != nil {
		return s, nil
	}
	return &savedTable{owned: map[string]int{}, builtin: map[string][]string{}}, nil
}

// runSave runs iptables-save with args.
func (k *Kernel) runSave(ctx context.Context, args ...string) ([]byte, error) {
	start := time.Now()
	out, stderr, err := k.run(ctx, nil, false, k.save, args...)
	k.cfg.logger.Debug("iptables-save", "args", args, "bytes", len(out), "duration", time.Since(start))
	if err != nil {
		if _, ok := errors.AsType[*exec.ExitError](err); ok {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr))
			if permissionDenied(stderr) {
				err = fmt.Errorf("%w: %w", ErrNotRoot, err)
			}
		}
		return nil, &Error{Op: "save", Err: toolError(k.save, err)}
	}
	return out, nil
}

// verifyResult is what verify found of a table whose fingerprint moved.
type verifyResult struct {
	// lost tells that the canary is gone: the table needs a full rewrite.
	lost bool
	// saved is the table as read back, when it was.
	saved *savedTable
	// rewrite and stale are the owned chains to rewrite and to delete.
	rewrite, stale []string
	// builtin is what the built-in chains hold.
	builtin map[string][]string
}

// verify reads back table t, which k.applied describes and something else
// may have changed, and tells what to repair on the way to p.
func (k *Kernel) verify(ctx context.Context, p *Plan, t Table) (verifyResult, error) {
	k.stats.Verifications++
	v, err := k.readBack(ctx, p, t)
	if err != nil {
		return v, err
	}
	jumps, err := reconcileJumps(k.applied, nil, t, &RestoreOptions{OwnerPrefix: k.cfg.ownerPrefix, Builtin: v.builtin})
	if err != nil {
		return v, err
	}
	if v.lost || len(v.rewrite)+len(v.stale)+len(jumps) > 0 {
		k.stats.Repairs++
		k.cfg.logger.Info("iptables drift found", "table", t, "canaryGone", v.lost,
			"chainsToRewrite", len(v.rewrite), "staleChains", len(v.stale), "builtinChainsToFix", len(jumps))
	}
	return v, nil
}

// readBack reads table t back: with iptables-save when that is cheap
// enough, else only the canary and the jumps.
func (k *Kernel) readBack(ctx context.Context, p *Plan, t Table) (verifyResult, error) {
	if k.verifiesBySave(t) {
		s, err := k.saveTable(ctx, t)
		if err != nil {
			return verifyResult{}, err
		}
		v := verifyResult{saved: s, builtin: s.builtin}
		if _, ok := s.owned[k.canary]; !ok {
			v.lost = true
			return v, nil
		}
		var applied []Chain
		if tc := k.applied.Table(t); tc != nil {
			applied = tc.Chains
		}
		v.rewrite, v.stale = s.drift(applied, p, t, k.canary)
		return v, nil
	}
	return k.verifyCheap(p, t)
}

// verifiesBySave tells whether verifying table t reads it back with
// iptables-save: always for iptables-legacy, for iptables-nft up to the
// verify limit of owned rules in all tables, since iptables-nft-save of
// one table fetches every table's rules.
func (k *Kernel) verifiesBySave(t Table) bool {
	if k.backend == BackendLegacy || k.applied == nil {
		return true
	}
	owned := 0
	for _, tc := range k.applied.Tables {
		owned += countRules(k.applied, tc.Table)
	}
	return owned <= k.cfg.verifyLimit
}

// verifyCheap checks only the canary and the built-in chains holding
// jumps, with one iptables run each, in parallel.
func (k *Kernel) verifyCheap(p *Plan, t Table) (verifyResult, error) {
	var chains []string
	for _, plan := range []*Plan{k.applied, p} {
		for _, j := range plan.Jumps {
			if j.Table == t && !slices.Contains(chains, j.Chain) {
				chains = append(chains, j.Chain)
			}
		}
	}
	v := verifyResult{builtin: map[string][]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	wg.Go(func() {
		var ok bool
		err := k.inNetNS(func() (err error) { ok, err = k.ipt.ChainExists(string(t), k.canary); return err })
		mu.Lock()
		defer mu.Unlock()
		v.lost = !ok
		errs = append(errs, err)
	})
	for _, c := range chains {
		wg.Go(func() {
			var rules []string
			err := k.inNetNS(func() (err error) { rules, err = k.ipt.List(string(t), c); return err })
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			for _, r := range rules {
				if rest, ok := strings.CutPrefix(r, "-A "+c+" "); ok {
					v.builtin[c] = append(v.builtin[c], rest)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return verifyResult{}, &Error{Op: "verify", Table: t, Err: err}
	}
	return v, nil
}

// Cleanup removes every owned chain and every built-in chain rule into one
// from each table of k's family, one restore per table that has any, and
// forgets what k applied.
func (k *Kernel) Cleanup(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	defer func() { k.saves = nil }()
	if err := k.saveAll(ctx); err != nil {
		return err
	}
	var errs []error
	for _, t := range applyOrder() {
		s := k.saves[t]
		if input := s.cleanupRestore(t, k.cfg.ownerPrefix); input != nil {
			if err := k.runRestore(ctx, t, input, false, s.rules, nil); err != nil {
				errs = append(errs, err)
			}
		}
	}
	k.applied, k.tables, k.genOK = nil, map[Table]*kernelTable{}, false
	return errors.Join(errs...)
}

// fingerprintsMoved reports, per table, whether it may have changed since
// k last wrote or checked it.
func (k *Kernel) fingerprintsMoved(tables []Table) (map[Table]bool, error) {
	moved := map[Table]bool{}
	if k.backend == BackendNFT {
		id, err := k.nftGenID()
		if err != nil {
			return nil, err
		}
		for _, t := range tables {
			moved[t] = !k.genOK || id != k.genID
		}
		return moved, nil
	}
	for _, t := range tables {
		st := k.tables[t]
		if st == nil {
			moved[t] = true
			continue
		}
		info, err := k.legacyInfo(t)
		if err != nil {
			return nil, err
		}
		moved[t] = info != st.info
	}
	return moved, nil
}

// recordFingerprints notes the fingerprints after k's writes.
func (k *Kernel) recordFingerprints() error {
	if k.backend == BackendNFT {
		id, err := k.nftGenID()
		k.genID, k.genOK = id, err == nil
		return err
	}
	for t, st := range k.tables {
		info, err := k.legacyInfo(t)
		if err != nil {
			st.trusted = false
			return err
		}
		st.info = info
	}
	return nil
}
