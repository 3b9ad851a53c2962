package nftables

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteTo writes p as input for "nft -f", streaming it through a buffer.
// The text replaces the table as a whole, atomically (nft runs one file as
// one transaction), and gives the same result whether or not the table
// exists, so feeding it twice is harmless:
//
//	add table ip kube-proxy { comment "rules for kube-proxy" ; }
//	delete table ip kube-proxy
//	add table ip kube-proxy { comment "rules for kube-proxy" ; }
//	add set ip kube-proxy NAME { type ... ; }       one per set, then map
//	add chain ip kube-proxy NAME [{ type ... ; }]   one per chain
//	add rule ip kube-proxy CHAIN RULE               chain by chain
//	add element ip kube-proxy SET { ELEMENT }       set by set
//
// Every chain is declared before any rule, and every set before the rules
// and elements that use them, because nft resolves names in file order.
// Deleting the table also empties the dynamic affinity sets; an applier
// that keeps them works from the plan's data instead of this text. It
// reports a name or comment that cannot be written safely before writing
// anything.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	if err := p.checkText(); err != nil {
		return 0, err
	}
	r := renderer{w: w, prefix: p.prefix(), buf: make([]byte, 0, renderBufSize+4096)}
	r.table(p)
	for i := range p.Sets {
		r.set(&p.Sets[i])
	}
	if len(p.Sets) > 0 {
		r.newline()
	}
	for i := range p.Chains {
		r.chain(&p.Chains[i])
	}
	for i := range p.Chains {
		r.rules(&p.Chains[i])
	}
	for i := range p.Sets {
		r.elements(&p.Sets[i])
	}
	r.flush()
	if r.err != nil {
		return r.n, fmt.Errorf("writing nftables plan: %w", r.err)
	}
	return r.n, nil
}

// String returns p as [Plan.WriteTo] writes it. If p cannot be rendered,
// the text is a "#" line naming the problem.
func (p *Plan) String() string {
	var b strings.Builder
	// Measure first, so that the text is built in one allocation of its
	// exact size rather than by repeated growth.
	if n, err := p.WriteTo(io.Discard); err == nil {
		b.Grow(int(n))
	}
	if _, err := p.WriteTo(&b); err != nil {
		return "# render error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
	}
	return b.String()
}

// prefix returns "FAMILY TABLE ", what follows the object keyword of
// every command.
func (p *Plan) prefix() string {
	return string(p.FamilyOrDefault()) + " " + p.TableName() + " "
}

// checkText refuses names and comments that would change the meaning of
// the text around them.
func (p *Plan) checkText() error {
	fail := func(e *Error) error { e.Op = "render"; return e }
	if f := p.FamilyOrDefault(); f != IPv4 && f != IPv6 {
		return fail(&Error{Err: fmt.Errorf("family %q: %w", f, ErrSyntax)})
	}
	if err := checkName(p.TableName()); err != nil {
		return fail(&Error{Err: fmt.Errorf("table: %w", err)})
	}
	if err := checkOptionalComment(p.Table.Comment); err != nil {
		return fail(&Error{Err: fmt.Errorf("table: %w", err)})
	}
	for i := range p.Sets {
		s := &p.Sets[i]
		if err := checkName(s.Name); err != nil {
			return fail(&Error{Set: s.Name, Err: err})
		}
		if err := checkOptionalComment(s.Comment); err != nil {
			return fail(&Error{Set: s.Name, Err: err})
		}
		for j := range s.Elements {
			if err := checkOptionalComment(s.Elements[j].Comment); err != nil {
				return fail(&Error{Set: s.Name, Element: j + 1, Err: err})
			}
		}
	}
	for i := range p.Chains {
		c := &p.Chains[i]
		if err := checkName(c.Name); err != nil {
			return fail(&Error{Chain: c.Name, Err: err})
		}
		if err := checkOptionalComment(c.Comment); err != nil {
			return fail(&Error{Chain: c.Name, Err: err})
		}
	}
	return nil
}

func checkOptionalComment(s string) error {
	if s == "" {
		return nil
	}
	return checkComment(s)
}

// renderBufSize is how much text the renderer gathers before writing it.
const renderBufSize = 64 << 10

// renderer gathers commands in a buffer and writes it out in large
// pieces, keeping the first write error.
type renderer struct {
	w      io.Writer
	prefix string
	buf    []byte
	n      int64
	err    error
}

// flush writes out the buffer.
func (r *renderer) flush() {
	if r.err == nil && len(r.buf) > 0 {
		n, err := r.w.Write(r.buf)
		r.n += int64(n)
		r.err = err
	}
	r.buf = r.buf[:0]
}

// maybeFlush writes out the buffer once it is full enough.
func (r *renderer) maybeFlush() {
	if len(r.buf) >= renderBufSize {
		r.flush()
	}
}

func (r *renderer) newline() { r.buf = append(r.buf, '\n') }

// line writes keyword, the table prefix, the parts and a newline.
func (r *renderer) line(keyword string, parts ...string) {
	r.buf = append(r.buf, keyword...)
	r.buf = append(r.buf, r.prefix...)
	for _, s := range parts {
		r.buf = append(r.buf, s...)
	}
	r.buf = append(r.buf, '\n')
	r.maybeFlush()
}

// rules writes the "add rule" commands of c, after a blank line.
func (r *renderer) rules(c *Chain) {
	if c.body == "" {
		return
	}
	r.newline()
	for body := c.body; body != ""; {
		i := strings.IndexByte(body, '\n')
		r.buf = append(r.buf, "add rule "...)
		r.buf = append(r.buf, r.prefix...)
		r.buf = append(r.buf, c.Name...)
		r.buf = append(r.buf, ' ')
		r.buf = append(r.buf, body[:i+1]...)
		body = body[i+1:]
		r.maybeFlush()
	}
}

func (r *renderer) table(p *Plan) {
	create := "add table " + strings.TrimSuffix(r.prefix, " ")
	if p.Table.Comment != "" {
		create += ` { comment "` + p.Table.Comment + `" ; }`
	}
	r.buf = append(r.buf, create+"\n"...)
	r.buf = append(r.buf, "delete table "+strings.TrimSuffix(r.prefix, " ")+"\n"...)
	r.buf = append(r.buf, create+"\n\n"...)
}

func (r *renderer) set(s *Set) {
	var b []byte
	b = append(b, " { type "...)
	for i, k := range s.Key {
		if i > 0 {
			b = append(b, " . "...)
		}
		b = append(b, k...)
	}
	if s.Value != "" {
		b = append(append(b, " : "...), s.Value...)
	}
	b = append(b, " ;"...)
	if len(s.Flags) > 0 {
		b = append(b, " flags "...)
		for i, f := range s.Flags {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, f...)
		}
		b = append(b, " ;"...)
	}
	if s.Timeout > 0 {
		b = append(b, " timeout "...)
		b = strconv.AppendInt(b, int64(s.Timeout.Seconds()), 10)
		b = append(b, "s ;"...)
	}
	b = appendComment(b, s.Comment)
	b = append(b, " }"...)
	keyword := "add set "
	if s.IsMap() {
		keyword = "add map "
	}
	r.line(keyword, s.Name, string(b))
}

func appendComment(b []byte, c string) []byte {
	if c == "" {
		return b
	}
	b = append(b, ` comment "`...)
	b = append(b, c...)
	return append(b, `" ;`...)
}

func (r *renderer) chain(c *Chain) {
	if c.Base == nil && c.Comment == "" {
		r.line("add chain ", c.Name)
		return
	}
	var b []byte
	b = append(b, " {"...)
	if bc := c.Base; bc != nil {
		b = append(b, " type "...)
		b = append(b, bc.Type...)
		b = append(b, " hook "...)
		b = append(b, bc.Hook...)
		b = append(b, " priority "...)
		b = strconv.AppendInt(b, int64(bc.Priority), 10)
		b = append(b, " ;"...)
	}
	b = appendComment(b, c.Comment)
	r.line("add chain ", c.Name, string(append(b, " }"...)))
}

func (r *renderer) elements(s *Set) {
	if len(s.Elements) == 0 {
		return
	}
	r.newline()
	for i := range s.Elements {
		r.buf = append(r.buf, "add element "...)
		r.buf = append(r.buf, r.prefix...)
		r.buf = append(r.buf, s.Name...)
		r.buf = append(r.buf, " { "...)
		r.buf = AppendElement(r.buf, s, &s.Elements[i])
		r.buf = append(r.buf, " }\n"...)
		r.maybeFlush()
	}
}

// AppendElement appends e as nft writes it inside the braces of an
// element command of set s: the key's parts joined by " . ", the comment,
// and for a map " : " and the verdict.
func AppendElement(b []byte, s *Set, e *Element) []byte {
	for i, k := range s.Key {
		if i > 0 {
			b = append(b, " . "...)
		}
		switch k {
		case TypeIPv4Addr, TypeIPv6Addr:
			b = e.Addr.AppendTo(b)
		case TypeInetProto:
			b = append(b, e.Proto...)
		default:
			b = strconv.AppendUint(b, uint64(e.Port), 10)
		}
	}
	if e.Comment != "" {
		b = append(b, ` comment "`...)
		b = append(b, e.Comment...)
		b = append(b, '"')
	}
	if s.IsMap() {
		b = append(b, " : "...)
		b = e.Action.appendText(b, "")
	}
	return b
}
