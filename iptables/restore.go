package iptables

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// RestoreOptions tune the restore input that [FullRestore] and
// [PartialRestore] build. The zero value assumes owner prefix
// [DefaultOwnerPrefix], nothing to remove beyond what the plans say, and
// built-in chains holding exactly the previous plan's jumps (none for a
// full restore).
type RestoreOptions struct {
	// OwnerPrefix marks owned chains, and so the rules of built-in chains
	// that jump to one; empty means [DefaultOwnerPrefix].
	OwnerPrefix string
	// Canary, when not empty, is an owned chain to declare (and so create
	// empty) in the table.
	Canary string
	// Delete are further owned chains to remove, such as chains found in
	// the kernel that no plan has; names the new plan holds are ignored.
	Delete []string
	// Rewrite are chains of the new plan that a partial restore writes even
	// though the previous plan had them the same, because the kernel's copy
	// drifted.
	Rewrite []string
	// Builtin, when not nil, is what the table's built-in chains hold now:
	// per chain, its rules as iptables-save prints them after "-A CHAIN ".
	// The jumps are then reconciled against it: where a chain's rules into
	// owned chains are not exactly the plan's jumps, in order, at its top,
	// they are deleted by their text and the plan's jumps inserted first.
	Builtin map[string][]string
	// ListFirst starts the table with a "-S" command. iptables-nft 1.8
	// keeps, while it reads restore input, a sorted linked list of the
	// chains the input names, inserting each name with a walk from the
	// start; a large input thus costs time quadratic in the number of
	// chains. A command without a chain, such as "-S", makes it fetch the
	// whole table instead and skip the list. The listing goes to standard
	// output and costs time in proportion to the rules already in the
	// table. Only for iptables-nft.
	ListFirst bool
}

func (o *RestoreOptions) prefix() string {
	if o.OwnerPrefix == "" {
		return DefaultOwnerPrefix
	}
	return o.OwnerPrefix
}

// FullRestore returns iptables-restore --noflush input that makes table
// t's owned chains exactly p's: it declares every owned chain of p in t
// (which creates or flushes it), writes all their rules, deletes
// opts.Delete, and reconciles the jumps of t's built-in chains with
// p.Jumps as [RestoreOptions.Builtin] describes. Chains are declared in an
// order scrambled by a hash of their names, so that the kernel does not
// hold them in sorted order, which makes iptables-nft-save's chain sort
// (a quicksort taking the first element as pivot) quadratic and, at about
// 100 000 chains, crash. It reports a jump that cannot be written.
func FullRestore(p *Plan, t Table, opts RestoreOptions) ([]byte, error) {
	var chains []Chain
	if tc := p.Table(t); tc != nil {
		chains = tc.Chains
	}
	decl := make([]string, 0, len(chains)+len(opts.Delete)+1)
	for i := range chains {
		decl = append(decl, chains[i].Name)
	}
	keep := namesIn(chains, append(slices.Clip(opts.Delete), opts.Canary))
	if opts.Canary != "" && !keep[opts.Canary] {
		decl = append(decl, opts.Canary)
		keep[opts.Canary] = true
	}
	del := chainsToDelete(opts.Delete, nil, keep)
	fix, err := reconcileJumps(p, nil, t, &opts)
	if err != nil {
		return nil, err
	}
	w := restoreWriter{}
	size := 64
	for i := range chains {
		size += 2*len(chains[i].Name) + len(chains[i].body) + chains[i].n*(len(chains[i].Name)+4) + 10
	}
	w.buf.Grow(size)
	w.header(t, opts.ListFirst)
	w.declare(append(decl, del...))
	w.deleteRules(fix)
	for i := range chains {
		w.rules(&chains[i])
	}
	w.insertJumps(fix)
	w.deleteChains(del)
	w.buf.WriteString("COMMIT\n")
	return w.buf.Bytes(), nil
}

// PartialRestore returns iptables-restore --noflush input that turns table
// t from what prev wrote into next: it declares and writes the chains that
// are new in next, whose rules changed, or that opts.Rewrite names;
// flushes and deletes the chains prev had and next has not, and
// opts.Delete; and changes the jumps of the built-in chains whose jumps
// differ (or, with opts.Builtin, are not as next wants them). It returns
// nil when there is nothing to write. A nil prev is an empty plan.
func PartialRestore(prev, next *Plan, t Table, opts RestoreOptions) ([]byte, error) {
	return partialRestore(prev, next, t, opts, diffChains(tableChains(prev, t), tableChains(next, t)))
}

// tableChains returns p's chains in t; nil for a nil p.
func tableChains(p *Plan, t Table) []Chain {
	if p == nil {
		return nil
	}
	if tc := p.Table(t); tc != nil {
		return tc.Chains
	}
	return nil
}

// partialRestore is PartialRestore with the chains' difference computed.
func partialRestore(prev, next *Plan, t Table, opts RestoreOptions, d chainDiff) ([]byte, error) {
	nextChains := tableChains(next, t)
	write := d.write
	if len(opts.Rewrite) > 0 {
		write = addRewrites(write, nextChains, opts.Rewrite)
	}
	decl := make([]string, 0, len(write)+len(d.removed)+len(opts.Delete)+1)
	for _, i := range write {
		decl = append(decl, nextChains[i].Name)
	}
	if opts.Canary != "" && next.Chain(t, opts.Canary) == nil {
		decl = append(decl, opts.Canary)
	}
	// The names removed are not in next (see diffChains); Delete may be.
	del := chainsToDelete(d.removed, opts.Delete, namesIn(nextChains, opts.Delete))
	fix, err := reconcileJumps(next, prev, t, &opts)
	if err != nil {
		return nil, err
	}
	if len(decl) == 0 && len(del) == 0 && len(fix) == 0 {
		return nil, nil
	}
	w := restoreWriter{}
	w.header(t, opts.ListFirst)
	w.declare(append(decl, del...))
	w.deleteRules(fix)
	for _, i := range write {
		w.rules(&nextChains[i])
	}
	w.insertJumps(fix)
	w.deleteChains(del)
	w.buf.WriteString("COMMIT\n")
	return w.buf.Bytes(), nil
}

// validateWrites validates, with [Plan.Validate], what a restore of table
// t would write of p: the chains at the indexes write (all of them when
// write is nil) and t's jumps, with empty stand-ins for the chains they
// jump to, so that unchanged chains are not checked again.
func validateWrites(p *Plan, t Table, write []int) error {
	sub := &Plan{Family: p.Family}
	for _, j := range p.Jumps {
		if j.Table == t {
			sub.Jumps = append(sub.Jumps, j)
		}
	}
	chains := tableChains(p, t)
	if write == nil {
		sub.Tables = []TableChains{{Table: t, Chains: chains}}
		return sub.Validate()
	}
	picked := make([]Chain, 0, len(write))
	have := make(map[string]bool, len(write))
	for _, i := range write {
		picked = append(picked, chains[i])
		have[chains[i].Name] = true
	}
	var targets []string
	for i := range picked {
		for _, r := range picked[i].Rules() {
			targets = append(targets, ruleTarget(r))
		}
	}
	for _, j := range sub.Jumps {
		targets = append(targets, j.Target)
	}
	var missing []string
	for _, target := range targets {
		if target != "" && !have[target] {
			missing = append(missing, target)
		}
	}
	for name := range namesIn(chains, missing) {
		picked = append(picked, Chain{Name: name})
	}
	sub.Tables = []TableChains{{Table: t, Chains: picked}}
	return sub.Validate()
}

// chainDiff is the difference between two lists of a table's chains.
type chainDiff struct {
	// write are the indexes in the new list of the chains that are new or
	// changed, in order.
	write []int
	// removed are the old chains the new list lacks.
	removed []string
}

// diffChains compares old and new chain lists. Names at the same position
// in both are compared in place, so that the usual case (a compiler
// emitting the same services again, a few chains replaced) needs no map
// of every chain; only the names at differing positions are matched up
// through maps. A name is unique within each list, so a name at a
// matching position cannot also sit at a differing one.
func diffChains(old, new []Chain) chainDiff {
	var d chainDiff
	var oldOdd, newOdd []int
	for i := range max(len(old), len(new)) {
		switch {
		case i >= len(old):
			newOdd = append(newOdd, i)
		case i >= len(new):
			oldOdd = append(oldOdd, i)
		case old[i].Name != new[i].Name:
			oldOdd, newOdd = append(oldOdd, i), append(newOdd, i)
		case old[i].body != new[i].body:
			d.write = append(d.write, i)
		}
	}
	if len(oldOdd)+len(newOdd) == 0 {
		return d
	}
	oldBody := make(map[string]string, len(oldOdd))
	for _, i := range oldOdd {
		oldBody[old[i].Name] = old[i].body
	}
	for _, i := range newOdd {
		if b, ok := oldBody[new[i].Name]; !ok || b != new[i].body {
			d.write = append(d.write, i)
		}
		delete(oldBody, new[i].Name)
	}
	for _, i := range oldOdd {
		if _, ok := oldBody[old[i].Name]; ok {
			d.removed = append(d.removed, old[i].Name)
		}
	}
	slices.Sort(d.write)
	return d
}

// namesIn returns which of names chains holds, with one pass over chains.
func namesIn(chains []Chain, names []string) map[string]bool {
	if len(names) == 0 {
		return nil
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	found := map[string]bool{}
	for i := range chains {
		if want[chains[i].Name] {
			found[chains[i].Name] = true
		}
	}
	return found
}

// addRewrites adds to write (indexes into chains) the chains named in
// names that it does not hold yet, keeping chain order.
func addRewrites(write []int, chains []Chain, names []string) []int {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	have := make(map[int]bool, len(write))
	for _, i := range write {
		have[i] = true
	}
	for i := range chains {
		if want[chains[i].Name] && !have[i] {
			write = append(write, i)
		}
	}
	slices.Sort(write)
	return write
}

// chainsToDelete returns the names in a and b, once each, that keep does
// not hold.
func chainsToDelete(a, b []string, keep map[string]bool) []string {
	var out []string
	seen := make(map[string]bool, len(a)+len(b))
	for _, list := range [][]string{a, b} {
		for _, n := range list {
			if !keep[n] && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// jumpFix is the change to one built-in chain's rules into owned chains:
// the rules to delete (by their text) and the jumps to insert at the top.
type jumpFix struct {
	chain  string
	delete []string
	insert []string
	// empty tells that the chain holds no rule when the inserts run, so
	// that they are appended: iptables-nft after a "-S" refuses to insert
	// at position 1 of an empty chain.
	empty bool
}

// reconcileJumps returns the changes to t's built-in chains that make
// their owned rules next's jumps: against opts.Builtin when given, else
// against prev's jumps (none when prev is nil).
func reconcileJumps(next, prev *Plan, t Table, opts *RestoreOptions) ([]jumpFix, error) {
	want, err := jumpTexts(next, t)
	if err != nil {
		return nil, err
	}
	var fixes []jumpFix
	if opts.Builtin != nil {
		family := next.FamilyOrDefault()
		for _, c := range builtinOrder(t, want, opts.Builtin) {
			owned, top := ownedRules(opts.Builtin[c], opts.prefix(), len(want[c]))
			if len(owned) == len(want[c]) && sameRules(family, top, want[c]) {
				continue
			}
			fixes = append(fixes, jumpFix{chain: c, delete: owned, insert: want[c],
				empty: len(opts.Builtin[c]) == len(owned)})
		}
		return fixes, nil
	}
	var had map[string][]string
	if prev != nil {
		if had, err = jumpTexts(prev, t); err != nil {
			return nil, err
		}
	}
	for _, c := range builtinOrder(t, want, had) {
		if !slices.Equal(had[c], want[c]) {
			fixes = append(fixes, jumpFix{chain: c, delete: had[c], insert: want[c]})
		}
	}
	return fixes, nil
}

// builtinOrder returns the built-in chains of t that a or b has, in the
// kernel's order.
func builtinOrder(t Table, a, b map[string][]string) []string {
	var out []string
	for _, c := range builtinChains(t) {
		if len(a[c]) > 0 || len(b[c]) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// jumpTexts returns p's jumps in table t as rule text, per built-in chain,
// in order.
func jumpTexts(p *Plan, t Table) (map[string][]string, error) {
	m := map[string][]string{}
	b := NewChainBuilder("JUMP")
	for _, j := range p.Jumps {
		if j.Table != t {
			continue
		}
		b.Reset("JUMP")
		b.Rule(j.Args()...)
		c, err := b.Chain()
		if err != nil {
			return nil, &Error{Op: "apply", Table: t, Chain: j.Chain, Err: err}
		}
		m[j.Chain] = append(m[j.Chain], strings.TrimSuffix(c.body, "\n"))
	}
	return m, nil
}

// ownedRules returns the rules among rules that jump or go to a chain
// named with prefix, and the first n rules of the chain.
func ownedRules(rules []string, prefix string, n int) (owned, top []string) {
	for _, r := range rules {
		if strings.HasPrefix(ruleTarget(r), prefix) {
			owned = append(owned, r)
		}
	}
	return owned, rules[:min(n, len(rules))]
}

// ruleTarget returns the chain or target after a rule's last -j or -g.
func ruleTarget(rule string) string {
	args, err := SplitArgs(rule)
	if err != nil {
		return ""
	}
	return effectiveTarget(args)
}

// sameRules reports whether the kernel's rules (iptables-save text) are
// the wanted ones, comparing canonical forms where they can be computed.
func sameRules(f Family, kernel, want []string) bool {
	if len(kernel) != len(want) {
		return false
	}
	for i := range want {
		if kernel[i] == want[i] {
			continue
		}
		k, err1 := CanonicalRule(f, kernel[i])
		w, err2 := CanonicalRule(f, want[i])
		if err1 != nil || err2 != nil || k != w {
			return false
		}
	}
	return true
}

// restoreWriter writes restore input for one table.
type restoreWriter struct {
	buf bytes.Buffer
}

func (w *restoreWriter) header(t Table, listFirst bool) {
	w.buf.WriteString("*" + string(t) + "\n")
	if listFirst {
		w.buf.WriteString("-S\n")
	}
}

// declare writes a ":NAME - [0:0]" line per name, in hash order.
func (w *restoreWriter) declare(names []string) {
	type keyed struct {
		h    uint64
		name string
	}
	ks := make([]keyed, len(names))
	for i, n := range names {
		h := fnv.New64a()
		h.Write([]byte(n))
		ks[i] = keyed{h.Sum64(), n}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.h, b.h), strings.Compare(a.name, b.name))
	})
	for _, k := range ks {
		w.buf.WriteString(":")
		w.buf.WriteString(k.name)
		w.buf.WriteString(" - [0:0]\n")
	}
}

// rules writes c's rules as -A lines.
func (w *restoreWriter) rules(c *Chain) {
	body := c.body
	for body != "" {
		i := strings.IndexByte(body, '\n')
		if i < 0 {
			i = len(body) - 1
		}
		w.buf.WriteString("-A ")
		w.buf.WriteString(c.Name)
		w.buf.WriteByte(' ')
		w.buf.WriteString(body[:i+1])
		body = body[i+1:]
	}
}

func (w *restoreWriter) deleteRules(fixes []jumpFix) {
	for _, f := range fixes {
		for _, r := range f.delete {
			w.buf.WriteString("-D " + f.chain + " " + r + "\n")
		}
	}
}

func (w *restoreWriter) insertJumps(fixes []jumpFix) {
	for _, f := range fixes {
		for i, r := range f.insert {
			if f.empty {
				w.buf.WriteString("-A " + f.chain + " " + r + "\n")
			} else {
				w.buf.WriteString("-I " + f.chain + " " + strconv.Itoa(i+1) + " " + r + "\n")
			}
		}
	}
}

func (w *restoreWriter) deleteChains(names []string) {
	for _, n := range names {
		w.buf.WriteString("-X " + n + "\n")
	}
}

// savedTable is what iptables-save showed of one table.
type savedTable struct {
	// owned maps each owned chain to its number of rules.
	owned map[string]int
	// builtin holds each built-in chain's rules, as text after "-A CHAIN ".
	builtin map[string][]string
	// rules is the number of rules in the table.
	rules int
}

// scanSave reads iptables-save output of one or more tables.
func scanSave(text, prefix string) map[Table]*savedTable {
	out := map[Table]*savedTable{}
	var cur *savedTable
	var curTable Table
	for text != "" {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		line = strings.TrimRight(line, " \r")
		if strings.HasPrefix(line, "[") { // "[p:b] -A ..." with counters
			if _, rest, ok := strings.Cut(line, "] "); ok {
				line = rest
			}
		}
		switch {
		case strings.HasPrefix(line, "*"):
			curTable = Table(line[1:])
			cur = &savedTable{owned: map[string]int{}, builtin: map[string][]string{}}
			out[curTable] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if strings.HasPrefix(name, prefix) {
				cur.owned[name] = 0
			}
		case strings.HasPrefix(line, "-A "):
			chain, rest, _ := strings.Cut(line[3:], " ")
			cur.rules++
			if _, ok := cur.owned[chain]; ok {
				cur.owned[chain]++
			} else if slices.Contains(builtinChains(curTable), chain) {
				cur.builtin[chain] = append(cur.builtin[chain], rest)
			}
		}
	}
	return out
}

// drift compares the owned chains the kernel holds (saved) with those the
// last applied plan wrote (applied): the chains to rewrite, because they
// are missing or hold another number of rules, and the owned chains that
// neither applied nor next has, to delete. The canary counts as expected.
func (s *savedTable) drift(applied []Chain, next *Plan, t Table, canary string) (rewrite, stale []string) {
	for i := range applied {
		if n, ok := s.owned[applied[i].Name]; !ok || n != applied[i].n {
			rewrite = append(rewrite, applied[i].Name)
		}
	}
	known := make(map[string]bool, len(applied)+1)
	for i := range applied {
		known[applied[i].Name] = true
	}
	known[canary] = true
	for name := range s.owned {
		if !known[name] && next.Chain(t, name) == nil {
			stale = append(stale, name)
		}
	}
	slices.Sort(stale)
	return rewrite, stale
}

// staleChains returns the owned chains s holds that p does not, except
// keep.
func (s *savedTable) staleChains(p *Plan, t Table, keep string) []string {
	var out []string
	for name := range s.owned {
		if name != keep && p.Chain(t, name) == nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// cleanupRestore returns restore input removing every owned chain in s and
// every built-in chain rule into one, or nil when there is none.
func (s *savedTable) cleanupRestore(t Table, prefix string) []byte {
	var fixes []jumpFix
	for _, c := range builtinChains(t) {
		if owned, _ := ownedRules(s.builtin[c], prefix, 0); len(owned) > 0 {
			fixes = append(fixes, jumpFix{chain: c, delete: owned})
		}
	}
	if len(s.owned) == 0 && len(fixes) == 0 {
		return nil
	}
	names := make([]string, 0, len(s.owned))
	for n := range s.owned {
		names = append(names, n)
	}
	slices.Sort(names)
	w := restoreWriter{}
	w.header(t, false)
	w.declare(names)
	w.deleteRules(fixes)
	w.deleteChains(names)
	w.buf.WriteString("COMMIT\n")
	return w.buf.Bytes()
}

// listFirstPays estimates whether a "-S" first line (see
// [RestoreOptions.ListFirst]) makes an iptables-nft restore of input with
// the given number of lines and chain declarations faster, in a table
// already holding tableRules rules. The sorted-list walk costs about 6 ns
// per step and averages half the chains per line; listing costs about
// 10 µs per rule held.
func listFirstPays(lines, chains, tableRules int) bool {
	return lines >= 1000 && float64(lines)*float64(chains)*3e-9 > float64(tableRules+100)*10e-6
}

// countDecls returns the number of lines and of chain declarations in
// restore input.
func countDecls(input []byte) (lines, chains int) {
	for len(input) > 0 {
		i := bytes.IndexByte(input, '\n')
		if i < 0 {
			i = len(input) - 1
		}
		lines++
		if input[0] == ':' {
			chains++
		}
		input = input[i+1:]
	}
	return lines, chains
}

// withListFirst returns input with "-S" after its table line.
func withListFirst(input []byte) []byte {
	i := bytes.IndexByte(input, '\n')
	out := make([]byte, 0, len(input)+3)
	out = append(out, input[:i+1]...)
	out = append(out, "-S\n"...)
	return append(out, input[i+1:]...)
}

// parseRestoreError turns a failed iptables-restore run into a
// RestoreError, finding the line it names in the messages of either
// backend ("line 12 failed", "Error occurred at line: 12",
// "line 12: RULE_APPEND failed").
func parseRestoreError(t Table, input []byte, stderr string, err error) *RestoreError {
	e := &RestoreError{Table: t, Stderr: strings.TrimSpace(stderr), Err: err}
	e.Line = failedLine(stderr)
	if e.Line > 0 {
		e.LineText = inputLine(input, e.Line)
	}
	if permissionDenied(stderr) {
		e.Err = fmt.Errorf("%w (%w)", ErrNotRoot, err)
	}
	return e
}

func permissionDenied(stderr string) bool {
	return strings.Contains(stderr, "Permission denied") || strings.Contains(stderr, "you must be root") ||
		strings.Contains(stderr, "Operation not permitted")
}

// failedLine returns the input line number a restore error message names,
// or 0.
func failedLine(stderr string) int {
	for _, marker := range []string{"Error occurred at line: ", "line "} {
		s := stderr
		for {
			i := strings.Index(s, marker)
			if i < 0 {
				break
			}
			s = s[i+len(marker):]
			j := 0
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if n, err := strconv.Atoi(s[:j]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// inputLine returns line n (1-based) of input, without its newline.
func inputLine(input []byte, n int) string {
	for i := 1; len(input) > 0; i++ {
		line, rest, _ := bytes.Cut(input, []byte("\n"))
		if i == n {
			return string(line)
		}
		input = rest
	}
	return ""
}

// stderrMessage returns what an iptables tool printed on standard error,
// less its usage hints, deprecation notices and line reports, joined into
// one line.
func stderrMessage(stderr string) string {
	var parts []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "",
			strings.HasPrefix(line, "Try `"),
			strings.HasPrefix(line, "Ignoring deprecated"),
			strings.HasPrefix(line, "Error occurred at line"):
			continue
		}
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}
