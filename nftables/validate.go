package nftables

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// maxJumpDepth is the kernel's limit on nested jumps and gotos from a base
// chain (NFT_JUMP_STACK_SIZE).
const maxJumpDepth = 16

// Validate reports what in p nft or the kernel would refuse, every
// problem at once (joined with [errors.Join]), each an [*Error] naming the
// chain and rule or the set and element: a bad family, name or comment; a
// chain or set declared twice; a base chain of an unknown type or hook, or
// of type nat on the forward hook; a rule that does not parse, names the
// other family or uses an address of it; a jump, goto or map verdict to a
// chain that does not exist or is a base chain; a set or map used that
// does not exist or whose type does not fit the use; an element whose key
// does not fit its set or repeats another's; chains that jump to each
// other in a loop or nest deeper than the kernel allows; and dnat,
// masquerade or reject in a chain reached from a hook where the kernel
// refuses it (dnat outside nat prerouting and output, masquerade outside
// nat postrouting and input, reject outside input, forward and output).
func (p *Plan) Validate() error {
	v := validator{p: p, family: p.FamilyOrDefault(), chains: make(map[string]*Chain, len(p.Chains)),
		sets: make(map[string]*Set, len(p.Sets)), rules: make(map[string][]Rule, len(p.Chains))}
	if v.family != IPv4 && v.family != IPv6 {
		v.add(&Error{Err: fmt.Errorf("family %q: %w", v.family, ErrSyntax)})
	}
	if err := checkName(p.TableName()); err != nil {
		v.add(&Error{Err: fmt.Errorf("table: %w", err)})
	}
	if err := checkOptionalComment(p.Table.Comment); err != nil {
		v.add(&Error{Err: fmt.Errorf("table: %w", err)})
	}
	v.declare()
	v.checkChains()
	v.checkSets()
	v.graph()
	return errors.Join(v.errs...)
}

type validator struct {
	p      *Plan
	family Family
	chains map[string]*Chain
	sets   map[string]*Set
	rules  map[string][]Rule
	errs   []error
}

func (v *validator) add(e *Error) {
	e.Op = "validate"
	v.errs = append(v.errs, e)
}

// declare indexes chains and sets, reporting bad and repeated names.
func (v *validator) declare() {
	for i := range v.p.Chains {
		c := &v.p.Chains[i]
		if err := checkName(c.Name); err != nil {
			v.add(&Error{Chain: c.Name, Err: err})
		}
		if err := checkOptionalComment(c.Comment); err != nil {
			v.add(&Error{Chain: c.Name, Err: err})
		}
		if v.chains[c.Name] != nil {
			v.add(&Error{Chain: c.Name, Err: fmt.Errorf("chain declared twice: %w", ErrDuplicate)})
			continue
		}
		v.chains[c.Name] = c
	}
	for i := range v.p.Sets {
		s := &v.p.Sets[i]
		if err := checkName(s.Name); err != nil {
			v.add(&Error{Set: s.Name, Err: err})
		}
		if err := checkOptionalComment(s.Comment); err != nil {
			v.add(&Error{Set: s.Name, Err: err})
		}
		if v.sets[s.Name] != nil {
			v.add(&Error{Set: s.Name, Err: fmt.Errorf("set declared twice: %w", ErrDuplicate)})
			continue
		}
		v.sets[s.Name] = s
	}
}

func (v *validator) checkChains() {
	for i := range v.p.Chains {
		c := &v.p.Chains[i]
		if v.chains[c.Name] != c {
			continue
		}
		if c.Base != nil {
			v.checkBase(c)
		}
		for ri, text := range c.Rules() {
			r, err := ParseRule(text)
			if err != nil {
				v.add(&Error{Chain: c.Name, Rule: ri + 1, Err: err})
				continue
			}
			v.rules[c.Name] = append(v.rules[c.Name], r)
			if r.Family != "" && r.Family != v.family {
				v.add(&Error{Chain: c.Name, Rule: ri + 1, Err: fmt.Errorf("%s rule in an %s table: %w", r.Family, v.family, ErrWrongFamily)})
			}
			if r.Comment != "" {
				if err := checkComment(r.Comment); err != nil {
					v.add(&Error{Chain: c.Name, Rule: ri + 1, Err: err})
				}
			}
			for _, e := range r.Exprs {
				if err := v.checkExpr(e); err != nil {
					v.add(&Error{Chain: c.Name, Rule: ri + 1, Err: err})
				}
			}
		}
	}
}

func (v *validator) checkBase(c *Chain) {
	b := c.Base
	switch b.Hook {
	case HookPrerouting, HookInput, HookForward, HookOutput, HookPostrouting:
	default:
		v.add(&Error{Chain: c.Name, Err: fmt.Errorf("hook %q: %w", b.Hook, ErrSyntax)})
	}
	switch b.Type {
	case ChainTypeFilter:
	case ChainTypeNAT:
		if b.Hook == HookForward {
			v.add(&Error{Chain: c.Name, Err: fmt.Errorf("nat chain on the forward hook: %w", ErrHook)})
		}
	default:
		v.add(&Error{Chain: c.Name, Err: fmt.Errorf("chain type %q: %w", b.Type, ErrSyntax)})
	}
}

// checkExpr checks the references and addresses of one expression.
func (v *validator) checkExpr(e Expr) error {
	addrSet := []DataType{v.family.AddrType()}
	switch e := e.(type) {
	case AddrMatch:
		if len(e.Prefixes) == 0 {
			return fmt.Errorf("address match without an address: %w", ErrSyntax)
		}
		for _, p := range e.Prefixes {
			if !validPrefix(p) {
				return fmt.Errorf("network %s: not masked: %w", p, ErrSyntax)
			}
			if familyOf(p.Addr()) != v.family {
				return fmt.Errorf("address %s: %w", p, ErrWrongFamily)
			}
		}
	case DNAT:
		if familyOf(e.To.Addr()) != v.family {
			return fmt.Errorf("dnat to %s: %w", e.To, ErrWrongFamily)
		}
	case AddrInSet:
		return v.checkSetRef(e.Set, addrSet, false, false)
	case SetUpdate:
		return v.checkSetRef(e.Set, addrSet, false, true)
	case VMap:
		key := make([]DataType, len(e.Key))
		for i, k := range e.Key {
			key[i] = map[KeyField]DataType{KeyDAddr: v.family.AddrType(), KeyL4Proto: TypeInetProto, KeyDPort: TypeInetService}[k]
		}
		return v.checkSetRef(e.Map, key, true, false)
	case Numgen:
		for _, a := range e.Actions {
			if err := v.checkAction(a); err != nil {
				return err
			}
		}
	case Action:
		return v.checkAction(e)
	}
	return nil
}

func (v *validator) checkSetRef(name string, key []DataType, isMap, dynamic bool) error {
	s := v.sets[name]
	switch {
	case s == nil:
		return fmt.Errorf("@%s: %w", name, ErrMissingSet)
	case s.IsMap() != isMap || !slices.Equal(s.Key, key):
		return fmt.Errorf("@%s: used with key %v, has key %v: %w", name, key, s.Key, ErrMissingSet)
	case dynamic && !s.HasFlag(SetFlagDynamic):
		return fmt.Errorf("@%s: updated from a rule but not dynamic: %w", name, ErrMissingSet)
	}
	return nil
}

func (v *validator) checkAction(a Action) error {
	switch a.Kind {
	case ActionAccept, ActionDrop, ActionReturn:
		if a.Chain != "" {
			return fmt.Errorf("%s with a chain: %w", a.Kind, ErrSyntax)
		}
		return nil
	case ActionJump, ActionGoto:
		c := v.chains[a.Chain]
		if c == nil || c.Base != nil {
			return fmt.Errorf("%s: %w", a, ErrMissingChain)
		}
		return nil
	}
	return fmt.Errorf("verdict %q: %w", a.Kind, ErrSyntax)
}

func (v *validator) checkSets() {
	for i := range v.p.Sets {
		s := &v.p.Sets[i]
		if v.sets[s.Name] != s {
			continue
		}
		if err := v.checkSetType(s); err != nil {
			v.add(&Error{Set: s.Name, Err: err})
			continue
		}
		seen := make(map[elemKey]int, len(s.Elements))
		ts := &tset{key: s.Key}
		for j := range s.Elements {
			e := &s.Elements[j]
			if err := v.checkElement(s, e); err != nil {
				v.add(&Error{Set: s.Name, Element: j + 1, Err: err})
				continue
			}
			k := ts.lookupKey(e.Addr, e.Proto, e.Port)
			if first, dup := seen[k]; dup {
				v.add(&Error{Set: s.Name, Element: j + 1, Err: fmt.Errorf("key of element %d: %w", first, ErrDuplicate)})
				continue
			}
			seen[k] = j + 1
		}
	}
}

// checkSetType checks a set's key, value, flags and timeout.
func (v *validator) checkSetType(s *Set) error {
	rank := map[DataType]int{TypeIPv4Addr: 1, TypeIPv6Addr: 1, TypeInetProto: 2, TypeInetService: 3}
	if len(s.Key) == 0 {
		return fmt.Errorf("no key type: %w", ErrSyntax)
	}
	last := 0
	for _, k := range s.Key {
		r := rank[k]
		if r <= last {
			return fmt.Errorf("key %v: want an address, protocol and port type in that order, each at most once: %w", s.Key, ErrSyntax)
		}
		if r == 1 && k != v.family.AddrType() {
			return fmt.Errorf("key type %s in an %s table: %w", k, v.family, ErrWrongFamily)
		}
		last = r
	}
	if s.Value != "" && s.Value != TypeVerdict {
		return fmt.Errorf("value type %q: %w", s.Value, ErrSyntax)
	}
	for _, f := range s.Flags {
		if f != SetFlagDynamic && f != SetFlagTimeout {
			return fmt.Errorf("flag %q: %w", f, ErrSyntax)
		}
	}
	if s.Timeout < 0 || s.Timeout%time.Second != 0 || (s.Timeout > 0) != s.HasFlag(SetFlagTimeout) {
		return fmt.Errorf("timeout %v: want whole seconds, with the timeout flag: %w", s.Timeout, ErrSyntax)
	}
	return nil
}

// checkElement checks that e has exactly the key parts of s, and a
// verdict when s is a map.
func (v *validator) checkElement(s *Set, e *Element) error {
	has := map[DataType]bool{}
	for _, k := range s.Key {
		has[k] = true
	}
	hasAddr := has[TypeIPv4Addr] || has[TypeIPv6Addr]
	switch {
	case e.Addr.IsValid() != hasAddr, e.Proto != "" != has[TypeInetProto], e.Port != 0 != has[TypeInetService]:
		return fmt.Errorf("element parts do not fit key %v: %w", s.Key, ErrSyntax)
	case hasAddr && (familyOf(e.Addr) != v.family || e.Addr.Zone() != ""):
		return fmt.Errorf("address %s: %w", e.Addr, ErrWrongFamily)
	case e.Proto != "" && e.Proto != ProtocolTCP && e.Proto != ProtocolUDP && e.Proto != ProtocolSCTP:
		return fmt.Errorf("protocol %q: %w", e.Proto, ErrSyntax)
	case s.IsMap() != (e.Action != Action{}):
		return fmt.Errorf("verdict %q in a set of value type %q: %w", e.Action, s.Value, ErrSyntax)
	}
	if err := checkOptionalComment(e.Comment); err != nil {
		return err
	}
	if s.IsMap() {
		return v.checkAction(e.Action)
	}
	return nil
}

// edges returns the chains a chain's rules (and the maps they use) may
// jump or go to.
func (v *validator) edges(name string) []string {
	var out []string
	addAction := func(a Action) {
		if (a.Kind == ActionJump || a.Kind == ActionGoto) && v.chains[a.Chain] != nil {
			out = append(out, a.Chain)
		}
	}
	for _, r := range v.rules[name] {
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case Action:
				addAction(e)
			case Numgen:
				for _, a := range e.Actions {
					addAction(a)
				}
			case VMap:
				if s := v.sets[e.Map]; s != nil {
					for _, el := range s.Elements {
						addAction(el.Action)
					}
				}
			}
		}
	}
	return out
}

type hookUse struct {
	typ  ChainType
	hook Hook
}

// graph walks the chains from each base chain, reporting loops, nesting
// deeper than the kernel allows, and statements reached from a hook that
// refuses them.
func (v *validator) graph() {
	edges := make(map[string][]string, len(v.chains))
	for name := range v.chains {
		edges[name] = v.edges(name)
	}
	// uses records, per chain, the hooks it is reached from and the
	// deepest it was reached at (plus one), so that a chain is explored
	// again only when reached deeper.
	uses := map[string]map[hookUse]int{}
	reported := map[string]bool{}
	for i := range v.p.Chains {
		c := &v.p.Chains[i]
		if c.Base == nil || v.chains[c.Name] != c {
			continue
		}
		u := hookUse{c.Base.Type, c.Base.Hook}
		onPath := map[string]bool{}
		var visit func(name string, depth int)
		visit = func(name string, depth int) {
			if onPath[name] || depth > maxJumpDepth {
				if !reported[name] {
					reported[name] = true
					v.add(&Error{Chain: name, Err: fmt.Errorf("reached in a cycle or more than %d jumps deep from %s: %w", maxJumpDepth, c.Name, ErrLoop)})
				}
				return
			}
			if uses[name] == nil {
				uses[name] = map[hookUse]int{}
			} else if uses[name][u] > depth {
				return
			}
			uses[name][u] = depth + 1
			onPath[name] = true
			for _, next := range edges[name] {
				visit(next, depth+1)
			}
			onPath[name] = false
		}
		visit(c.Name, 0)
	}
	v.hookStatements(uses)
}

// hookStatements reports dnat, masquerade and reject in chains reached
// from hooks that refuse them.
func (v *validator) hookStatements(uses map[string]map[hookUse]int) {
	for i := range v.p.Chains {
		c := &v.p.Chains[i]
		for ri, r := range v.rules[c.Name] {
			for _, e := range r.Exprs {
				var ok func(hookUse) bool
				switch e.(type) {
				case DNAT:
					ok = func(u hookUse) bool {
						return u.typ == ChainTypeNAT && (u.hook == HookPrerouting || u.hook == HookOutput)
					}
				case Masquerade:
					ok = func(u hookUse) bool {
						return u.typ == ChainTypeNAT && (u.hook == HookPostrouting || u.hook == HookInput)
					}
				case Reject:
					ok = func(u hookUse) bool { return u.hook == HookInput || u.hook == HookForward || u.hook == HookOutput }
				default:
					continue
				}
				var us []hookUse
				for u := range uses[c.Name] {
					us = append(us, u)
				}
				slices.SortFunc(us, func(a, b hookUse) int { return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(a.hook, b.hook)) })
				for _, u := range us {
					if !ok(u) {
						v.add(&Error{Chain: c.Name, Rule: ri + 1, Err: fmt.Errorf("%s reached from a %s chain on the %s hook: %w",
							string(e.appendText(nil, v.family)), u.typ, u.hook, ErrHook)})
						break
					}
				}
			}
		}
	}
}

// validPrefix reports whether p is a valid prefix with no host bits set.
func validPrefix(p netip.Prefix) bool { return p.IsValid() && p == p.Masked() }
