package nftables

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Fake is an in-memory stand-in for a network namespace's nftables, for
// tests of code that applies plans. It holds tables with their sets, maps,
// elements and chains, and applies plans the way the [Kernel] applier
// does: the first Apply of a table replaces it, later ones send only what
// changed, and applying a plan the table holds sends nothing, which
// [Stats] shows as batches.
//
// Every batch runs as the kernel runs one, all or nothing: a plan that
// fails [Plan.Validate] is refused before it, and within it a rule that
// jumps to a chain not declared (or to a base chain), that uses a set
// missing or of another key type, an element whose key does not fit its
// set (an address of the other family, a missing part) or whose verdict
// names a missing chain, deleting a chain or set that something still
// uses, or deleting what is not there, fails the batch with an
// [*ApplyError] and leaves every table as it was.
//
// [Fake.DeleteTable], [Fake.FlushChain] and [Fake.Load] change tables as
// another program would; like the kernel applier, the Fake notices the
// change at the next Apply (the ruleset generation moved), compares the
// table with what it applied, and repairs it.
//
// The zero value is not usable; call [NewFake]. A Fake is safe for
// concurrent use.
type Fake struct {
	cfg config

	mu     sync.Mutex
	tables map[tableKey]*fakeTable
	// order lists the tables in creation order, for Dump.
	order []tableKey
	// gen counts changes, the Fake's and outside ones.
	gen     uint64
	handles uint64
	applied map[tableKey]*appliedTable
	stats   Stats
}

// appliedTable is what an applier knows of a table it wrote.
type appliedTable struct {
	plan   *Plan
	handle uint64
	// gen is the generation at which the table was known to hold plan.
	gen uint64
}

// fakeTable is one table of a Fake.
type fakeTable struct {
	family  Family
	comment string
	handle  uint64
	sets    map[string]*fakeSet
	chains  map[string]*fakeChain
	// setOrder and chainOrder list names in creation order.
	setOrder, chainOrder []string
	// chainRefs and setRefs count the rules and elements that refer to
	// each chain and set.
	chainRefs, setRefs map[string]int
}

type fakeSet struct {
	def   Set
	elems map[elemKey]Element
}

type fakeChain struct {
	def   Chain
	rules []string
}

// NewFake returns a Fake with no tables. Options are accepted for the
// symmetry with [New]; only [WithLogger] has an effect.
func NewFake(opts ...Option) *Fake {
	return &Fake{cfg: newConfig(opts), tables: map[tableKey]*fakeTable{}, applied: map[tableKey]*appliedTable{}}
}

// Stats returns what f did so far.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Apply makes the table p names hold exactly p, in one batch, as the
// [Fake] doc describes.
func (f *Fake) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrSyntax)}
	}
	if err := ctx.Err(); err != nil {
		return &ApplyError{Op: "flush", Table: p.Table, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Applies++
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Table: p.Table, Err: err}
	}
	key := keyOf(p)
	a := f.applied[key]
	var d *drift
	var applied *Plan
	if a != nil {
		applied = a.plan
		if a.gen != f.gen {
			f.stats.Verifications++
			d = compare(a.plan, f.observe(key), a.handle)
			if d.found() {
				f.stats.Repairs++
				f.cfg.logger.Info("nftables table changed behind the applier's back", "table", key.name, "family", key.family, "full", d.full, "why", d.why)
			}
			a.gen = f.gen
		}
	}
	b := plan(applied, p, d)
	if len(b.ops) == 0 {
		return nil
	}
	if err := f.commit(key, p.Table, b); err != nil {
		delete(f.applied, key)
		return err
	}
	if b.full {
		f.stats.FullBatches++
	} else {
		f.stats.PartialBatches++
	}
	f.stats.Messages += b.messages()
	f.applied[key] = &appliedTable{plan: copyPlan(p), handle: f.tables[key].handle, gen: f.gen}
	return nil
}

// commit runs b on a copy of the table and, when every operation
// succeeds, makes the copy the table; this batch then counts as one
// change, and the applied tables that were up to date stay so.
func (f *Fake) commit(key tableKey, t Table, b *batch) error {
	var ft *fakeTable
	if cur := f.tables[key]; cur != nil {
		ft = cur.clone()
	}
	for _, o := range b.ops {
		var err error
		ft, err = f.run(ft, key, t, o)
		if err != nil {
			e := &ApplyError{Op: "flush", Table: key.table(), Err: fmt.Errorf("%s: %w", o.kind, err)}
			if o.chain != nil {
				e.Chain = o.chain.Name
			}
			if o.set != nil {
				e.Set = o.set.Name
			}
			return e
		}
	}
	f.store(key, ft)
	f.stats.Batches++
	before := f.gen
	f.gen++
	for _, a := range f.applied {
		if a.gen == before {
			a.gen = f.gen
		}
	}
	return nil
}

// store makes ft table key, or deletes the table when ft is nil.
func (f *Fake) store(key tableKey, ft *fakeTable) {
	_, had := f.tables[key]
	if ft == nil {
		delete(f.tables, key)
		f.order = slices.DeleteFunc(f.order, func(k tableKey) bool { return k == key })
		return
	}
	f.tables[key] = ft
	if !had {
		f.order = append(f.order, key)
	}
}

// run runs one operation on ft (nil: the table does not exist) and
// returns the table after it.
func (f *Fake) run(ft *fakeTable, key tableKey, t Table, o op) (*fakeTable, error) {
	if o.kind == opAddTable {
		if ft == nil {
			f.handles++
			ft = newFakeTable(key.family, t.Comment, f.handles)
		}
		return ft, nil
	}
	if ft == nil {
		return nil, fmt.Errorf("table %s %s: %w", key.family, key.name, ErrMissing)
	}
	switch o.kind {
	case opDelTable:
		return nil, nil
	case opAddSet:
		return ft, ft.addSet(o.set)
	case opAddChain:
		return ft, ft.addChain(o.chain)
	case opFlushChain:
		return ft, ft.flushChain(o.chain.Name)
	case opFlushSet:
		return ft, ft.flushSet(o.set.Name)
	case opDelElems:
		return ft, ft.delElems(o.set.Name, o.elems)
	case opAddRules:
		return ft, ft.addRules(o.chain.Name, o.opRules(), false)
	case opInsertRules:
		return ft, ft.addRules(o.chain.Name, o.opRules(), true)
	case opAddElems:
		return ft, ft.addElems(o.set.Name, o.elems)
	case opDelSet:
		return ft, ft.delSet(o.set.Name)
	case opDelChain:
		return ft, ft.delChain(o.chain.Name)
	}
	return ft, fmt.Errorf("operation %d: %w", o.kind, ErrSyntax)
}

func newFakeTable(family Family, comment string, handle uint64) *fakeTable {
	return &fakeTable{family: family, comment: comment, handle: handle,
		sets: map[string]*fakeSet{}, chains: map[string]*fakeChain{},
		chainRefs: map[string]int{}, setRefs: map[string]int{}}
}

func (ft *fakeTable) clone() *fakeTable {
	c := *ft
	c.sets = make(map[string]*fakeSet, len(ft.sets))
	for n, s := range ft.sets {
		c.sets[n] = &fakeSet{def: s.def, elems: maps.Clone(s.elems)}
	}
	c.chains = make(map[string]*fakeChain, len(ft.chains))
	for n, ch := range ft.chains {
		c.chains[n] = &fakeChain{def: ch.def, rules: slices.Clone(ch.rules)}
	}
	c.setOrder, c.chainOrder = slices.Clone(ft.setOrder), slices.Clone(ft.chainOrder)
	c.chainRefs, c.setRefs = maps.Clone(ft.chainRefs), maps.Clone(ft.setRefs)
	return &c
}

// validator returns a validator over ft's chains and sets, for checking
// rules and elements against what the table holds.
func (ft *fakeTable) validator() *validator {
	v := &validator{family: ft.family, chains: make(map[string]*Chain, len(ft.chains)), sets: make(map[string]*Set, len(ft.sets))}
	for n, c := range ft.chains {
		v.chains[n] = &c.def
	}
	for n, s := range ft.sets {
		v.sets[n] = &s.def
	}
	return v
}

func (ft *fakeTable) addSet(s *Set) error {
	def := *s
	def.Elements = nil
	if err := (&validator{family: ft.family}).checkSetType(&def); err != nil {
		return err
	}
	if have := ft.sets[s.Name]; have != nil {
		if !sameSetType(&have.def, &def) {
			return fmt.Errorf("set %s of another type: %w", s.Name, ErrExists)
		}
		return nil
	}
	ft.sets[s.Name] = &fakeSet{def: def, elems: map[elemKey]Element{}}
	ft.setOrder = append(ft.setOrder, s.Name)
	return nil
}

func (ft *fakeTable) addChain(c *Chain) error {
	def := *c
	def.body = ""
	if b := c.Base; b != nil {
		bc := *b
		def.Base = &bc
		v := &validator{family: ft.family}
		v.checkBase(&def)
		if len(v.errs) > 0 {
			return v.errs[0]
		}
	}
	if have := ft.chains[c.Name]; have != nil {
		if (have.def.Base == nil) != (def.Base == nil) || (def.Base != nil && *have.def.Base != *def.Base) {
			return fmt.Errorf("chain %s of another type: %w", c.Name, ErrExists)
		}
		return nil
	}
	ft.chains[c.Name] = &fakeChain{def: def}
	ft.chainOrder = append(ft.chainOrder, c.Name)
	return nil
}

// addRules appends rules to chain name, or inserts them at its head,
// checking each against what the table holds at that point of the batch.
func (ft *fakeTable) addRules(name string, rules []string, head bool) error {
	ch := ft.chains[name]
	if ch == nil {
		return fmt.Errorf("chain %s: %w", name, ErrMissing)
	}
	v := ft.validator()
	var added []string
	for i, text := range rules {
		r, err := ParseRule(text)
		if err != nil {
			return fmt.Errorf("rule %d: %w", i+1, err)
		}
		if r.Family != "" && r.Family != ft.family {
			return fmt.Errorf("rule %d: %s rule in an %s table: %w", i+1, r.Family, ft.family, ErrWrongFamily)
		}
		for _, e := range r.Exprs {
			if err := v.checkExpr(e); err != nil {
				return fmt.Errorf("rule %d: %w", i+1, err)
			}
		}
		ft.countRefs(&r, 1)
		added = append(added, text)
	}
	if head {
		ch.rules = append(added, ch.rules...)
	} else {
		ch.rules = append(ch.rules, added...)
	}
	return nil
}

// countRefs adds d to the reference counts of what r refers to.
func (ft *fakeTable) countRefs(r *Rule, d int) {
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case Action:
			if e.Chain != "" {
				ft.chainRefs[e.Chain] += d
			}
		case Numgen:
			for _, a := range e.Actions {
				ft.chainRefs[a.Chain] += d
			}
		case VMap:
			ft.setRefs[e.Map] += d
		case AddrInSet:
			ft.setRefs[e.Set] += d
		case SetUpdate:
			ft.setRefs[e.Set] += d
		}
	}
}

func (ft *fakeTable) flushChain(name string) error {
	ch := ft.chains[name]
	if ch == nil {
		return fmt.Errorf("chain %s: %w", name, ErrMissing)
	}
	for _, text := range ch.rules {
		if r, err := ParseRule(text); err == nil {
			ft.countRefs(&r, -1)
		}
	}
	ch.rules = nil
	return nil
}

func (ft *fakeTable) delChain(name string) error {
	ch := ft.chains[name]
	switch {
	case ch == nil:
		return fmt.Errorf("chain %s: %w", name, ErrMissing)
	case len(ch.rules) > 0:
		return fmt.Errorf("chain %s holds %d rules: %w", name, len(ch.rules), ErrBusy)
	case ft.chainRefs[name] > 0:
		return fmt.Errorf("chain %s is the target of %d rules or elements: %w", name, ft.chainRefs[name], ErrBusy)
	}
	delete(ft.chains, name)
	delete(ft.chainRefs, name)
	ft.chainOrder = slices.DeleteFunc(ft.chainOrder, func(n string) bool { return n == name })
	return nil
}

func (ft *fakeTable) addElems(name string, elems []Element) error {
	s := ft.sets[name]
	if s == nil {
		return fmt.Errorf("set %s: %w", name, ErrMissing)
	}
	v := ft.validator()
	for i := range elems {
		e := elems[i]
		if err := v.checkElement(&s.def, &e); err != nil {
			return fmt.Errorf("element %s: %w", AppendElement(nil, &s.def, &e), err)
		}
		k := elemKey{e.Addr, e.Proto, e.Port}
		if have, ok := s.elems[k]; ok {
			if have.Action != e.Action {
				return fmt.Errorf("element %s: %w", AppendElement(nil, &s.def, &e), ErrExists)
			}
			continue
		}
		s.elems[k] = e
		if e.Action.Chain != "" {
			ft.chainRefs[e.Action.Chain]++
		}
	}
	return nil
}

func (ft *fakeTable) delElems(name string, elems []Element) error {
	s := ft.sets[name]
	if s == nil {
		return fmt.Errorf("set %s: %w", name, ErrMissing)
	}
	for i := range elems {
		k := elemKey{elems[i].Addr, elems[i].Proto, elems[i].Port}
		have, ok := s.elems[k]
		if !ok {
			return fmt.Errorf("element %s: %w", AppendElement(nil, &s.def, &elems[i]), ErrMissing)
		}
		if have.Action.Chain != "" {
			ft.chainRefs[have.Action.Chain]--
		}
		delete(s.elems, k)
	}
	return nil
}

func (ft *fakeTable) flushSet(name string) error {
	s := ft.sets[name]
	if s == nil {
		return fmt.Errorf("set %s: %w", name, ErrMissing)
	}
	for _, e := range s.elems {
		if e.Action.Chain != "" {
			ft.chainRefs[e.Action.Chain]--
		}
	}
	clear(s.elems)
	return nil
}

func (ft *fakeTable) delSet(name string) error {
	if err := ft.flushSet(name); err != nil {
		return err
	}
	if n := ft.setRefs[name]; n > 0 {
		return fmt.Errorf("set %s is used by %d rules: %w", name, n, ErrBusy)
	}
	delete(ft.sets, name)
	delete(ft.setRefs, name)
	ft.setOrder = slices.DeleteFunc(ft.setOrder, func(n string) bool { return n == name })
	return nil
}

// observe reads table key as a verification by the kernel applier does.
func (f *Fake) observe(key tableKey) *observed {
	ft := f.tables[key]
	if ft == nil {
		return &observed{}
	}
	o := &observed{exists: true, handle: ft.handle, chains: make(map[string]observedChain, len(ft.chains)), sets: make(map[string]int, len(ft.sets))}
	for n, c := range ft.chains {
		o.chains[n] = observedChain{base: c.def.Base != nil, rules: len(c.rules)}
	}
	for n, s := range ft.sets {
		o.sets[n] = len(s.elems)
		if s.def.HasFlag(SetFlagDynamic) {
			o.sets[n] = -1
		}
	}
	return o
}

// Cleanup deletes the tables named DefaultTableName of both families and
// every table f applied, in one batch, leaving other tables alone.
func (f *Fake) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return &ApplyError{Op: "cleanup", Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	owned := map[tableKey]bool{{IPv4, DefaultTableName}: true, {IPv6, DefaultTableName}: true}
	for k := range f.applied {
		owned[k] = true
	}
	n := 0
	for k := range owned {
		if f.tables[k] != nil {
			f.store(k, nil)
			n++
		}
	}
	clear(f.applied)
	if n > 0 {
		f.stats.Batches++
		f.stats.Messages += n
		f.gen++
	}
	return nil
}

// DeleteTable deletes a table as another program would ("nft delete
// table FAMILY NAME"). It reports [ErrMissing] when there is none.
func (f *Fake) DeleteTable(family Family, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tableKey{family, name}
	if f.tables[k] == nil {
		return fmt.Errorf("table %s %s: %w", family, name, ErrMissing)
	}
	f.store(k, nil)
	f.gen++
	return nil
}

// FlushChain deletes every rule of a chain as another program would
// ("nft flush chain FAMILY TABLE CHAIN"). It reports [ErrMissing] when
// the table or chain does not exist.
func (f *Fake) FlushChain(family Family, table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.tables[tableKey{family, table}]
	if ft == nil {
		return fmt.Errorf("table %s %s: %w", family, table, ErrMissing)
	}
	if err := ft.flushChain(chain); err != nil {
		return err
	}
	f.gen++
	return nil
}

// Load writes p's table as another program would ("nft -f" of p's text):
// the table is replaced, in one batch that Stats does not count, and f
// does not take it as applied. It refuses a plan that fails
// [Plan.Validate].
func (f *Fake) Load(p *Plan) error {
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Table: p.Table, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	stats := f.stats
	applied := maps.Clone(f.applied)
	err := f.commit(keyOf(p), p.Table, fullBatch(p, "load"))
	// An outside change leaves the applier's tables unverified.
	for k, a := range applied {
		a.gen = f.gen - 1
		f.applied[k] = a
	}
	f.stats = stats
	return err
}

// Dump returns every table in the style of "nft list ruleset": tables in
// creation order, each with its sets and maps (elements sorted by key)
// and then its chains with their rules, one per line, in their plan text.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, k := range f.order {
		f.tables[k].dump(&b, k)
	}
	return b.String()
}

func (ft *fakeTable) dump(b *strings.Builder, k tableKey) {
	fmt.Fprintf(b, "table %s %s {\n", k.family, k.name)
	if ft.comment != "" {
		fmt.Fprintf(b, "\tcomment %q\n", ft.comment)
	}
	for _, n := range ft.setOrder {
		ft.sets[n].dump(b)
	}
	for _, n := range ft.chainOrder {
		c := ft.chains[n]
		fmt.Fprintf(b, "\tchain %s {\n", n)
		if bc := c.def.Base; bc != nil {
			fmt.Fprintf(b, "\t\ttype %s hook %s priority %d; policy accept;\n", bc.Type, bc.Hook, bc.Priority)
		}
		if c.def.Comment != "" {
			fmt.Fprintf(b, "\t\tcomment %q\n", c.def.Comment)
		}
		for _, r := range c.rules {
			b.WriteString("\t\t" + r + "\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}

func (s *fakeSet) dump(b *strings.Builder) {
	kind := "set"
	if s.def.IsMap() {
		kind = "map"
	}
	fmt.Fprintf(b, "\t%s %s {\n\t\ttype ", kind, s.def.Name)
	for i, t := range s.def.Key {
		if i > 0 {
			b.WriteString(" . ")
		}
		b.WriteString(string(t))
	}
	if s.def.IsMap() {
		b.WriteString(" : verdict")
	}
	b.WriteByte('\n')
	if len(s.def.Flags) > 0 {
		fl := make([]string, len(s.def.Flags))
		for i, x := range s.def.Flags {
			fl[i] = string(x)
		}
		b.WriteString("\t\tflags " + strings.Join(fl, ",") + "\n")
	}
	if s.def.Timeout > 0 {
		b.WriteString("\t\ttimeout " + strconv.FormatInt(int64(s.def.Timeout.Seconds()), 10) + "s\n")
	}
	if s.def.Comment != "" {
		fmt.Fprintf(b, "\t\tcomment %q\n", s.def.Comment)
	}
	if len(s.elems) > 0 {
		es := slices.SortedFunc(maps.Values(s.elems), func(x, y Element) int {
			return cmp.Or(x.Addr.Compare(y.Addr), cmp.Compare(x.Proto, y.Proto), cmp.Compare(x.Port, y.Port))
		})
		b.WriteString("\t\telements = {\n")
		for i := range es {
			b.WriteString("\t\t\t" + string(AppendElement(nil, &s.def, &es[i])) + ",\n")
		}
		b.WriteString("\t\t}\n")
	}
	b.WriteString("\t}\n")
}
