package ipset

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
)

// This file holds what the kernel applier and the Fake share: reading the
// sets, computing the difference from a plan, and the order of the
// writes. Each backend provides a store of sets that behaves like the
// kernel's.

// store is the kernel's ipset state, or a Fake's.
type store interface {
	// list returns every set with its members.
	list() (map[string]*liveSet, error)
	// create makes set name with the definition of s, empty.
	create(s *Set, name string) error
	// add adds e to set name (of s's type and family); an existing
	// member is not an error.
	add(s *Set, name string, e Entry) error
	// del deletes e from set name; a missing member is not an error.
	del(s *Set, name string, e Entry) error
	// swap exchanges the contents of sets a and b.
	swap(a, b string) error
	// destroy destroys set name.
	destroy(name string) error
}

// liveSet is a set as read back: its definition (no Entries) and members.
type liveSet struct {
	def Set
	// maxElem is the most members the set can hold; 0 means no limit
	// (bitmap sets, the Fake).
	maxElem int
	members map[Entry]struct{}
}

// syncer applies plans to one store for one applier.
type syncer struct {
	st     store
	prefix string
	log    *slog.Logger
	stats  *Stats
	// applied is the plan the applier last applied, by set name.
	applied map[string]*Set
	// names are the sets the applier's plans named that it has not
	// destroyed since: owned whatever their prefix.
	names map[string]bool
}

// syncState is what one Apply or Cleanup works with.
type syncState struct {
	*syncer
	ctx  context.Context
	live map[string]*liveSet
	ops  int
}

func (s *syncer) begin(ctx context.Context) (*syncState, error) {
	live, err := s.st.list()
	s.stats.Reads++
	if err != nil {
		return nil, &ApplyError{Op: "list", Err: err}
	}
	return &syncState{syncer: s, ctx: ctx, live: live}, nil
}

// apply makes the store hold p, as [Applier.Apply] describes.
func (s *syncer) apply(ctx context.Context, p *Plan) error {
	s.stats.Applies++
	s.stats.LastOperations = 0
	st, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer func() { s.stats.LastOperations = st.ops }()
	want := make(map[string]*Set, len(p.Sets))
	type pending struct {
		set  *Set
		dels []Entry
	}
	var later []pending
	for i := range p.Sets {
		set := &p.Sets[i]
		want[set.Name] = set
		dels, err := st.ensure(set)
		if err != nil {
			return err
		}
		if len(dels) > 0 {
			later = append(later, pending{set, dels})
		}
	}
	for _, d := range later {
		for _, e := range d.dels {
			if err := st.write("del", d.set.Name, d.set.Type, e, func() error { return s.st.del(d.set, d.set.Name, e) }); err != nil {
				return err
			}
		}
	}
	s.applied = make(map[string]*Set, len(p.Sets))
	if s.names == nil {
		s.names = map[string]bool{}
	}
	for i := range p.Sets {
		s.applied[p.Sets[i].Name] = copySet(&p.Sets[i])
		s.names[p.Sets[i].Name] = true
	}
	return st.destroyStale(want)
}

// cleanup destroys every owned set.
func (s *syncer) cleanup(ctx context.Context) error {
	s.stats.LastOperations = 0
	st, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer func() { s.stats.LastOperations = st.ops }()
	err = st.destroyStale(nil)
	s.applied = nil
	return err
}

// owned tells whether the applier may destroy set name.
func (s *syncer) owned(name string) bool {
	if s.names[name] {
		return true
	}
	if s.prefix != "" && strings.HasPrefix(name, s.prefix) {
		return true
	}
	return strings.HasPrefix(name, tempPrefix(s.prefix))
}

// destroyStale destroys the owned sets that are not in want. A set still
// in use is left, logged and counted in Stats.InUse; an Apply tries again
// next time, a Cleanup reports it.
func (st *syncState) destroyStale(want map[string]*Set) error {
	names := make([]string, 0, len(st.live))
	for name := range st.live {
		if _, keep := want[name]; !keep && st.owned(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	st.stats.InUse = 0
	var busy []error
	for _, name := range names {
		err := st.write("destroy", name, "", Entry{}, func() error { return st.st.destroy(name) })
		if errors.Is(err, ErrSetInUse) {
			st.stats.InUse++
			st.log.Info("ipset set no longer planned is still in use; leaving it", "set", name)
			busy = append(busy, err)
			continue
		}
		if err != nil {
			return err
		}
		st.stats.Destroys++
		delete(st.names, name)
	}
	if want == nil {
		return errors.Join(busy...)
	}
	return nil
}

// ensure makes set exist with every member of s, returning the members
// to delete afterwards.
func (st *syncState) ensure(s *Set) ([]Entry, error) {
	l := st.live[s.Name]
	st.noteDrift(s.Name, l)
	if l == nil {
		if err := st.create(s, s.Name); err != nil {
			return nil, err
		}
		return nil, st.fill(s, s.Name, s.Entries)
	}
	if !sameDefinition(l, s) {
		return nil, st.rebuild(s, l)
	}
	var adds, dels []Entry
	want := make(map[Entry]struct{}, len(s.Entries))
	for _, e := range s.Entries {
		want[e] = struct{}{}
		if _, ok := l.members[e]; !ok {
			adds = append(adds, e)
		}
	}
	for e := range l.members {
		if _, ok := want[e]; !ok {
			dels = append(dels, e)
		}
	}
	if len(adds)+len(dels) > len(s.Entries)+swapOverhead {
		return nil, st.rebuild(s, l)
	}
	slices.SortFunc(dels, Entry.Compare)
	return dels, st.fill(s, s.Name, adds)
}

// noteDrift counts and logs a set this applier applied that is not as it
// left it.
func (st *syncState) noteDrift(name string, l *liveSet) {
	a := st.applied[name]
	if a == nil {
		return
	}
	why := ""
	switch {
	case l == nil:
		why = "missing"
	case !sameDefinition(l, a):
		why = "redefined"
	case len(l.members) != len(a.Entries):
		why = "members changed"
	default:
		for _, e := range a.Entries {
			if _, ok := l.members[e]; !ok {
				why = "members changed"
				break
			}
		}
	}
	if why != "" {
		st.stats.Repairs++
		st.log.Info("ipset set changed behind the applier's back; repairing", "set", name, "why", why)
	}
}

// rebuild refills set s through a temporary set swapped in, which is one
// atomic change for the set's users. Sets of another type or family
// cannot be swapped: those are destroyed and created again.
func (st *syncState) rebuild(s *Set, l *liveSet) error {
	st.stats.Rebuilds++
	if l.def.Type != s.Type || (s.Type != TypeBitmapPort && l.def.Family != s.Family) {
		st.log.Info("ipset set has another type or family; recreating", "set", s.Name, "type", l.def.Type, "family", l.def.Family)
		if err := st.write("destroy", s.Name, "", Entry{}, func() error { return st.st.destroy(s.Name) }); err != nil {
			return err
		}
		st.stats.Destroys++
		if err := st.create(s, s.Name); err != nil {
			return err
		}
		return st.fill(s, s.Name, s.Entries)
	}
	tmp := tempName(st.prefix, s.Name)
	st.log.Info("ipset rebuilding set and swapping it in", "set", s.Name, "temporary", tmp, "members", len(s.Entries))
	if _, ok := st.live[tmp]; ok {
		if err := st.write("destroy", tmp, "", Entry{}, func() error { return st.st.destroy(tmp) }); err != nil {
			return err
		}
		st.stats.Destroys++
		delete(st.live, tmp)
	}
	if err := st.create(s, tmp); err != nil {
		return err
	}
	if err := st.fill(s, tmp, s.Entries); err != nil {
		return err
	}
	if err := st.write("swap", s.Name, "", Entry{}, func() error { return st.st.swap(tmp, s.Name) }); err != nil {
		return err
	}
	st.stats.Swaps++
	if err := st.write("destroy", tmp, "", Entry{}, func() error { return st.st.destroy(tmp) }); err != nil {
		return err
	}
	st.stats.Destroys++
	return nil
}

func (st *syncState) create(s *Set, name string) error {
	if err := st.write("create", name, "", Entry{}, func() error { return st.st.create(s, name) }); err != nil {
		return err
	}
	st.stats.Creates++
	return nil
}

// fill adds entries to set name, which has s's definition.
func (st *syncState) fill(s *Set, name string, entries []Entry) error {
	for _, e := range entries {
		if err := st.write("add", name, s.Type, e, func() error { return st.st.add(s, name, e) }); err != nil {
			return err
		}
		st.stats.Adds++
	}
	return nil
}

// write runs one write, counting it, checking the context every so often
// and wrapping its error.
func (st *syncState) write(op, set string, t Type, e Entry, fn func() error) error {
	if st.ops%256 == 0 {
		if err := st.ctx.Err(); err != nil {
			return &ApplyError{Op: op, Set: set, Err: err}
		}
	}
	st.ops++
	st.stats.Operations++
	if op == "del" {
		st.stats.Deletes++
	}
	if err := fn(); err != nil {
		ae := &ApplyError{Op: op, Set: set, Err: err}
		if t != "" {
			ae.Entry = e.String()
		}
		return ae
	}
	return nil
}

// sameDefinition tells whether live set l can hold s's members as s
// defines it.
func sameDefinition(l *liveSet, s *Set) bool {
	d := &l.def
	if d.Type != s.Type || (l.maxElem > 0 && l.maxElem < len(s.Entries)) {
		return false
	}
	if s.Type == TypeBitmapPort {
		return d.PortRange == s.PortRange
	}
	return d.Family == s.Family
}

// tempPrefix starts the names of the temporary sets of an applier with
// owner prefix prefix.
func tempPrefix(prefix string) string {
	if prefix == "" {
		prefix = "SVCPLAN-"
	}
	return prefix + "TMP-"
}

// tempName returns the name of the temporary set that rebuilds set name:
// the temporary prefix and a hash of name, kept within 31 bytes.
func tempName(prefix, name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	p := tempPrefix(prefix)
	if len(p) > MaxNameLen-8 {
		p = p[:MaxNameLen-8]
	}
	return fmt.Sprintf("%s%08X", p, h.Sum32())
}

func copySet(s *Set) *Set {
	c := *s
	c.Entries = slices.Clone(s.Entries)
	return &c
}

// checkMember checks that e fits a set of type t and family f as the
// kernel checks it: the parts the type needs, addresses of the set's
// family, a port inside a bitmap's range r.
func checkMember(t Type, f Family, r PortRange, e Entry) error {
	fam := func(a netip.Addr) error {
		if !a.IsValid() {
			return fmt.Errorf("missing address: %w", ErrEntry)
		}
		if a.Is4In6() || a.Zone() != "" || a.Is6() != (f == IPv6) {
			return fmt.Errorf("%s in a %s set: %w", a, familyName(f), ErrEntryFamily)
		}
		return nil
	}
	proto := func() error {
		switch e.Protocol {
		case TCP, UDP, SCTP:
			return nil
		}
		return fmt.Errorf("protocol %q: %w", e.Protocol, ErrEntry)
	}
	switch t {
	case TypeBitmapPort:
		if e.IP.IsValid() || e.IP2.IsValid() || e.Net.IsValid() {
			return fmt.Errorf("address in a bitmap:port set: %w", ErrEntry)
		}
		if e.Port < r.First || e.Port > r.Last {
			return fmt.Errorf("port %d outside %d-%d: %w", e.Port, r.First, r.Last, ErrEntry)
		}
		return nil
	case TypeHashIP:
		if e.Protocol != "" || e.Port != 0 || e.IP2.IsValid() || e.Net.IsValid() {
			return fmt.Errorf("port or second part in a hash:ip set: %w", ErrEntry)
		}
		return fam(e.IP)
	case TypeHashIPPort, TypeHashIPPortIP, TypeHashIPPortNet:
	default:
		return fmt.Errorf("set type %q: %w", t, ErrEntry)
	}
	if err := errors.Join(fam(e.IP), proto()); err != nil {
		return err
	}
	switch {
	case t == TypeHashIPPort && (e.IP2.IsValid() || e.Net.IsValid()):
		return fmt.Errorf("second part in a hash:ip,port set: %w", ErrEntry)
	case t == TypeHashIPPortIP && e.Net.IsValid():
		return fmt.Errorf("network in a hash:ip,port,ip set: %w", ErrEntry)
	case t == TypeHashIPPortIP:
		return fam(e.IP2)
	case t == TypeHashIPPortNet && e.IP2.IsValid():
		return fmt.Errorf("second address in a hash:ip,port,net set: %w", ErrEntry)
	case t == TypeHashIPPortNet:
		if err := fam(e.Net.Addr()); err != nil {
			return err
		}
		if e.Net != e.Net.Masked() {
			return fmt.Errorf("network %s has host bits set: %w", e.Net, ErrEntry)
		}
	}
	return nil
}

func familyName(f Family) string {
	if f == "" {
		return "family-less"
	}
	return string(f)
}
