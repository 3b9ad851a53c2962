package nftables

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// This file computes what one batch must send to turn a table holding one
// plan into a table holding another. The kernel applier and the Fake run
// the same operations in the same order, so the Fake's checks (a jump to a
// chain not yet declared, deleting a chain still jumped to) also hold the
// kernel applier's batches to the kernel's rules.

// opKind is the kind of one operation of a batch.
type opKind int

// The operations, in the order a partial batch sends them.
const (
	opAddTable    opKind = iota // add the table (a no-op when it exists)
	opDelTable                  // delete the table and all it holds
	opAddSet                    // declare a set or map, without elements
	opAddChain                  // declare a chain, without rules
	opFlushChain                // delete every rule of a chain
	opFlushSet                  // delete every element of a set
	opDelElems                  // delete elements of a set
	opInsertRules               // insert rules at the head of a chain
	opAddRules                  // append a chain's rules
	opAddElems                  // add elements to a set
	opDelSet                    // delete a set, which no rule uses
	opDelChain                  // delete a chain, which no rule or element uses
)

func (k opKind) String() string {
	const names = "add table,delete table,add set,add chain,flush chain,flush set," +
		"delete elements,insert rules,add rules,add elements,delete set,delete chain"
	parts := strings.Split(names, ",")
	if int(k) < len(parts) {
		return parts[k]
	}
	return "operation " + strconv.Itoa(int(k))
}

// op is one operation. Chain and set are those of the new plan for
// additions, of the applied plan for deletions.
type op struct {
	kind  opKind
	chain *Chain
	set   *Set
	elems []Element
	// rules are the rules that opAddRules appends or opInsertRules
	// inserts, in chain order; nil means all of chain's.
	rules []string
}

// opRules returns the rules o adds.
func (o *op) opRules() []string {
	if o.rules != nil {
		return o.rules
	}
	return o.chain.Rules()
}

// batch is what one Apply sends for one table.
type batch struct {
	full bool
	// why says, for the log, why the batch is full.
	why string
	ops []op
}

// tableKey identifies a table in a namespace.
type tableKey struct {
	family Family
	name   string
}

func (k tableKey) table() Table { return Table{Family: k.family, Name: k.name} }

func keyOf(p *Plan) tableKey { return tableKey{p.FamilyOrDefault(), p.TableName()} }

// drift is what a verification found wrong with a table that otherwise
// still holds the applied plan's objects.
type drift struct {
	// full asks for the table to be replaced; why says why.
	full bool
	why  string
	// refill names chains whose rules differ: they are flushed and
	// written again.
	refill map[string]bool
	// reset names sets whose elements differ: they are flushed and
	// filled again.
	reset map[string]bool
}

// found reports whether d asks for any repair.
func (d *drift) found() bool { return d != nil && (d.full || len(d.refill) > 0 || len(d.reset) > 0) }

// observed is what a verification read of a table: whether it exists,
// its chains with their rule counts, and its sets with their element
// counts (-1 where not counted: dynamic sets, which rules fill).
type observed struct {
	exists bool
	// handle is the table's handle; 0 when unknown.
	handle uint64
	chains map[string]observedChain
	sets   map[string]int
}

type observedChain struct {
	base  bool
	rules int
}

// compare returns how the table o describes differs from applied, whose
// table had handle (0 when unknown).
func compare(applied *Plan, o *observed, handle uint64) *drift {
	d := &drift{refill: map[string]bool{}, reset: map[string]bool{}}
	full := func(format string, args ...any) *drift {
		d.full, d.why = true, fmt.Sprintf(format, args...)
		return d
	}
	switch {
	case !o.exists:
		return full("table deleted")
	case handle != 0 && o.handle != 0 && handle != o.handle:
		return full("table recreated")
	case len(o.chains) != len(applied.Chains):
		return full("table holds %d chains, applied %d", len(o.chains), len(applied.Chains))
	case len(o.sets) != len(applied.Sets):
		return full("table holds %d sets, applied %d", len(o.sets), len(applied.Sets))
	}
	for i := range applied.Chains {
		c := &applied.Chains[i]
		oc, ok := o.chains[c.Name]
		switch {
		case !ok:
			return full("chain %s deleted", c.Name)
		case oc.base != (c.Base != nil):
			return full("chain %s replaced", c.Name)
		case oc.rules != c.RuleCount():
			d.refill[c.Name] = true
		}
	}
	for i := range applied.Sets {
		s := &applied.Sets[i]
		n, ok := o.sets[s.Name]
		switch {
		case !ok:
			return full("set %s deleted", s.Name)
		case n >= 0 && n != len(s.Elements):
			d.reset[s.Name] = true
		}
	}
	return d
}

// plan returns the batch that turns a table holding applied (nil: unknown
// content) into one holding p, with the repairs d asks for (d may be nil).
// A batch with no operations means the table already holds p.
func plan(applied, p *Plan, d *drift) *batch {
	switch {
	case applied == nil:
		return fullBatch(p, "first apply")
	case d != nil && d.full:
		return fullBatch(p, d.why)
	case applied.Table.Comment != p.Table.Comment:
		return fullBatch(p, "table comment changed")
	}
	b := &batch{}
	if why := b.sets(applied, p, d); why != "" {
		return fullBatch(p, why)
	}
	if why := b.chains(applied, p, d); why != "" {
		return fullBatch(p, why)
	}
	slices.SortStableFunc(b.ops, func(x, y op) int { return int(x.kind) - int(y.kind) })
	return b
}

// fullBatch returns the batch that replaces the table with p: add it (so
// that deleting cannot fail), delete it, and write p from scratch: sets,
// chains, rules, elements.
//
// The kernel, binding an anonymous set to the rule that uses it, walks
// every operation of the batch so far, which makes a batch with one
// anonymous map per service (numgen) quadratic. So each rule with an
// anonymous set is added as early as it can be: right after its chain
// and the chains it jumps to are declared, chains being declared in plan
// order otherwise. The chain's other rules come later, those before it
// inserted at the head of the chain, so the order of rules is the plan's.
func fullBatch(p *Plan, why string) *batch {
	b := &batch{full: true, why: why, ops: make([]op, 0, 3+2*len(p.Sets)+3*len(p.Chains))}
	b.ops = append(b.ops, op{kind: opAddTable}, op{kind: opDelTable}, op{kind: opAddTable})
	for i := range p.Sets {
		b.ops = append(b.ops, op{kind: opAddSet, set: &p.Sets[i]})
	}
	byName := make(map[string]*Chain, len(p.Chains))
	for i := range p.Chains {
		byName[p.Chains[i].Name] = &p.Chains[i]
	}
	declared := make(map[string]bool, len(p.Chains))
	declare := func(c *Chain) {
		if c != nil && !declared[c.Name] {
			declared[c.Name] = true
			b.ops = append(b.ops, op{kind: opAddChain, chain: c})
		}
	}
	early := map[string]int{}
	for i := range p.Chains {
		c := &p.Chains[i]
		rules := c.Rules()
		if m, targets := anonymousRule(rules); m >= 0 {
			for _, t := range targets {
				declare(byName[t])
			}
			declare(c)
			b.ops = append(b.ops, op{kind: opAddRules, chain: c, rules: rules[m : m+1]})
			early[c.Name] = m
		}
		declare(c)
	}
	for i := range p.Chains {
		c := &p.Chains[i]
		m, ok := early[c.Name]
		switch {
		case !ok && c.body != "":
			b.ops = append(b.ops, op{kind: opAddRules, chain: c})
		case ok:
			rules := c.Rules()
			if m > 0 {
				b.ops = append(b.ops, op{kind: opInsertRules, chain: c, rules: rules[:m]})
			}
			if m+1 < len(rules) {
				b.ops = append(b.ops, op{kind: opAddRules, chain: c, rules: rules[m+1:]})
			}
		}
	}
	for i := range p.Sets {
		if len(p.Sets[i].Elements) > 0 {
			b.ops = append(b.ops, op{kind: opAddElems, set: &p.Sets[i], elems: p.Sets[i].Elements})
		}
	}
	return b
}

// anonymousRule returns the position of the first of rules that makes an
// anonymous set (numgen's map, a set of addresses) and the chains it
// jumps to, or -1.
func anonymousRule(rules []string) (int, []string) {
	for i, text := range rules {
		if strings.IndexByte(text, '{') < 0 {
			continue
		}
		r, err := ParseRule(text)
		if err != nil {
			continue
		}
		anon := false
		var targets []string
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case Numgen:
				anon = true
				for _, a := range e.Actions {
					targets = append(targets, a.Chain)
				}
			case AddrMatch:
				anon = anon || len(e.Prefixes) > 1
			case Action:
				targets = append(targets, e.Chain)
			}
		}
		if anon {
			return i, targets
		}
	}
	return -1, nil
}

// sets adds the set operations of a partial batch, or returns why the
// batch must be full: a set whose definition changed cannot be changed in
// place, and deleting it would mean rewriting every rule that uses it.
func (b *batch) sets(applied, p *Plan, d *drift) string {
	old := make(map[string]*Set, len(applied.Sets))
	for i := range applied.Sets {
		old[applied.Sets[i].Name] = &applied.Sets[i]
	}
	for i := range p.Sets {
		s := &p.Sets[i]
		o := old[s.Name]
		if o == nil {
			b.add(op{kind: opAddSet, set: s})
			if len(s.Elements) > 0 {
				b.add(op{kind: opAddElems, set: s, elems: s.Elements})
			}
			continue
		}
		delete(old, s.Name)
		if !sameSetType(o, s) {
			return "set " + s.Name + " changed type"
		}
		if d != nil && d.reset[s.Name] {
			b.add(op{kind: opFlushSet, set: s})
			if len(s.Elements) > 0 {
				b.add(op{kind: opAddElems, set: s, elems: s.Elements})
			}
			continue
		}
		gone, added := diffElements(o, s)
		if len(gone) > 0 {
			b.add(op{kind: opDelElems, set: o, elems: gone})
		}
		if len(added) > 0 {
			b.add(op{kind: opAddElems, set: s, elems: added})
		}
	}
	for i := range applied.Sets {
		if s := &applied.Sets[i]; old[s.Name] != nil {
			b.add(op{kind: opDelSet, set: s})
		}
	}
	return ""
}

// chains adds the chain operations of a partial batch, or returns why the
// batch must be full: a base chain cannot be moved to another hook in
// place.
func (b *batch) chains(applied, p *Plan, d *drift) string {
	match := matchChains(applied, p)
	matched := make([]bool, len(applied.Chains))
	for i := range p.Chains {
		c := &p.Chains[i]
		k := match[i]
		if k < 0 {
			b.add(op{kind: opAddChain, chain: c})
			if c.body != "" {
				b.add(op{kind: opAddRules, chain: c})
			}
			continue
		}
		matched[k] = true
		o := &applied.Chains[k]
		if (o.Base == nil) != (c.Base == nil) || (o.Base != nil && *o.Base != *c.Base) || o.Comment != c.Comment {
			return "chain " + c.Name + " changed type or comment"
		}
		if o.body == c.body && (d == nil || !d.refill[c.Name]) {
			continue
		}
		b.add(op{kind: opFlushChain, chain: o})
		if c.body != "" {
			b.add(op{kind: opAddRules, chain: c})
		}
	}
	for k := range applied.Chains {
		if matched[k] {
			continue
		}
		c := &applied.Chains[k]
		if c.body != "" || (d != nil && d.refill[c.Name]) {
			b.add(op{kind: opFlushChain, chain: c})
		}
		b.add(op{kind: opDelChain, chain: c})
	}
	return ""
}

// matchWindow is how far matchNearby looks ahead in either plan's chain
// list where the two part.
const matchWindow = 16

// matchChains returns, for each chain of p, the index of the chain of the
// same name in applied, or -1 for a new chain. Plans of the same cluster
// list their chains in much the same order, and one endpoint change adds
// and removes a chain or two, so the lists are first walked side by side
// (matchNearby); only when they part by more than a few chains are the
// applied chains indexed by name, which costs a map of every chain.
func matchChains(applied, p *Plan) []int {
	if match, ok := matchNearby(applied, p); ok {
		return match
	}
	index := make(map[string]int, len(applied.Chains))
	for j := range applied.Chains {
		index[applied.Chains[j].Name] = j
	}
	match := make([]int, len(p.Chains))
	used := make([]bool, len(applied.Chains))
	for i := range p.Chains {
		j, ok := index[p.Chains[i].Name]
		if !ok || used[j] {
			// A second chain of the same name, which Validate refuses,
			// matches nothing.
			j = -1
		} else {
			used[j] = true
		}
		match[i] = j
	}
	return match
}

// matchNearby matches chains by walking both lists side by side. Where
// they part, a chain of p found within matchWindow places ahead in
// applied skips the applied chains before it (taken for removed);
// otherwise the chain of p is taken for a new one, and the applied chain
// at hand, unless it is found within matchWindow places ahead in p, for a
// removed one (a chain replaced by another). The guesses are checked at
// the end: they were right when no chain taken for new has the name of an
// applied chain left unmatched. It reports false when one was wrong, as
// when chains moved, and leaves the matching to an index.
func matchNearby(applied, p *Plan) ([]int, bool) {
	match := make([]int, len(p.Chains))
	ac := applied.Chains
	var guessedNew []string
	next := 0
	for i := range p.Chains {
		name := p.Chains[i].Name
		k := -1
		for d := 0; d < matchWindow && next+d < len(ac); d++ {
			if ac[next+d].Name == name {
				k = next + d
				break
			}
		}
		if k >= 0 {
			match[i], next = k, k+1
			continue
		}
		match[i] = -1
		guessedNew = append(guessedNew, name)
		if next < len(ac) && !aheadIn(p.Chains[i+1:], ac[next].Name) {
			next++
		}
	}
	if len(guessedNew) == 0 {
		return match, true
	}
	matched := make([]bool, len(ac))
	for _, k := range match {
		if k >= 0 {
			matched[k] = true
		}
	}
	left := map[string]bool{}
	for k := range ac {
		if !matched[k] {
			left[ac[k].Name] = true
		}
	}
	for _, name := range guessedNew {
		if left[name] {
			return nil, false
		}
	}
	return match, true
}

// aheadIn reports whether one of the first matchWindow chains is named
// name.
func aheadIn(chains []Chain, name string) bool {
	for d := 0; d < matchWindow && d < len(chains); d++ {
		if chains[d].Name == name {
			return true
		}
	}
	return false
}

func (b *batch) add(o op) { b.ops = append(b.ops, o) }

// sameSetType reports whether a and b are the same set but for elements.
func sameSetType(a, b *Set) bool {
	return slices.Equal(a.Key, b.Key) && a.Value == b.Value && slices.Equal(a.Flags, b.Flags) &&
		a.Timeout == b.Timeout && a.Comment == b.Comment
}

// diffElements returns the elements of o that s does not hold as they are,
// and those of s that o does not. An element whose key stays but whose
// verdict or comment changes is in both: it is deleted and added again.
// The common head and tail of the two lists, usually all but a few
// elements, are skipped without hashing.
func diffElements(o, s *Set) (gone, added []Element) {
	oe, se := o.Elements, s.Elements
	for len(oe) > 0 && len(se) > 0 && oe[0] == se[0] {
		oe, se = oe[1:], se[1:]
	}
	for len(oe) > 0 && len(se) > 0 && oe[len(oe)-1] == se[len(se)-1] {
		oe, se = oe[:len(oe)-1], se[:len(se)-1]
	}
	if len(oe) == 0 {
		return nil, se
	}
	have := make(map[elemKey]*Element, len(oe))
	for i := range oe {
		e := &oe[i]
		have[elemKey{e.Addr, e.Proto, e.Port}] = e
	}
	for i := range se {
		e := &se[i]
		k := elemKey{e.Addr, e.Proto, e.Port}
		if h := have[k]; h != nil {
			delete(have, k)
			if h.Action == e.Action && h.Comment == e.Comment {
				continue
			}
			gone = append(gone, *h)
		}
		added = append(added, *e)
	}
	for i := range oe {
		e := &oe[i]
		if have[elemKey{e.Addr, e.Proto, e.Port}] != nil {
			gone = append(gone, *e)
		}
	}
	return gone, added
}

// copyPlan returns a copy of p that the caller may change without
// changing the copy; rule text is immutable and shared.
func copyPlan(p *Plan) *Plan {
	c := &Plan{Table: p.Table, Sets: slices.Clone(p.Sets), Chains: slices.Clone(p.Chains)}
	for i := range c.Sets {
		s := &c.Sets[i]
		s.Key, s.Flags, s.Elements = slices.Clone(s.Key), slices.Clone(s.Flags), slices.Clone(s.Elements)
	}
	for i := range c.Chains {
		if b := c.Chains[i].Base; b != nil {
			bc := *b
			c.Chains[i].Base = &bc
		}
	}
	return c
}

// messages returns the number of operations of b as messages: one per
// rule and per chunk of elements, one for each other operation.
func (b *batch) messages() int {
	n := 0
	for _, o := range b.ops {
		switch o.kind {
		case opAddRules, opInsertRules:
			n += len(o.opRules())
		case opAddElems, opDelElems:
			n += (len(o.elems) + MaxElementsPerMessage - 1) / MaxElementsPerMessage
		default:
			n++
		}
	}
	return n
}
