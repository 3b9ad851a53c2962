package nftables

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Family is an nftables table family; a Plan covers one.
type Family string

// The families svcplan writes.
const (
	// IPv4 is the "ip" family.
	IPv4 Family = "ip"
	// IPv6 is the "ip6" family.
	IPv6 Family = "ip6"
)

// DefaultTableName is the table a Plan fills when Table.Name is empty, the
// one kube-proxy owns.
const DefaultTableName = "kube-proxy"

// MaxNameLen is the longest table, chain or set name nftables accepts.
const MaxNameLen = 256

// MaxCommentLen is the longest comment nftables stores.
const MaxCommentLen = 128

// Plan is the desired content of one nftables table: its sets and verdict
// maps with their elements, and its chains with their rules. A plan owns the
// whole table: applying it replaces whatever the table held.
//
// The zero Plan is an empty "ip kube-proxy" table.
type Plan struct {
	// Table names the table.
	Table Table
	// Sets are the table's sets and verdict maps, in render order; each
	// name appears once.
	Sets []Set
	// Chains are the table's chains, base and regular, in render order;
	// each name appears once.
	Chains []Chain
}

// Table names a table.
type Table struct {
	// Family is the table family; empty means IPv4.
	Family Family
	// Name is the table name; empty means DefaultTableName.
	Name string
	// Comment is the table's comment; empty means none.
	Comment string
}

// ChainType is the type of a base chain.
type ChainType string

// The base chain types.
const (
	ChainTypeFilter ChainType = "filter"
	ChainTypeNAT    ChainType = "nat"
)

// Hook is a netfilter hook: where a base chain is attached, and where a
// traced packet enters.
type Hook string

// The hooks.
const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// Well-known base chain priorities, as nft names them.
const (
	PriorityDstNAT = -100
	PriorityFilter = 0
	PrioritySrcNAT = 100
)

// BaseChain is what makes a chain a base chain: the netfilter hook it is
// attached to. Its policy is always accept.
type BaseChain struct {
	// Type is the chain type.
	Type ChainType
	// Hook is the hook the chain is attached to.
	Hook Hook
	// Priority orders base chains on the same hook, lowest first; it is
	// written as a number.
	Priority int
}

// Chain is one chain and its rules.
type Chain struct {
	// Name is the chain name, at most MaxNameLen characters of
	// [A-Za-z0-9_./-], starting with a letter, '_' or '.'.
	Name string
	// Base makes the chain a base chain; nil means a regular chain, run
	// only when a rule or map jumps to it.
	Base *BaseChain
	// Comment is the chain's comment; empty means none.
	Comment string
	// body holds the rules, each as "rule\n", where rule is what follows
	// "add rule FAMILY TABLE CHAIN " in nft input.
	body string
}

// NewChain returns a regular chain named name with the given rules, each
// in the text form [ParseRule] reads. It refuses a bad name or a rule that
// does not parse.
func NewChain(name string, rules ...string) (Chain, error) {
	if err := checkName(name); err != nil {
		return Chain{}, fmt.Errorf("chain %s: %w", name, err)
	}
	var b strings.Builder
	for i, r := range rules {
		if _, err := ParseRule(r); err != nil {
			return Chain{}, &Error{Op: "build", Chain: name, Rule: i + 1, Err: err}
		}
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return Chain{Name: name, body: b.String()}, nil
}

// ChainFromText returns a regular chain named name whose rules are text:
// zero or more lines, each a rule as [ParseRule] reads it and
// newline-terminated. The text is kept, not copied or parsed, so that a
// compiler may render many chains into one large string and pass
// substrings of it; [Plan.Validate] parses it. It refuses a bad chain
// name, and text that does not end in a newline or holds a carriage
// return, NUL, ';' or '#' (which would end or comment out an nft
// command).
func ChainFromText(name, text string) (Chain, error) {
	if err := checkName(name); err != nil {
		return Chain{}, fmt.Errorf("chain %s: %w", name, err)
	}
	if text != "" && (text[len(text)-1] != '\n' || unsafeText(text)) {
		return Chain{}, fmt.Errorf("chain %s: rule text not newline-terminated or holding CR, NUL, ';' or '#': %w", name, ErrUnsafeText)
	}
	return Chain{Name: name, body: text}, nil
}

// unsafeText reports whether text holds a byte ChainFromText refuses.
// IndexByte is much faster than ContainsAny on long bodies.
func unsafeText(text string) bool {
	for _, c := range [...]byte{'\r', 0, ';', '#'} {
		if strings.IndexByte(text, c) >= 0 {
			return true
		}
	}
	return false
}

// RuleCount returns the number of rules in c.
func (c *Chain) RuleCount() int { return strings.Count(c.body, "\n") }

// Body returns c's rules as text, one newline-terminated rule per line.
func (c *Chain) Body() string { return c.body }

// Rules returns c's rules in their text form.
func (c *Chain) Rules() []string {
	if c.body == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(c.body, "\n"), "\n")
}

// ParsedRules returns c's rules in their typed form, or an [*Error] naming
// the first rule that does not parse.
func (c *Chain) ParsedRules() ([]Rule, error) {
	out := make([]Rule, 0, c.RuleCount())
	for i, text := range c.Rules() {
		r, err := ParseRule(text)
		if err != nil {
			return nil, &Error{Op: "parse", Chain: c.Name, Rule: i + 1, Err: err}
		}
		out = append(out, r)
	}
	return out, nil
}

// Equal reports whether c and d are the same chain with the same rules.
func (c *Chain) Equal(d *Chain) bool {
	return c.Name == d.Name && c.Comment == d.Comment && c.body == d.body &&
		(c.Base == nil) == (d.Base == nil) && (c.Base == nil || *c.Base == *d.Base)
}

// DataType is the type of one part of a set's key, or of a map's value.
type DataType string

// The data types svcplan's sets use.
const (
	TypeIPv4Addr    DataType = "ipv4_addr"
	TypeIPv6Addr    DataType = "ipv6_addr"
	TypeInetProto   DataType = "inet_proto"
	TypeInetService DataType = "inet_service"
	TypeVerdict     DataType = "verdict"
)

// SetFlag is a flag of a set.
type SetFlag string

// The set flags svcplan uses.
const (
	// SetFlagDynamic lets rules add elements ("update @set").
	SetFlagDynamic SetFlag = "dynamic"
	// SetFlagTimeout lets elements expire after the set's timeout.
	SetFlagTimeout SetFlag = "timeout"
)

// Set is a named set or verdict map. Its key is a concatenation of an
// address, a protocol and a port, in that order, each optional (at least
// one present): the shapes kube-proxy uses.
type Set struct {
	// Name is the set name, with the rules of chain names.
	Name string
	// Key lists the types of the key's parts, such as
	// {TypeIPv4Addr, TypeInetProto, TypeInetService}.
	Key []DataType
	// Value is TypeVerdict for a verdict map; empty means a plain set.
	Value DataType
	// Flags are the set's flags; nil means none.
	Flags []SetFlag
	// Timeout is how long elements added by rules live; zero means no
	// timeout. It is written in whole seconds.
	Timeout time.Duration
	// Comment is the set's comment; empty means none.
	Comment string
	// Elements are the set's elements, in render order; nil means none.
	Elements []Element
}

// IsMap reports whether s is a verdict map.
func (s *Set) IsMap() bool { return s.Value == TypeVerdict }

// HasFlag reports whether s has flag f.
func (s *Set) HasFlag(f SetFlag) bool {
	for _, g := range s.Flags {
		if g == f {
			return true
		}
	}
	return false
}

// Protocol is a transport protocol as nft names it.
type Protocol string

// The protocols.
const (
	ProtocolTCP  Protocol = "tcp"
	ProtocolUDP  Protocol = "udp"
	ProtocolSCTP Protocol = "sctp"
)

// Element is one element of a set or map. Which fields are used follows
// the set's Key.
type Element struct {
	// Addr is the address part of the key; the zero Addr means the key has
	// none.
	Addr netip.Addr
	// Proto is the protocol part of the key; empty means the key has none.
	Proto Protocol
	// Port is the port part of the key; zero means the key has none.
	Port uint16
	// Action is the element's verdict in a verdict map; the zero Action
	// means none (a plain set).
	Action Action
	// Comment is the element's comment; empty means none.
	Comment string
}

// ActionKind is the kind of an nftables verdict.
type ActionKind string

// The verdicts.
const (
	ActionAccept ActionKind = "accept"
	ActionDrop   ActionKind = "drop"
	ActionReturn ActionKind = "return"
	ActionJump   ActionKind = "jump"
	ActionGoto   ActionKind = "goto"
)

// Action is an nftables verdict: accept, drop, return, or a jump or goto
// to a chain. The zero Action is no verdict. It is also a rule statement
// (see [Expr]).
type Action struct {
	// Kind is the verdict.
	Kind ActionKind
	// Chain is the chain of a jump or goto; empty for the others.
	Chain string
}

// Goto returns the verdict "goto chain".
func Goto(chain string) Action { return Action{Kind: ActionGoto, Chain: chain} }

// Jump returns the verdict "jump chain".
func Jump(chain string) Action { return Action{Kind: ActionJump, Chain: chain} }

// Drop returns the verdict "drop".
func Drop() Action { return Action{Kind: ActionDrop} }

// Chain returns the chain named name, or nil.
func (p *Plan) Chain(name string) *Chain {
	for i := range p.Chains {
		if p.Chains[i].Name == name {
			return &p.Chains[i]
		}
	}
	return nil
}

// Set returns the set or map named name, or nil.
func (p *Plan) Set(name string) *Set {
	for i := range p.Sets {
		if p.Sets[i].Name == name {
			return &p.Sets[i]
		}
	}
	return nil
}

// FamilyOrDefault returns p.Table.Family, defaulted to IPv4.
func (p *Plan) FamilyOrDefault() Family {
	if p.Table.Family == "" {
		return IPv4
	}
	return p.Table.Family
}

// TableName returns p.Table.Name, defaulted to DefaultTableName.
func (p *Plan) TableName() string {
	if p.Table.Name == "" {
		return DefaultTableName
	}
	return p.Table.Name
}

// AddrType returns the address data type of family f.
func (f Family) AddrType() DataType {
	if f == IPv6 {
		return TypeIPv6Addr
	}
	return TypeIPv4Addr
}

// checkName refuses a name nft would not read as one identifier.
func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("name %q: must be 1..%d characters: %w", name, MaxNameLen, ErrName)
	}
	if c := name[0]; c < 128 && nameFirst(c) == 0 {
		return fmt.Errorf("name %q: must start with a letter, '_' or '.': %w", name, ErrName)
	}
	if nameBytesOK(name) {
		return nil
	}
	table := [2]uint64{nameLo, nameHi}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 128 || table[c>>6]>>(c&63)&1 == 0 {
			return fmt.Errorf("name %q: character %q not allowed: %w", name, c, ErrName)
		}
	}
	return nil
}

// The bytes a name may hold, as bit sets over 0..63 and 64..127: letters,
// digits, '_', '.', '/' and '-'; and those it may start with: letters, '_'
// and '.'.
const (
	nameLo      uint64 = 1<<'-' | 1<<'.' | 1<<'/' | 0x3ff<<'0'
	nameHi      uint64 = 0x3ffffff<<('A'-64) | 1<<('_'-64) | 0x3ffffff<<('a'-64)
	nameFirstLo uint64 = 1 << '.'
)

// nameFirst returns non-zero when c (below 128) may start a name.
func nameFirst(c byte) uint64 {
	if c < 64 {
		return nameFirstLo >> c & 1
	}
	return nameHi >> (c - 64) & 1
}

// checkComment refuses a comment that cannot be written inside double
// quotes, or that holds ';' or '#', which nft input never needs there.
func checkComment(s string) error {
	if len(s) > MaxCommentLen {
		return fmt.Errorf("comment %q: longer than %d bytes: %w", s, MaxCommentLen, ErrUnsafeText)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == ';' || c == '#' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("comment %q: character %q not allowed: %w", s, c, ErrUnsafeText)
		}
	}
	return nil
}
