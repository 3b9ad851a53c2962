package nftables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is a rule in its typed form: expressions evaluated left to right,
// matches and statements mixed as nft writes them, and a comment. It is
// what [ParseRule] returns and what an applier turns into netlink
// expressions; [Rule.String] gives the text back.
type Rule struct {
	// Family is the family its address expressions name ("ip saddr" or
	// "ip6 saddr"); empty means IPv4.
	Family Family
	// Exprs are the rule's expressions, in order.
	Exprs []Expr
	// Comment is the rule's comment; empty means none.
	Comment string
}

// Expr is one expression of a rule. The set of expressions is closed; it
// is the vocabulary kube-proxy's nftables mode uses: [CTState],
// [AddrMatch], [AddrInSet], [FibLocal], [L4Proto], [DPort], [MarkMatch],
// [MarkSet], [VMap], [Numgen], [SetUpdate], [DNAT], [Masquerade], [Reject]
// and [Action].
type Expr interface {
	appendText(b []byte, f Family) []byte
}

// AddrField selects the source or destination address of a packet.
type AddrField string

// The address fields.
const (
	FieldSAddr AddrField = "saddr"
	FieldDAddr AddrField = "daddr"
)

// CTState matches a connection tracking state: "ct state new".
type CTState struct {
	// State is "new", "established", "related", "invalid" or
	// "untracked".
	State string
}

// AddrMatch compares an address with prefixes: "ip saddr 10.0.0.1",
// "ip saddr != 10.0.0.0/8", "ip saddr != { 10.0.0.0/8 , 1.2.3.4 }".
type AddrMatch struct {
	// Field is the address compared.
	Field AddrField
	// Negate matches addresses outside every prefix; false matches those
	// inside one.
	Negate bool
	// Prefixes are the addresses and networks; a full-length prefix is
	// written as an address.
	Prefixes []netip.Prefix
	// Braces writes the prefixes as an anonymous set even when there is
	// only one; false writes a single prefix bare.
	Braces bool
}

// AddrInSet matches an address that is an element of a named set:
// "ip daddr @cluster-ips".
type AddrInSet struct {
	// Field is the address looked up.
	Field AddrField
	// Set is the set's name.
	Set string
}

// FibLocal matches an address the host owns: "fib saddr type local".
type FibLocal struct {
	// Field is the address looked up.
	Field AddrField
}

// L4Proto matches the transport protocol: "meta l4proto tcp".
type L4Proto struct {
	// Proto is the protocol.
	Proto Protocol
}

// DPort matches the protocol and destination port: "tcp dport 80".
type DPort struct {
	// Proto is the protocol.
	Proto Protocol
	// Port is the destination port.
	Port uint16
}

// MarkMatch tests bits of the packet mark: "mark and 0x4000 == 0" (or
// "!=").
type MarkMatch struct {
	// Mask selects the bits tested.
	Mask uint32
	// Value is what the selected bits are compared with.
	Value uint32
	// Negate matches when they differ; false when they are equal.
	Negate bool
}

// MarkOp is how MarkSet changes the mark.
type MarkOp string

// The mark operations.
const (
	MarkOr  MarkOp = "or"
	MarkXor MarkOp = "xor"
)

// MarkSet changes the packet mark: "mark set mark or 0x4000".
type MarkSet struct {
	// Op combines the mark with Value.
	Op MarkOp
	// Value is the operand.
	Value uint32
}

// KeyField is one part of a map lookup key.
type KeyField string

// The key parts.
const (
	// KeyDAddr is the destination address, "ip daddr".
	KeyDAddr KeyField = "daddr"
	// KeyL4Proto is the transport protocol, "meta l4proto".
	KeyL4Proto KeyField = "l4proto"
	// KeyDPort is the transport destination port, "th dport".
	KeyDPort KeyField = "dport"
)

// VMap looks a key made from the packet up in a named verdict map and
// applies the verdict found: "ip daddr . meta l4proto . th dport vmap
// @service-ips". When the key is not in the map, the rule stops there
// and the next rule is evaluated.
type VMap struct {
	// Key are the key's parts, in the map's key order.
	Key []KeyField
	// Map is the map's name.
	Map string
}

// Numgen picks one of Actions at random, each with the same chance:
// "numgen random mod 2 vmap { 0 : goto a , 1 : goto b }".
type Numgen struct {
	// Actions are the verdicts, one per random value 0..n-1.
	Actions []Action
}

// SetUpdate adds an address to a dynamic set, refreshing its timeout:
// "update @affinity-x { ip saddr }".
type SetUpdate struct {
	// Set is the set's name.
	Set string
	// Field is the address added.
	Field AddrField
}

// DNAT rewrites the destination and ends the chain: "dnat to
// 10.0.0.1:80", "dnat to [fd00::1]:80".
type DNAT struct {
	// To is the new destination.
	To netip.AddrPort
}

// Masquerade rewrites the source to the outgoing interface's address and
// ends the chain: "masquerade fully-random".
type Masquerade struct {
	// FullyRandom randomizes the source port mapping.
	FullyRandom bool
}

// Reject refuses the packet (an ICMP error or TCP reset): "reject".
type Reject struct{}

// String returns r as nft reads it after "add rule FAMILY TABLE CHAIN ".
func (r Rule) String() string { return string(r.AppendText(nil)) }

// AppendText appends r's text to b.
func (r Rule) AppendText(b []byte) []byte {
	f := r.Family
	if f == "" {
		f = IPv4
	}
	for i, e := range r.Exprs {
		if i > 0 {
			b = append(b, ' ')
		}
		b = e.appendText(b, f)
	}
	if r.Comment != "" {
		b = append(b, ` comment "`...)
		b = append(b, r.Comment...)
		b = append(b, '"')
	}
	return b
}

func (e CTState) appendText(b []byte, _ Family) []byte {
	return append(append(b, "ct state "...), e.State...)
}

func appendField(b []byte, f Family, field AddrField) []byte {
	b = append(b, f...)
	b = append(b, ' ')
	return append(b, field...)
}

// AppendPrefix appends p as nft writes it: an address for a full-length
// prefix, else "addr/bits".
func AppendPrefix(b []byte, p netip.Prefix) []byte {
	if p.IsSingleIP() {
		return p.Addr().AppendTo(b)
	}
	return p.AppendTo(b)
}

func (e AddrMatch) appendText(b []byte, f Family) []byte {
	b = appendField(b, f, e.Field)
	if e.Negate {
		b = append(b, " !="...)
	}
	if len(e.Prefixes) == 1 && !e.Braces {
		return AppendPrefix(append(b, ' '), e.Prefixes[0])
	}
	b = append(b, " {"...)
	for i, p := range e.Prefixes {
		if i > 0 {
			b = append(b, " ,"...)
		}
		b = AppendPrefix(append(b, ' '), p)
	}
	return append(b, " }"...)
}

func (e AddrInSet) appendText(b []byte, f Family) []byte {
	return append(append(appendField(b, f, e.Field), " @"...), e.Set...)
}

func (e FibLocal) appendText(b []byte, _ Family) []byte {
	return append(append(append(b, "fib "...), e.Field...), " type local"...)
}

func (e L4Proto) appendText(b []byte, _ Family) []byte {
	return append(append(b, "meta l4proto "...), e.Proto...)
}

func (e DPort) appendText(b []byte, _ Family) []byte {
	b = append(append(b, e.Proto...), " dport "...)
	return strconv.AppendUint(b, uint64(e.Port), 10)
}

// AppendMark appends a mark value as kube-proxy writes it, "0x%08x".
func AppendMark(b []byte, v uint32) []byte {
	const hex = "0123456789abcdef"
	b = append(b, "0x"...)
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hex[v>>uint(shift)&0xf])
	}
	return b
}

func (e MarkMatch) appendText(b []byte, _ Family) []byte {
	b = AppendMark(append(b, "mark and "...), e.Mask)
	if e.Negate {
		b = append(b, " != "...)
	} else {
		b = append(b, " == "...)
	}
	return strconv.AppendUint(b, uint64(e.Value), 10)
}

func (e MarkSet) appendText(b []byte, _ Family) []byte {
	b = append(append(append(b, "mark set mark "...), e.Op...), ' ')
	return AppendMark(b, e.Value)
}

func (e VMap) appendText(b []byte, f Family) []byte {
	for i, k := range e.Key {
		if i > 0 {
			b = append(b, " . "...)
		}
		switch k {
		case KeyDAddr:
			b = appendField(b, f, FieldDAddr)
		case KeyL4Proto:
			b = append(b, "meta l4proto"...)
		default:
			b = append(b, "th dport"...)
		}
	}
	return append(append(b, " vmap @"...), e.Map...)
}

func (e Numgen) appendText(b []byte, _ Family) []byte {
	b = append(b, "numgen random mod "...)
	b = strconv.AppendInt(b, int64(len(e.Actions)), 10)
	b = append(b, " vmap {"...)
	for i, a := range e.Actions {
		if i > 0 {
			b = append(b, " ,"...)
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, " : "...)
		b = a.appendText(b, "")
	}
	return append(b, " }"...)
}

func (e SetUpdate) appendText(b []byte, f Family) []byte {
	b = append(append(append(b, "update @"...), e.Set...), " { "...)
	return append(appendField(b, f, e.Field), " }"...)
}

func (e DNAT) appendText(b []byte, _ Family) []byte {
	return e.To.AppendTo(append(b, "dnat to "...))
}

func (e Masquerade) appendText(b []byte, _ Family) []byte {
	b = append(b, "masquerade"...)
	if e.FullyRandom {
		b = append(b, " fully-random"...)
	}
	return b
}

func (Reject) appendText(b []byte, _ Family) []byte { return append(b, "reject"...) }

func (a Action) appendText(b []byte, _ Family) []byte {
	b = append(b, a.Kind...)
	if a.Kind == ActionJump || a.Kind == ActionGoto {
		b = append(append(b, ' '), a.Chain...)
	}
	return b
}

// String returns the verdict as nft writes it, such as "goto x".
func (a Action) String() string { return string(a.appendText(nil, "")) }

// ParseRule parses one rule written as [Rule.String] writes it (what
// follows "add rule FAMILY TABLE CHAIN "). It reads the vocabulary of
// [Expr], and also the spellings "nft list" uses for the same things
// (commas attached to set elements). It reports text outside that
// vocabulary, wrapping [ErrSyntax].
func ParseRule(text string) (Rule, error) {
	toks, comment, err := tokenize(text)
	if err != nil {
		return Rule{}, err
	}
	p := ruleParser{toks: toks}
	r := Rule{Comment: comment}
	for !p.done() {
		e, err := p.expr()
		if err != nil {
			return Rule{}, fmt.Errorf("rule %q: %w", text, err)
		}
		r.Exprs = append(r.Exprs, e)
	}
	if len(r.Exprs) == 0 {
		return Rule{}, fmt.Errorf("rule %q: empty: %w", text, ErrSyntax)
	}
	r.Family = p.family
	return r, nil
}

// tokenize splits rule text into words, with "{", "}" and "," as words
// of their own, and takes off a trailing `comment "..."`.
func tokenize(text string) ([]string, string, error) {
	var toks []string
	comment := ""
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '{' || c == '}' || c == ',':
			toks = append(toks, text[i:i+1])
			i++
		case c == '"':
			end := strings.IndexByte(text[i+1:], '"')
			if end < 0 {
				return nil, "", fmt.Errorf("rule %q: unbalanced quote: %w", text, ErrSyntax)
			}
			if len(toks) == 0 || toks[len(toks)-1] != "comment" || strings.TrimSpace(text[i+end+2:]) != "" {
				return nil, "", fmt.Errorf("rule %q: quoted text other than a final comment: %w", text, ErrSyntax)
			}
			toks = toks[:len(toks)-1]
			comment = text[i+1 : i+1+end]
			if err := checkComment(comment); err != nil {
				return nil, "", fmt.Errorf("rule %q: %w", text, err)
			}
			i = len(text)
		case c < 0x20 || c == 0x7f || c == '\\':
			return nil, "", fmt.Errorf("rule %q: control character or backslash: %w", text, ErrSyntax)
		default:
			j := i
			for j < len(text) && !strings.ContainsRune(" \t{},\"", rune(text[j])) {
				j++
			}
			toks = append(toks, text[i:j])
			i = j
		}
	}
	return toks, comment, nil
}
