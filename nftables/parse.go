package nftables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ruleParser reads the words of one rule.
type ruleParser struct {
	toks []string
	i    int
	// family is the family named by the first "ip" or "ip6" word.
	family Family
}

func (p *ruleParser) done() bool { return p.i >= len(p.toks) }

func (p *ruleParser) peek() string {
	if p.done() {
		return ""
	}
	return p.toks[p.i]
}

func (p *ruleParser) next() string {
	t := p.peek()
	p.i++
	return t
}

// want consumes the words ws, or reports the first that is missing.
func (p *ruleParser) want(ws ...string) error {
	for _, w := range ws {
		if got := p.next(); got != w {
			return fmt.Errorf("%q where %q belongs: %w", got, w, ErrSyntax)
		}
	}
	return nil
}

// expr reads one expression.
func (p *ruleParser) expr() (Expr, error) {
	switch t := p.next(); t {
	case "ct":
		if err := p.want("state"); err != nil {
			return nil, err
		}
		switch s := p.next(); s {
		case "new", "established", "related", "invalid", "untracked":
			return CTState{State: s}, nil
		default:
			return nil, fmt.Errorf("conntrack state %q: %w", s, ErrSyntax)
		}
	case "ip", "ip6":
		return p.addrExpr(t)
	case "meta":
		if err := p.want("l4proto"); err != nil {
			return nil, err
		}
		if p.peek() == "." {
			return p.vmap(KeyL4Proto)
		}
		proto, err := parseProtocol(p.next())
		return L4Proto{Proto: proto}, err
	case "tcp", "udp", "sctp":
		if err := p.want("dport"); err != nil {
			return nil, err
		}
		port, err := parsePort(p.next())
		return DPort{Proto: Protocol(t), Port: port}, err
	case "fib":
		f, err := parseField(p.next())
		if err != nil {
			return nil, err
		}
		return FibLocal{Field: f}, p.want("type", "local")
	case "mark":
		return p.mark()
	case "numgen":
		return p.numgen()
	case "update":
		return p.update()
	case "dnat":
		return p.dnat()
	case "masquerade":
		if p.peek() == "fully-random" {
			p.i++
			return Masquerade{FullyRandom: true}, nil
		}
		return Masquerade{}, nil
	case "reject":
		return Reject{}, nil
	}
	p.i--
	a, err := p.action()
	if err != nil {
		return nil, err
	}
	return a, nil
}

// setFamily records the family a word names, refusing a second one.
func (p *ruleParser) setFamily(word string) error {
	f := IPv4
	if word == "ip6" {
		f = IPv6
	}
	if p.family != "" && p.family != f {
		return fmt.Errorf("both ip and ip6 in one rule: %w", ErrWrongFamily)
	}
	p.family = f
	return nil
}

// addrExpr reads what follows "ip" or "ip6".
func (p *ruleParser) addrExpr(word string) (Expr, error) {
	if err := p.setFamily(word); err != nil {
		return nil, err
	}
	f, err := parseField(p.next())
	if err != nil {
		return nil, err
	}
	switch t := p.peek(); {
	case t == ".":
		if f != FieldDAddr {
			return nil, fmt.Errorf("lookup key with %s: %w", f, ErrSyntax)
		}
		return p.vmap(KeyDAddr)
	case strings.HasPrefix(t, "@"):
		p.i++
		name := t[1:]
		return AddrInSet{Field: f, Set: name}, checkName(name)
	}
	m := AddrMatch{Field: f}
	if p.peek() == "!=" {
		p.i++
		m.Negate = true
	}
	if p.peek() != "{" {
		pfx, err := parsePrefix(p.next())
		m.Prefixes = []netip.Prefix{pfx}
		return m, err
	}
	p.i++
	m.Braces = true
	for {
		pfx, err := parsePrefix(p.next())
		if err != nil {
			return nil, err
		}
		m.Prefixes = append(m.Prefixes, pfx)
		switch t := p.next(); t {
		case ",":
		case "}":
			return m, nil
		default:
			return nil, fmt.Errorf("%q in an address set: %w", t, ErrSyntax)
		}
	}
}

// vmap reads a lookup key whose first part was first, then
// "vmap @map".
func (p *ruleParser) vmap(first KeyField) (Expr, error) {
	v := VMap{Key: []KeyField{first}}
	for p.peek() == "." {
		p.i++
		switch t := p.next(); t {
		case "ip", "ip6":
			if err := p.setFamily(t); err != nil {
				return nil, err
			}
			if err := p.want("daddr"); err != nil {
				return nil, err
			}
			v.Key = append(v.Key, KeyDAddr)
		case "meta":
			if err := p.want("l4proto"); err != nil {
				return nil, err
			}
			v.Key = append(v.Key, KeyL4Proto)
		case "th":
			if err := p.want("dport"); err != nil {
				return nil, err
			}
			v.Key = append(v.Key, KeyDPort)
		default:
			return nil, fmt.Errorf("key part %q: %w", t, ErrSyntax)
		}
	}
	if err := p.want("vmap"); err != nil {
		return nil, err
	}
	name, ok := strings.CutPrefix(p.next(), "@")
	if !ok {
		return nil, fmt.Errorf("vmap without a named map: %w", ErrSyntax)
	}
	v.Map = name
	return v, checkName(name)
}

// mark reads what follows "mark".
func (p *ruleParser) mark() (Expr, error) {
	switch t := p.next(); t {
	case "and":
		mask, err := parseUint32(p.next())
		if err != nil {
			return nil, err
		}
		m := MarkMatch{Mask: mask}
		switch op := p.next(); op {
		case "==":
		case "!=":
			m.Negate = true
		default:
			return nil, fmt.Errorf("mark comparison %q: %w", op, ErrSyntax)
		}
		m.Value, err = parseUint32(p.next())
		return m, err
	case "set":
		if err := p.want("mark"); err != nil {
			return nil, err
		}
		op := MarkOp(p.next())
		if op != MarkOr && op != MarkXor {
			return nil, fmt.Errorf("mark operation %q: %w", op, ErrSyntax)
		}
		v, err := parseUint32(p.next())
		return MarkSet{Op: op, Value: v}, err
	default:
		return nil, fmt.Errorf("mark %q: %w", t, ErrSyntax)
	}
}

// numgen reads what follows "numgen".
func (p *ruleParser) numgen() (Expr, error) {
	if err := p.want("random", "mod"); err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(p.next())
	if err != nil || n < 1 || n > 1<<16 {
		return nil, fmt.Errorf("numgen modulus: %w", ErrSyntax)
	}
	if err := p.want("vmap", "{"); err != nil {
		return nil, err
	}
	g := Numgen{Actions: make([]Action, 0, n)}
	for i := 0; ; i++ {
		if p.next() != strconv.Itoa(i) {
			return nil, fmt.Errorf("numgen element %d out of order: %w", i, ErrSyntax)
		}
		if err := p.want(":"); err != nil {
			return nil, err
		}
		a, err := p.action()
		if err != nil {
			return nil, err
		}
		g.Actions = append(g.Actions, a)
		if t := p.next(); t == "}" {
			break
		} else if t != "," {
			return nil, fmt.Errorf("%q in a numgen map: %w", t, ErrSyntax)
		}
	}
	if len(g.Actions) != n {
		return nil, fmt.Errorf("numgen mod %d with %d elements: %w", n, len(g.Actions), ErrSyntax)
	}
	return g, nil
}

// update reads what follows "update".
func (p *ruleParser) update() (Expr, error) {
	name, ok := strings.CutPrefix(p.next(), "@")
	if !ok {
		return nil, fmt.Errorf("update without a named set: %w", ErrSyntax)
	}
	if err := p.want("{"); err != nil {
		return nil, err
	}
	w := p.next()
	if w != "ip" && w != "ip6" {
		return nil, fmt.Errorf("update key %q: %w", w, ErrSyntax)
	}
	if err := p.setFamily(w); err != nil {
		return nil, err
	}
	f, err := parseField(p.next())
	if err != nil {
		return nil, err
	}
	if err := p.want("}"); err != nil {
		return nil, err
	}
	return SetUpdate{Set: name, Field: f}, checkName(name)
}

// dnat reads what follows "dnat".
func (p *ruleParser) dnat() (Expr, error) {
	if err := p.want("to"); err != nil {
		return nil, err
	}
	t := p.next()
	ap, err := netip.ParseAddrPort(t)
	if err != nil {
		return nil, fmt.Errorf("dnat destination %q: %w", t, ErrSyntax)
	}
	return DNAT{To: ap}, nil
}

// action reads a verdict.
func (p *ruleParser) action() (Action, error) {
	switch k := ActionKind(p.next()); k {
	case ActionAccept, ActionDrop, ActionReturn:
		return Action{Kind: k}, nil
	case ActionJump, ActionGoto:
		name := p.next()
		return Action{Kind: k, Chain: name}, checkName(name)
	default:
		return Action{}, fmt.Errorf("unknown word %q: %w", k, ErrSyntax)
	}
}

func parseField(s string) (AddrField, error) {
	switch f := AddrField(s); f {
	case FieldSAddr, FieldDAddr:
		return f, nil
	}
	return "", fmt.Errorf("address field %q: %w", s, ErrSyntax)
}

func parseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case ProtocolTCP, ProtocolUDP, ProtocolSCTP:
		return p, nil
	}
	return "", fmt.Errorf("protocol %q: %w", s, ErrSyntax)
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: %w", s, ErrSyntax)
	}
	return uint16(n), nil
}

func parseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("number %q: %w", s, ErrSyntax)
	}
	return uint32(n), nil
}

// parsePrefix reads an address or a network.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("network %q: %w", s, ErrSyntax)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", s, ErrSyntax)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
