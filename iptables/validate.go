package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Validate reports what in p the kernel or iptables-restore would refuse,
// every problem at once (joined with [errors.Join]), each an [*Error]
// naming the table, chain and rule: a table unknown or appearing twice; a
// chain name that is invalid, too long, declared twice or that of a
// built-in chain or target; a rule that does not split into arguments; a
// jump (-j or -g) to a chain that is not owned in the same table and is
// not a built-in target; a target not allowed in the table (DNAT, SNAT,
// MASQUERADE or REDIRECT outside nat, REJECT in nat, CT or NOTRACK outside
// raw); chains that jump to each other in a loop; a Jump from a chain that
// is not a built-in chain of its table, to a target that is not owned, or
// with an argument that cannot be written; and an address of the other
// family.
func (p *Plan) Validate() error {
	v := validator{p: p, family: p.FamilyOrDefault()}
	if v.family != IPv4 && v.family != IPv6 {
		v.add(&Error{Op: "validate", Err: fmt.Errorf("family %q: %w", p.Family, ErrSyntax)})
	}
	v.tables()
	v.jumps()
	return errors.Join(v.errs...)
}

type validator struct {
	p      *Plan
	family Family
	errs   []error
}

func (v *validator) add(e *Error) {
	e.Op = "validate"
	v.errs = append(v.errs, e)
}

func (v *validator) tables() {
	var seen []Table
	for ti := range v.p.Tables {
		tc := &v.p.Tables[ti]
		t := tc.Table
		if builtinChains(t) == nil {
			v.add(&Error{Table: t, Err: fmt.Errorf("unknown table: %w", ErrSyntax)})
		}
		if oneOfTable(t, seen) {
			v.add(&Error{Table: t, Err: ErrDuplicateTable})
			continue
		}
		seen = append(seen, t)
		names := make(map[string]bool, len(tc.Chains))
		for ci := range tc.Chains {
			c := &tc.Chains[ci]
			if err := checkOwnedName(t, c.Name); err != nil {
				v.add(&Error{Table: t, Chain: c.Name, Err: err})
			}
			if names[c.Name] {
				v.add(&Error{Table: t, Chain: c.Name, Err: ErrDuplicateChain})
			}
			names[c.Name] = true
		}
		graph := map[string][]string{}
		for ci := range tc.Chains {
			c := &tc.Chains[ci]
			for ri, rule := range c.Rules() {
				target, err := v.rule(t, names, rule)
				if err != nil {
					v.add(&Error{Table: t, Chain: c.Name, Rule: ri + 1, Err: err})
				}
				if names[target] {
					graph[c.Name] = append(graph[c.Name], target)
				}
			}
		}
		v.loops(t, tc.Chains, graph)
	}
}

// checkOwnedName reports a name that an owned chain of table t cannot
// have.
func checkOwnedName(t Table, name string) error {
	if err := checkChainName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrChainName, err)
	}
	if slices.Contains(builtinChains(t), name) || builtinTarget(name) {
		return fmt.Errorf("%w: %q is a built-in chain or target", ErrChainName, name)
	}
	return nil
}

// builtinTarget reports whether name is a target extension a plan may
// use.
func builtinTarget(name string) bool {
	switch name {
	case "ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "REDIRECT",
		"MARK", "LOG", "CONNMARK", "NOTRACK", "CT":
		return true
	}
	return false
}

// rule checks one rule of table t given as text, returning its target.
func (v *validator) rule(t Table, owned map[string]bool, text string) (string, error) {
	args, err := SplitArgs(text)
	if err != nil {
		return "", err
	}
	return v.args(t, owned, args)
}

// args checks a rule's arguments, returning its target.
func (v *validator) args(t Table, owned map[string]bool, args []string) (string, error) {
	var errs []error
	target := ""
	for i := 0; i+1 < len(args); i++ {
		opt, val := args[i], args[i+1]
		switch opt {
		case "-j", "--jump", "-g", "--goto":
			target = val
			if err := checkTarget(t, owned, val, opt == "-g" || opt == "--goto"); err != nil {
				errs = append(errs, err)
			}
		case "-s", "--source", "--src", "-d", "--destination", "--dst":
			pfx, err := parseAddrPrefix(val)
			if err == nil && familyOf(pfx.Addr()) != v.family {
				err = fmt.Errorf("%s %s in an %s plan: %w", opt, val, v.family, ErrWrongFamily)
			}
			if err != nil {
				errs = append(errs, err)
			}
		case "--to-destination", "--to-source":
			ap, err := parseNATAddr(val)
			if err == nil && familyOf(ap.Addr()) != v.family {
				err = fmt.Errorf("%s %s in an %s plan: %w", opt, val, v.family, ErrWrongFamily)
			}
			if err != nil {
				errs = append(errs, err)
			}
		default:
			continue
		}
		i++
	}
	return target, errors.Join(errs...)
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// checkTarget reports a target that cannot be used in table t.
func checkTarget(t Table, owned map[string]bool, target string, isGoto bool) error {
	if owned[target] {
		return nil
	}
	if !builtinTarget(target) {
		return fmt.Errorf("target %q: %w", target, ErrMissingChain)
	}
	if isGoto {
		return fmt.Errorf("goto %q: only owned chains: %w", target, ErrInvalidTarget)
	}
	allowed := true
	switch target {
	case "DNAT", "SNAT", "MASQUERADE", "REDIRECT":
		allowed = t == TableNAT
	case "REJECT":
		allowed = t != TableNAT
	case "CT", "NOTRACK":
		allowed = t == TableRaw
	}
	if !allowed {
		return fmt.Errorf("target %s in table %s: %w", target, t, ErrInvalidTarget)
	}
	return nil
}

// loops reports each cycle of jumps among the chains of table t once.
func (v *validator) loops(t Table, chains []Chain, graph map[string][]string) {
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string)
	visit = func(c string) {
		state[c] = active
		stack = append(stack, c)
		for _, next := range graph[c] {
			switch state[next] {
			case unseen:
				visit(next)
			case active:
				i := slices.Index(stack, next)
				cycle := append(slices.Clone(stack[i:]), next)
				v.add(&Error{Table: t, Chain: next, Err: fmt.Errorf("%v: %w", cycle, ErrLoop)})
			}
		}
		stack = stack[:len(stack)-1]
		state[c] = done
	}
	for i := range chains {
		if state[chains[i].Name] == unseen {
			visit(chains[i].Name)
		}
	}
}

func (v *validator) jumps() {
	owned := map[Table]map[string]bool{}
	for _, tc := range v.p.Tables {
		if owned[tc.Table] != nil {
			continue
		}
		m := make(map[string]bool, len(tc.Chains))
		for i := range tc.Chains {
			m[tc.Chains[i].Name] = true
		}
		owned[tc.Table] = m
	}
	for i, j := range v.p.Jumps {
		e := &Error{Table: j.Table, Chain: j.Chain, Rule: v.p.jumpPosition(i)}
		var errs []error
		if builtinChains(j.Table) == nil {
			errs = append(errs, fmt.Errorf("unknown table: %w", ErrSyntax))
		} else if !slices.Contains(builtinChains(j.Table), j.Chain) {
			errs = append(errs, fmt.Errorf("jump from %q, not a built-in chain of table %s: %w",
				j.Chain, j.Table, ErrInvalidTarget))
		}
		if err := checkJump(j); err != nil {
			errs = append(errs, err)
		} else if j.Target != "" && !owned[j.Table][j.Target] {
			errs = append(errs, fmt.Errorf("target %q: not an owned chain: %w", j.Target, ErrMissingChain))
		}
		if _, err := v.args(j.Table, owned[j.Table], j.Match); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			e.Err = errors.Join(errs...)
			v.add(e)
		}
	}
}
