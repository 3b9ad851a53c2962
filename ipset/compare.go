package ipset

import (
	"cmp"
	"slices"
)

// Compare orders entries by IP, Protocol, Port, IP2 and Net, in that
// order; it returns -1, 0 or +1. Addresses compare as [netip.Addr.Compare]
// does (IPv4 before IPv6), protocols by name.
func (e Entry) Compare(o Entry) int {
	if c := e.IP.Compare(o.IP); c != 0 {
		return c
	}
	if c := cmp.Compare(e.Protocol, o.Protocol); c != 0 {
		return c
	}
	if c := cmp.Compare(e.Port, o.Port); c != 0 {
		return c
	}
	if c := e.IP2.Compare(o.IP2); c != 0 {
		return c
	}
	if c := e.Net.Addr().Compare(o.Net.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(e.Net.Bits(), o.Net.Bits())
}

// SortEntries sorts entries in place by [Entry.Compare] and removes
// duplicates, returning the shortened slice.
func SortEntries(entries []Entry) []Entry {
	if !slices.IsSortedFunc(entries, Entry.Compare) {
		slices.SortFunc(entries, Entry.Compare)
	}
	return slices.Compact(entries)
}

// Equal reports whether s and o are the same set with the same members:
// name, type, family, port range and entries. Comment is not compared: it
// is not stored in the kernel, so a Plan parsed from "ipset save" output
// has none.
func (s *Set) Equal(o *Set) bool {
	return s.Name == o.Name && s.Type == o.Type && s.Family == o.Family &&
		s.PortRange == o.PortRange && slices.Equal(s.Entries, o.Entries)
}

// Set returns the set named name, or nil.
func (p *Plan) Set(name string) *Set {
	for i := range p.Sets {
		if p.Sets[i].Name == name {
			return &p.Sets[i]
		}
	}
	return nil
}

// Contains reports whether e is a member of s. The entries must be sorted
// (see [SortEntries]).
func (s *Set) Contains(e Entry) bool {
	_, ok := slices.BinarySearchFunc(s.Entries, e, Entry.Compare)
	return ok
}

// Len returns the number of members across all sets of p.
func (p *Plan) Len() int {
	n := 0
	for i := range p.Sets {
		n += len(p.Sets[i].Entries)
	}
	return n
}
