package ipset

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory stand-in for a network namespace's ipsets, for
// tests of code that applies plans. It applies plans the way the [Kernel]
// applier does, with the same reads and the same writes, which [Stats]
// counts, and refuses what the kernel refuses, with the same sentinel
// errors inside an [*ApplyError]: a plan that fails [Plan.Validate];
// creating a set whose name is taken; a change to a set that does not
// exist; a member of the wrong address family ([ErrEntryFamily]) or not
// fitting its set's type or range ([ErrEntry]); swapping sets of
// different types or families; destroying a set that is referenced
// ([Fake.SetReferences]).
//
// [Fake.Load], [Fake.Destroy] and [Fake.Delete] change the sets as
// another program would; the next Apply finds and repairs the change.
//
// The zero value is not usable; call [NewFake]. A Fake is safe for
// concurrent use.
type Fake struct {
	mu    sync.Mutex
	sets  map[string]*fakeSet
	sync  syncer
	stats Stats
}

type fakeSet struct {
	def     Set
	members map[Entry]struct{}
	refs    int
}

// NewFake returns a Fake without sets. [WithLogger] and
// [WithOwnerPrefix] have their effect; the namespace options are accepted
// for the symmetry with [New] and ignored.
func NewFake(opts ...Option) *Fake {
	cfg := newConfig(opts)
	f := &Fake{sets: map[string]*fakeSet{}}
	f.sync = syncer{st: fakeStore{f}, prefix: cfg.prefix, log: cfg.logger, stats: &f.stats}
	return f
}

// Stats returns what f did so far.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Apply makes f's sets hold p, as the [Kernel] applier does.
func (f *Fake) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrNoSuchSet)}
	}
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sync.apply(ctx, p)
}

// Cleanup destroys every set f owns, as the [Kernel] applier does.
func (f *Fake) Cleanup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sync.cleanup(ctx)
}

// Dump returns f's sets as a Plan: sets by name, members sorted.
func (f *Fake) Dump() *Plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &Plan{}
	for _, name := range slices.Sorted(maps.Keys(f.sets)) {
		s := f.sets[name]
		set := s.def
		set.Entries = slices.SortedFunc(maps.Keys(s.members), Entry.Compare)
		p.Sets = append(p.Sets, set)
	}
	return p
}

// String returns f's sets as "ipset restore" text (see [Plan.String] and
// [Fake.Dump]).
func (f *Fake) String() string { return f.Dump().String() }

// Load adds p's sets and members to f as "ipset restore -exist" would:
// missing sets are created, members added, nothing removed. It is how a
// test plays another program; the sets of p need not be owned.
func (f *Fake) Load(p *Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := fakeStore{f}
	var errs []error
	for i := range p.Sets {
		s := &p.Sets[i]
		if _, ok := f.sets[s.Name]; !ok {
			if err := st.create(s, s.Name); err != nil {
				errs = append(errs, &ApplyError{Op: "create", Set: s.Name, Err: err})
				continue
			}
		}
		for _, e := range s.Entries {
			if err := st.add(s, s.Name, e); err != nil {
				errs = append(errs, &ApplyError{Op: "add", Set: s.Name, Entry: e.String(), Err: err})
			}
		}
	}
	return errors.Join(errs...)
}

// Destroy destroys set name as another program would.
func (f *Fake) Destroy(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := (fakeStore{f}).destroy(name); err != nil {
		return &ApplyError{Op: "destroy", Set: name, Err: err}
	}
	return nil
}

// Delete deletes member e from set name as another program would.
func (f *Fake) Delete(name string, e Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return &ApplyError{Op: "del", Set: name, Entry: e.String(), Err: ErrNoSuchSet}
	}
	delete(s.members, e)
	return nil
}

// SetReferences sets the number of kernel rules that refer to set name,
// as iptables rules with "-m set --match-set" do; a referenced set cannot
// be destroyed.
func (f *Fake) SetReferences(name string, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return &ApplyError{Op: "reference", Set: name, Err: ErrNoSuchSet}
	}
	s.refs = n
	return nil
}

// fakeStore is the store of a Fake, whose lock the caller holds.
type fakeStore struct{ f *Fake }

func (fs fakeStore) list() (map[string]*liveSet, error) {
	live := make(map[string]*liveSet, len(fs.f.sets))
	for name, s := range fs.f.sets {
		live[name] = &liveSet{def: s.def, members: maps.Clone(s.members)}
	}
	return live, nil
}

func (fs fakeStore) create(s *Set, name string) error {
	switch {
	case fs.f.sets[name] != nil:
		return ErrSetExists
	case name == "" || len(name) > MaxNameLen || strings.ContainsAny(name, " \t\n\"'"):
		return fmt.Errorf("set name %q: %w", name, ErrEntry)
	}
	def := Set{Name: name, Type: s.Type, Family: s.Family, PortRange: s.PortRange, Comment: s.Comment}
	if s.Type == TypeBitmapPort {
		def.Family = ""
	} else {
		def.PortRange = PortRange{}
		if s.Family != IPv4 && s.Family != IPv6 {
			return fmt.Errorf("family %q: %w", s.Family, ErrEntryFamily)
		}
	}
	fs.f.sets[name] = &fakeSet{def: def, members: map[Entry]struct{}{}}
	return nil
}

func (fs fakeStore) add(_ *Set, name string, e Entry) error {
	s := fs.f.sets[name]
	if s == nil {
		return ErrNoSuchSet
	}
	if err := checkMember(s.def.Type, s.def.Family, s.def.PortRange, e); err != nil {
		return err
	}
	s.members[e] = struct{}{}
	return nil
}

func (fs fakeStore) del(_ *Set, name string, e Entry) error {
	s := fs.f.sets[name]
	if s == nil {
		return ErrNoSuchSet
	}
	if err := checkMember(s.def.Type, s.def.Family, s.def.PortRange, e); err != nil {
		return err
	}
	delete(s.members, e)
	return nil
}

func (fs fakeStore) swap(a, b string) error {
	sa, sb := fs.f.sets[a], fs.f.sets[b]
	switch {
	case sa == nil || sb == nil:
		return ErrNoSuchSet
	case sa.def.Type != sb.def.Type || sa.def.Family != sb.def.Family:
		return ErrIncompatible
	}
	// The kernel swaps the sets' contents and definitions, not their
	// names or the references to them.
	sa.def, sb.def = sb.def, sa.def
	sa.def.Name, sb.def.Name = a, b
	sa.members, sb.members = sb.members, sa.members
	return nil
}

func (fs fakeStore) destroy(name string) error {
	s := fs.f.sets[name]
	switch {
	case s == nil:
		return ErrNoSuchSet
	case s.refs > 0:
		return ErrSetInUse
	}
	delete(fs.f.sets, name)
	return nil
}
