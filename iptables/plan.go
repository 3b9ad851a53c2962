package iptables

import (
	"errors"
	"fmt"
	"strings"
)

// Family is an address family; a Plan covers one.
type Family string

// The families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// Table is an iptables table.
type Table string

// The tables svcplan writes.
const (
	TableFilter Table = "filter"
	TableNAT    Table = "nat"
	TableMangle Table = "mangle"
	TableRaw    Table = "raw"
)

// Plan is the desired content of the chains one owner keeps in one family:
// owned chains with their complete rule lists, table by table, and the jump
// rules that link them from the built-in chains.
//
// The zero Plan is an IPv4 plan with nothing in it.
type Plan struct {
	// Family is the address family; empty means IPv4.
	Family Family
	// Tables holds the owned chains per table, in render order. A table
	// appears at most once.
	Tables []TableChains
	// Jumps are the rules in built-in chains (PREROUTING, INPUT, ...) that
	// lead into owned chains, in the order they should appear at the top of
	// their chain.
	Jumps []Jump
}

// TableChains is the owned chains of one table.
type TableChains struct {
	// Table is the table.
	Table Table
	// Chains are the owned chains in render order; each name appears once.
	Chains []Chain
}

// Chain is one owned chain and its rules.
type Chain struct {
	// Name is the chain name, at most 28 characters.
	Name string
	// body holds the rules, each as "args\n" where args is what
	// iptables-save prints after "-A Name ".
	body string
	// n is the number of rules in body.
	n int
}

// Jump is a rule in a built-in chain that jumps to an owned chain.
type Jump struct {
	// Table is the table of both chains.
	Table Table
	// Chain is the built-in chain, such as "PREROUTING".
	Chain string
	// Match are extra match arguments placed before the comment, such as
	// {"-m", "conntrack", "--ctstate", "NEW"}; nil means none.
	Match []string
	// Comment is the rule comment; empty means none.
	Comment string
	// Target is the owned chain jumped to.
	Target string
}

// Args returns the jump's rule arguments after "-A Chain ", in the order
// iptables-save prints them. An empty Target adds no "-j" (the Match then
// holds the whole rule, as ParseSave makes for a built-in chain's rule
// that is not a plain jump).
func (j Jump) Args() []string {
	var a []string
	a = append(a, j.Match...)
	if j.Comment != "" {
		a = append(a, "-m", "comment", "--comment", j.Comment)
	}
	if j.Target == "" {
		return a
	}
	return append(a, "-j", j.Target)
}

// NewChain returns a chain named name with the given rules, each a list of
// arguments. It reports an argument that cannot be written safely.
func NewChain(name string, rules ...[]string) (Chain, error) {
	b := NewChainBuilder(name)
	for _, r := range rules {
		b.Rule(r...)
	}
	return b.Chain()
}

// ChainFromText returns a chain named name whose rules are text: zero or
// more lines, each as [ChainBuilder.RuleText] takes it and
// newline-terminated. The text is kept, not copied, so a compiler may
// render many chains into one large string and pass substrings of it. It
// refuses a bad chain name, and text that does not end in a newline or
// holds a carriage return or NUL.
func ChainFromText(name, text string) (Chain, error) {
	if err := checkChainName(name); err != nil {
		return Chain{}, err
	}
	if text != "" && (text[len(text)-1] != '\n' || strings.IndexByte(text, '\r') >= 0 || strings.IndexByte(text, 0) >= 0) {
		return Chain{}, fmt.Errorf("chain %s: rule text not newline-terminated or holding CR or NUL: %w", name, ErrUnsafeArgument)
	}
	return Chain{Name: name, body: text, n: strings.Count(text, "\n")}, nil
}

// RuleCount returns the number of rules in c.
func (c *Chain) RuleCount() int { return c.n }

// Body returns c's rules as text, each line what iptables-save prints after
// "-A Name ", newline-terminated.
func (c *Chain) Body() string { return c.body }

// Rules returns c's rules, each as the text after "-A Name ".
func (c *Chain) Rules() []string {
	if c.n == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(c.body, "\n"), "\n")
}

// Equal reports whether c and d have the same name and rules.
func (c *Chain) Equal(d *Chain) bool { return c.Name == d.Name && c.body == d.body }

// ChainBuilder builds one chain's rules. It keeps the first error it meets
// and reports it from Chain. The zero value is not usable; call
// NewChainBuilder. A builder may be reused with Reset to save allocations.
type ChainBuilder struct {
	name string
	buf  []byte
	n    int
	err  error
}

// NewChainBuilder returns a builder for the chain named name.
func NewChainBuilder(name string) *ChainBuilder {
	b := &ChainBuilder{}
	b.Reset(name)
	return b
}

// Reset starts a new chain named name, keeping the builder's buffer.
func (b *ChainBuilder) Reset(name string) {
	b.name, b.buf, b.n, b.err = name, b.buf[:0], 0, nil
	if err := checkChainName(name); err != nil {
		b.err = err
	}
}

// Rule appends a rule made of args. Arguments containing spaces are quoted
// as iptables-save quotes them; an argument that is empty or contains a
// double quote, backslash, newline or other control character is refused.
func (b *ChainBuilder) Rule(args ...string) {
	for i, a := range args {
		if i > 0 {
			b.buf = append(b.buf, ' ')
		}
		b.buf = b.appendArg(b.buf, a)
	}
	b.buf = append(b.buf, '\n')
	b.n++
}

// RuleText appends a rule given as already-quoted text, as iptables-save
// prints it after "-A CHAIN ". The text must not contain a newline.
func (b *ChainBuilder) RuleText(text string) {
	if strings.ContainsAny(text, "\n\r\x00") && b.err == nil {
		b.err = fmt.Errorf("chain %s: rule %q: %w", b.name, text, ErrUnsafeArgument)
	}
	b.buf = append(b.buf, text...)
	b.buf = append(b.buf, '\n')
	b.n++
}

// Len returns the number of rules added since the last Reset.
func (b *ChainBuilder) Len() int { return b.n }

// Chain returns the chain built so far, or the first error met.
func (b *ChainBuilder) Chain() (Chain, error) {
	if b.err != nil {
		return Chain{}, b.err
	}
	return Chain{Name: b.name, body: string(b.buf), n: b.n}, nil
}

func (b *ChainBuilder) appendArg(dst []byte, a string) []byte {
	if a == "" {
		b.fail(a)
		return append(dst, `""`...)
	}
	quote := false
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c == '"' || c == '\\' || c < 0x20 || c == 0x7f:
			b.fail(a)
		case c == ' ' || c == '\'' || c == '#' || c == '\t':
			quote = true
		}
	}
	if !quote {
		return append(dst, a...)
	}
	dst = append(dst, '"')
	dst = append(dst, a...)
	return append(dst, '"')
}

func (b *ChainBuilder) fail(a string) {
	if b.err == nil {
		b.err = fmt.Errorf("chain %s: argument %q: %w", b.name, a, ErrUnsafeArgument)
	}
}

// ErrUnsafeArgument is returned for a rule argument that cannot be written
// into restore input without changing its meaning.
var ErrUnsafeArgument = errors.New("argument cannot be written safely")

// MaxChainNameLen is the longest chain name iptables accepts.
const MaxChainNameLen = 28

func checkChainName(name string) error {
	if name == "" || len(name) > MaxChainNameLen {
		return fmt.Errorf("chain name %q: must be 1..%d characters", name, MaxChainNameLen)
	}
	if name[0] == '-' {
		return fmt.Errorf("chain name %q: character '-' not allowed first", name)
	}
	if chainNameBytesOK(name) {
		return nil
	}
	for i := 0; i < len(name); i++ {
		// One unsigned comparison refuses controls, space and DEL.
		if c := name[i]; c-'!' > '~'-'!' || c == '"' || c == '\\' || c == '!' {
			return fmt.Errorf("chain name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// Table returns the chains of table t, or nil.
func (p *Plan) Table(t Table) *TableChains {
	for i := range p.Tables {
		if p.Tables[i].Table == t {
			return &p.Tables[i]
		}
	}
	return nil
}

// Chain returns the chain named name in table t, or nil.
func (p *Plan) Chain(t Table, name string) *Chain {
	tc := p.Table(t)
	if tc == nil {
		return nil
	}
	for i := range tc.Chains {
		if tc.Chains[i].Name == name {
			return &tc.Chains[i]
		}
	}
	return nil
}

// FamilyOrDefault returns p.Family, defaulted to IPv4.
func (p *Plan) FamilyOrDefault() Family {
	if p.Family == "" {
		return IPv4
	}
	return p.Family
}
