package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Fake is an in-memory stand-in for a kernel's iptables of one family, for
// tests of code that applies plans. It holds, per table, the built-in
// chains, owned chains and other programs' ("foreign") chains with their
// rules as text. Apply turns the difference between what the Fake holds
// and the plan into the same iptables-restore input the [Kernel] applier
// would write for a partial sync ([PartialRestore]) and runs it through a
// small interpreter of that input, which refuses, as iptables-restore
// does, a jump to a missing chain, an unknown match module, deleting a
// chain still jumped to, and deleting a rule that is not there; the table
// then keeps its rules. A plan that does not pass [Plan.Validate] is
// refused before anything is written. Restores counts the tables written,
// so a test can check that applying the same plan twice writes nothing.
//
// The zero value is not usable; call [NewFake]. A Fake is safe for
// concurrent use.
type Fake struct {
	family Family
	cfg    config

	mu     sync.Mutex
	tables map[Table]*fakeTable
	stats  Stats
}

// fakeTable is one table's chains: name to rules (each the text after
// "-A NAME ").
type fakeTable struct {
	chains map[string][]string
}

// NewFake returns an empty Fake of family (empty means IPv4). Of the
// options, [WithOwnerPrefix] and [WithRestoreObserver] apply.
func NewFake(family Family, opts ...Option) *Fake {
	if family == "" {
		family = IPv4
	}
	return &Fake{family: family, cfg: newConfig(opts), tables: map[Table]*fakeTable{}}
}

// Restores returns the number of restores run so far: one per table
// written, or refused for what the kernel would refuse.
func (f *Fake) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats.Restores
}

// Stats returns what f did so far.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// table returns table t, creating it with its built-in chains.
func (f *Fake) table(t Table) *fakeTable {
	ft := f.tables[t]
	if ft == nil {
		ft = &fakeTable{chains: map[string][]string{}}
		for _, c := range builtinChains(t) {
			ft.chains[c] = nil
		}
		f.tables[t] = ft
	}
	return ft
}

// AddForeign appends rules (each the text after "-A CHAIN ") to chain in
// table, creating the chain when it is missing, as another program would.
// A chain named with the owner prefix stands for one a crashed run left
// behind; Apply removes it.
func (f *Fake) AddForeign(table Table, chain string, rules ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.table(table)
	ft.chains[chain] = append(slices.Clip(ft.chains[chain]), rules...)
}

// FlushChain removes every rule of chain in table, as "iptables -F" does
// behind an applier's back.
func (f *Fake) FlushChain(table Table, chain string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft := f.tables[table]; ft != nil {
		if _, ok := ft.chains[chain]; ok {
			ft.chains[chain] = nil
		}
	}
}

// DeleteRule removes the n-th (1-based) rule of chain in table, as
// "iptables -D CHAIN N" does behind an applier's back. It does nothing
// when there is no such rule.
func (f *Fake) DeleteRule(table Table, chain string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft := f.tables[table]; ft != nil && n >= 1 && n <= len(ft.chains[chain]) {
		ft.chains[chain] = slices.Delete(slices.Clone(ft.chains[chain]), n-1, n)
	}
}

// Apply makes f's owned chains and jumps p's, table by table, as the
// [Fake] doc describes. An error from a table is an [*Error] wrapping a
// [*RestoreError] naming the line of the restore input that failed.
func (f *Fake) Apply(ctx context.Context, p *Plan) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.check(p); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Applies++
	var errs []error
	for _, t := range f.tablesOf(p) {
		cur := f.table(t)
		opts := RestoreOptions{OwnerPrefix: f.cfg.ownerPrefix, Builtin: cur.builtinRules(t)}
		input, err := PartialRestore(cur.ownedPlan(f.family, t, f.cfg.ownerPrefix), p, t, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if input == nil {
			continue
		}
		if err := f.restore(t, input); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// check validates p for f.
func (f *Fake) check(p *Plan) error {
	if p == nil {
		return &Error{Op: "apply", Err: fmt.Errorf("nil plan: %w", ErrSyntax)}
	}
	if p.FamilyOrDefault() != f.family {
		return &Error{Op: "apply", Err: fmt.Errorf("%s plan on %s applier: %w", p.FamilyOrDefault(), f.family, ErrFamily)}
	}
	for _, tc := range p.Tables {
		for i := range tc.Chains {
			if name := tc.Chains[i].Name; !strings.HasPrefix(name, f.cfg.ownerPrefix) {
				return &Error{Op: "apply", Table: tc.Table, Chain: name,
					Err: fmt.Errorf("chain not named with owner prefix %q: %w", f.cfg.ownerPrefix, ErrChainName)}
			}
		}
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("iptables apply: %w", err)
	}
	return nil
}

// tablesOf returns the tables p uses and those holding owned chains or
// jumps, in a fixed order.
func (f *Fake) tablesOf(p *Plan) []Table {
	var out []Table
	for _, t := range []Table{TableRaw, TableMangle, TableNAT, TableFilter} {
		if planUses(p, t) || f.tables[t].holdsOwned(t, f.cfg.ownerPrefix) {
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

// holdsOwned reports whether ft has an owned chain or a jump into one.
func (ft *fakeTable) holdsOwned(t Table, prefix string) bool {
	if ft == nil {
		return false
	}
	for name, rules := range ft.chains {
		if strings.HasPrefix(name, prefix) {
			return true
		}
		if slices.Contains(builtinChains(t), name) {
			if owned, _ := ownedRules(rules, prefix, 0); len(owned) > 0 {
				return true
			}
		}
	}
	return false
}

// builtinRules returns the rules of ft's built-in chains.
func (ft *fakeTable) builtinRules(t Table) map[string][]string {
	m := map[string][]string{}
	for _, c := range builtinChains(t) {
		m[c] = ft.chains[c]
	}
	return m
}

// ownedPlan returns ft's owned chains as a plan, in name order.
func (ft *fakeTable) ownedPlan(family Family, t Table, prefix string) *Plan {
	var chains []Chain
	for _, name := range ft.sortedUserChains(t) {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		var body strings.Builder
		for _, r := range ft.chains[name] {
			body.WriteString(r)
			body.WriteByte('\n')
		}
		chains = append(chains, Chain{Name: name, body: body.String(), n: len(ft.chains[name])})
	}
	return &Plan{Family: family, Tables: []TableChains{{Table: t, Chains: chains}}}
}

// sortedUserChains returns ft's non-built-in chains in name order.
func (ft *fakeTable) sortedUserChains(t Table) []string {
	var out []string
	for name := range ft.chains {
		if !slices.Contains(builtinChains(t), name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// restore runs restore input for table t on a copy of it and keeps the
// copy when every line succeeded.
func (f *Fake) restore(t Table, input []byte) error {
	if f.cfg.observer != nil {
		f.cfg.observer(t, input)
	}
	f.stats.Restores++
	f.stats.PartialRestores++
	f.stats.RestoreBytes += int64(len(input))
	cur := f.table(t)
	next := &fakeTable{chains: make(map[string][]string, len(cur.chains))}
	for name, rules := range cur.chains {
		next.chains[name] = slices.Clip(rules)
	}
	in := interpreter{t: t, ft: next, deleted: map[string]bool{}}
	lines := strings.Split(strings.TrimSuffix(string(input), "\n"), "\n")
	for i, line := range lines {
		if err := in.line(line); err != nil {
			return restoreFailure(t, i+1, line, err)
		}
	}
	if err := in.commit(); err != nil {
		return restoreFailure(t, len(lines), lines[len(lines)-1], err)
	}
	f.tables[t] = next
	return nil
}

// restoreFailure is the error of a failed fake restore.
func restoreFailure(t Table, n int, line string, err error) error {
	re := &RestoreError{Table: t, Line: n, LineText: line, Stderr: err.Error(), Err: err}
	return &Error{Op: "apply", Table: t, Line: n, Err: re}
}

// interpreter runs the restore commands the appliers write on a table.
type interpreter struct {
	t  Table
	ft *fakeTable
	// added are the rules this input added, as chain and rule.
	added [][2]string
	// deleted are the chains this input deleted.
	deleted map[string]bool
}

func (in *interpreter) line(line string) error {
	switch {
	case line == "" || line[0] == '#' || line == "-S" || line == "COMMIT":
		return nil
	case line[0] == '*':
		if Table(line[1:]) != in.t {
			return fmt.Errorf("table %q in input for %s: %w", line[1:], in.t, ErrSyntax)
		}
		return nil
	case line[0] == ':':
		name, _, _ := strings.Cut(line[1:], " ")
		if _, ok := in.ft.chains[name]; !ok || !slices.Contains(builtinChains(in.t), name) {
			in.ft.chains[name] = nil
		}
		return nil
	}
	cmd, rest, _ := strings.Cut(line, " ")
	chain, rest, _ := strings.Cut(rest, " ")
	rules, ok := in.ft.chains[chain]
	if !ok {
		return fmt.Errorf("chain %s: %w", chain, ErrMissingChain)
	}
	switch cmd {
	case "-A":
		if err := in.checkRule(rest); err != nil {
			return err
		}
		in.ft.chains[chain] = append(rules, rest)
		in.added = append(in.added, [2]string{chain, rest})
	case "-I":
		num, rule, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > len(rules)+1 {
			return fmt.Errorf("rule position %q in %s: %w", num, chain, ErrSyntax)
		}
		if err := in.checkRule(rule); err != nil {
			return err
		}
		in.ft.chains[chain] = slices.Insert(slices.Clone(rules), n-1, rule)
		in.added = append(in.added, [2]string{chain, rule})
	case "-D":
		i := slices.Index(rules, rest)
		if i < 0 {
			return fmt.Errorf("rule %q in %s: no such rule", rest, chain)
		}
		in.ft.chains[chain] = slices.Delete(slices.Clone(rules), i, i+1)
	case "-X":
		if len(rules) > 0 {
			return fmt.Errorf("deleting chain %s: chain not empty", chain)
		}
		delete(in.ft.chains, chain)
		in.deleted[chain] = true
	default:
		return fmt.Errorf("command %q: %w", cmd, ErrSyntax)
	}
	return nil
}

// checkRule refuses a rule the kernel would: one that does not split into
// arguments or loads a match module that does not exist.
func (in *interpreter) checkRule(rule string) error {
	if _, err := SplitArgs(rule); err != nil {
		return err
	}
	if _, err := ParseRule(rule); errors.Is(err, ErrUnknownMatch) {
		return err
	}
	return nil
}

// commit checks, as the kernel does when the restore commits, that every
// rule added jumps to a chain that exists and that no rule left jumps to
// a chain deleted.
func (in *interpreter) commit() error {
	if len(in.deleted) > 0 {
		for _, name := range in.ft.sortedUserChains(in.t) {
			for _, r := range in.ft.chains[name] {
				if target := ruleTarget(r); in.deleted[target] {
					return fmt.Errorf("deleting chain %s: still jumped to from %s", target, name)
				}
			}
		}
		for _, name := range builtinChains(in.t) {
			for _, r := range in.ft.chains[name] {
				if target := ruleTarget(r); in.deleted[target] {
					return fmt.Errorf("deleting chain %s: still jumped to from %s", target, name)
				}
			}
		}
	}
	for _, a := range in.added {
		if target := ruleTarget(a[1]); !in.exists(target) {
			return fmt.Errorf("rule in %s jumps to chain %s: %w", a[0], target, ErrMissingChain)
		}
	}
	return nil
}

// exists reports whether target names a built-in target or a chain of the
// table (or nothing).
func (in *interpreter) exists(target string) bool {
	if target == "" || builtinTarget(target) {
		return true
	}
	_, ok := in.ft.chains[target]
	return ok
}

// Cleanup removes every owned chain and every built-in chain rule into
// one, leaving foreign chains and rules.
func (f *Fake) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, t := range []Table{TableRaw, TableMangle, TableNAT, TableFilter} {
		ft := f.tables[t]
		if !ft.holdsOwned(t, f.cfg.ownerPrefix) {
			continue
		}
		s := savedTable{owned: map[string]int{}, builtin: ft.builtinRules(t)}
		for name, rules := range ft.chains {
			if strings.HasPrefix(name, f.cfg.ownerPrefix) {
				s.owned[name] = len(rules)
			}
		}
		if err := f.restore(t, s.cleanupRestore(t, f.cfg.ownerPrefix)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Dump returns what f holds as iptables-save prints it: the tables in name
// order, each with its built-in chains, then the other chains in name
// order, and their rules.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for t := range f.tables {
		names = append(names, string(t))
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		t := Table(name)
		ft := f.tables[t]
		order := append(slices.Clone(builtinChains(t)), ft.sortedUserChains(t)...)
		b.WriteString("*" + name + "\n")
		for i, c := range order {
			if i < len(builtinChains(t)) {
				b.WriteString(":" + c + " ACCEPT [0:0]\n")
			} else {
				b.WriteString(":" + c + " - [0:0]\n")
			}
		}
		for _, c := range order {
			for _, r := range ft.chains[c] {
				b.WriteString("-A " + c + " " + r + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}
