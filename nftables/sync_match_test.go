package nftables

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// chainsNamed returns a plan whose chains have the given names.
func chainsNamed(names ...string) *Plan {
	p := &Plan{}
	for _, n := range names {
		p.Chains = append(p.Chains, Chain{Name: n})
	}
	return p
}

// matchByName is the reference matchChains must agree with.
func matchByName(applied, p *Plan) []int {
	match := make([]int, len(p.Chains))
	for i := range p.Chains {
		match[i] = slices.IndexFunc(applied.Chains, func(c Chain) bool { return c.Name == p.Chains[i].Name })
	}
	return match
}

func seq(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return s
}

func TestMatchChains(t *testing.T) {
	base := seq("c", 100)
	with := func(edit func([]string) []string) []string { return edit(slices.Clone(base)) }
	tests := []struct {
		name     string
		applied  []string
		next     []string
		wantFast bool // whether matchNearby should manage without an index
	}{
		{"same", base, base, true},
		{"empty to some", nil, seq("c", 3), true},
		{"some to empty", seq("c", 3), nil, true},
		{"one inserted", base, with(func(s []string) []string { return slices.Insert(s, 40, "new") }), true},
		{"one removed", base, with(func(s []string) []string { return slices.Delete(s, 40, 41) }), true},
		{"one replaced", base, with(func(s []string) []string { s[40] = "new"; return s }), true},
		{"endpoint moved: added here, removed there", base,
			with(func(s []string) []string { return slices.Insert(slices.Delete(s, 45, 46), 41, "new") }), true},
		{"appended", base, append(slices.Clone(base), "x1", "x2"), true},
		{"moved near", base, with(func(s []string) []string { s[10], s[12] = s[12], s[10]; return s }), false},
		{"several replaced", base, with(func(s []string) []string { s[3], s[50], s[51] = "x", "y", "z"; return s }), true},
		{"moved far", base, with(func(s []string) []string { s[5], s[90] = s[90], s[5]; return s }), false},
		{"many inserted", base, with(func(s []string) []string { return slices.Insert(s, 10, seq("n", 40)...) }), false},
		{"reversed", base, with(func(s []string) []string { slices.Reverse(s); return s }), false},
		{"all new", base, seq("n", 100), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			applied, p := chainsNamed(tt.applied...), chainsNamed(tt.next...)
			want := matchByName(applied, p)
			if diff := cmp.Diff(want, matchChains(applied, p)); diff != "" {
				t.Errorf("matchChains differs from matching by name (-want +got):\n%s", diff)
			}
			fast, ok := matchNearby(applied, p)
			if ok != tt.wantFast {
				t.Errorf("matchNearby ok = %v, want %v", ok, tt.wantFast)
			}
			if ok {
				if diff := cmp.Diff(want, fast); diff != "" {
					t.Errorf("matchNearby differs from matching by name (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestMatchChainsRandom holds matchChains to matching by name over random
// edits of a chain list: removals, insertions and moves, near and far.
func TestMatchChainsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		applied := seq("c", 1+r.IntN(60))
		next := slices.Clone(applied)
		for range 1 + r.IntN(4) {
			switch i := r.IntN(len(next) + 1); r.IntN(3) {
			case 0:
				if i < len(next) {
					next = slices.Delete(next, i, i+1)
				}
			case 1:
				next = slices.Insert(next, i, fmt.Sprintf("n%d-%d", n, i))
			default:
				if j := r.IntN(len(next) + 1); i < len(next) && j < len(next) {
					next[i], next[j] = next[j], next[i]
				}
			}
		}
		a, p := chainsNamed(applied...), chainsNamed(next...)
		if diff := cmp.Diff(matchByName(a, p), matchChains(a, p)); diff != "" {
			t.Fatalf("matchChains(%v, %v) differs from matching by name (-want +got):\n%s", applied, next, diff)
		}
	}
}
