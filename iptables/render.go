package iptables

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// ChainKey names a chain of a table.
type ChainKey struct {
	// Table is the chain's table.
	Table Table
	// Chain is the chain's name.
	Chain string
}

// RenderOptions select what [Plan.WriteTables] writes. The zero value
// writes the whole plan, as [Plan.WriteTo] does.
type RenderOptions struct {
	// Tables limits the output to these tables; nil means every table of
	// the plan.
	Tables []Table
	// Chains, when not nil, selects the owned chains written: a chain is
	// declared and its rules written only when Chains holds true for it.
	// The others are left out entirely, so that iptables-restore --noflush
	// leaves them as they are.
	Chains map[ChainKey]bool
	// Delete are chains to remove, typically owned chains no longer in the
	// plan: each is declared (which flushes it) and deleted with -X after
	// the rules of its table.
	Delete []ChainKey
	// NoJumps leaves out the plan's Jumps, for an applier that keeps the
	// rules of the built-in chains itself.
	NoJumps bool
}

// TableStats counts what a plan holds in one table.
type TableStats struct {
	// Table is the table.
	Table Table
	// Chains is the number of owned chains.
	Chains int
	// Rules is the number of rules in the owned chains.
	Rules int
	// Jumps is the number of the plan's Jumps in the table's built-in
	// chains.
	Jumps int
}

// WriteTo writes p as iptables-restore input, streaming it through a
// buffer: per table, in the order of p.Tables and then of the tables that
// only have Jumps, "*table", a ":CHAIN - [0:0]" line for each owned chain,
// the chains' rules as "-A CHAIN ..." lines, the Jumps as
// "-I BUILTIN N ..." lines numbered from 1 per built-in chain (so that in
// a fresh namespace they end up at the top, in order) and "COMMIT". The
// text is valid input for iptables-restore --noflush. It reports a name
// or jump argument that cannot be written safely before writing anything.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	return p.WriteTables(w, RenderOptions{})
}

// String returns p as [Plan.WriteTo] writes it. If p cannot be rendered,
// the text ends with a "#" line naming the problem where WriteTo failed.
func (p *Plan) String() string {
	var b strings.Builder
	// Measure first, so that the text is built in one allocation of its
	// exact size rather than by repeated growth.
	if n, err := p.WriteTo(io.Discard); err == nil {
		b.Grow(int(n))
	}
	if _, err := p.WriteTo(&b); err != nil {
		b.WriteString("# render error: ")
		b.WriteString(strings.ReplaceAll(err.Error(), "\n", " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// WriteTables writes the part of p that opts select, in the format of
// [Plan.WriteTo]: for a partial sync, only changed chains, the deletion
// of stale chains, and optionally no Jumps. A table with nothing selected
// is left out when opts.Chains is set.
func (p *Plan) WriteTables(w io.Writer, opts RenderOptions) (int64, error) {
	cw := &countingWriter{w: w}
	r := renderer{p: p, opts: &opts, w: bufio.NewWriterSize(cw, 64<<10)}
	tables := r.tables()
	for _, t := range tables {
		if err := r.check(t); err != nil {
			return 0, err
		}
	}
	for _, t := range tables {
		r.table(t)
	}
	err := r.w.Flush()
	return cw.n, err
}

// Stats counts p's chains, rules and jumps per table, in render order.
func (p *Plan) Stats() []TableStats {
	var out []TableStats
	for _, t := range p.renderTables(nil) {
		s := TableStats{Table: t}
		if tc := p.Table(t); tc != nil {
			s.Chains = len(tc.Chains)
			for i := range tc.Chains {
				s.Rules += tc.Chains[i].n
			}
		}
		for _, j := range p.Jumps {
			if j.Table == t {
				s.Jumps++
			}
		}
		out = append(out, s)
	}
	return out
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

type renderer struct {
	p    *Plan
	opts *RenderOptions
	w    *bufio.Writer
}

// tables returns the tables to write, in render order.
func (r *renderer) tables() []Table {
	all := r.p.renderTables(r.opts.Delete)
	if r.opts.Tables == nil {
		return all
	}
	out := all[:0]
	for _, t := range all {
		if oneOfTable(t, r.opts.Tables) {
			out = append(out, t)
		}
	}
	return out
}

// renderTables returns p's tables, then those only jumps use, then those
// only del uses.
func (p *Plan) renderTables(del []ChainKey) []Table {
	out := make([]Table, 0, len(p.Tables)+2)
	for _, tc := range p.Tables {
		out = append(out, tc.Table)
	}
	for _, j := range p.Jumps {
		if !oneOfTable(j.Table, out) {
			out = append(out, j.Table)
		}
	}
	for _, k := range del {
		if !oneOfTable(k.Table, out) {
			out = append(out, k.Table)
		}
	}
	return out
}

func oneOfTable(t Table, list []Table) bool {
	for _, l := range list {
		if l == t {
			return true
		}
	}
	return false
}

func (r *renderer) selected(t Table, name string) bool {
	return r.opts.Chains == nil || r.opts.Chains[ChainKey{t, name}]
}

// check reports what in table t cannot be written safely, before anything
// of t is written.
func (r *renderer) check(t Table) error {
	if err := checkTableName(t); err != nil {
		return &Error{Op: "render", Table: t, Err: err}
	}
	if tc := r.p.Table(t); tc != nil {
		for i := range tc.Chains {
			if err := checkChainName(tc.Chains[i].Name); err != nil {
				return &Error{Op: "render", Table: t, Err: fmt.Errorf("%w: %w", ErrChainName, err)}
			}
		}
	}
	for _, k := range r.opts.Delete {
		if k.Table != t {
			continue
		}
		if err := checkChainName(k.Chain); err != nil {
			return &Error{Op: "render", Table: t, Err: fmt.Errorf("%w: %w", ErrChainName, err)}
		}
		if r.p.Chain(t, k.Chain) != nil && r.selected(t, k.Chain) {
			return &Error{Op: "render", Table: t, Chain: k.Chain,
				Err: fmt.Errorf("chain both written and deleted: %w", ErrSyntax)}
		}
	}
	if r.opts.NoJumps {
		return nil
	}
	for i, j := range r.p.Jumps {
		if j.Table == t {
			if err := checkJump(j); err != nil {
				return &Error{Op: "render", Table: t, Chain: j.Chain, Rule: r.p.jumpPosition(i), Err: err}
			}
		}
	}
	return nil
}

func checkTableName(t Table) error {
	if t == "" {
		return fmt.Errorf("empty table name: %w", ErrSyntax)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c == 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("table name %q: %w", t, ErrUnsafeArgument)
		}
	}
	return nil
}

func checkJump(j Jump) error {
	if err := checkChainName(j.Chain); err != nil {
		return fmt.Errorf("%w: %w", ErrChainName, err)
	}
	if j.Target != "" {
		if err := checkChainName(j.Target); err != nil {
			return fmt.Errorf("target: %w: %w", ErrChainName, err)
		}
	}
	for _, a := range j.Match {
		if _, ok := quoteArg(nil, a); !ok {
			return fmt.Errorf("argument %q: %w", a, ErrUnsafeArgument)
		}
	}
	if _, ok := quoteArg(nil, j.Comment); !ok && j.Comment != "" {
		return fmt.Errorf("comment %q: %w", j.Comment, ErrUnsafeArgument)
	}
	return nil
}

// jumpPosition returns the 1-based position of p.Jumps[i] among the jumps
// into its built-in chain.
func (p *Plan) jumpPosition(i int) int {
	n := 1
	for _, j := range p.Jumps[:i] {
		if j.Table == p.Jumps[i].Table && j.Chain == p.Jumps[i].Chain {
			n++
		}
	}
	return n
}

// table writes table t's section, which check has approved.
func (r *renderer) table(t Table) {
	tc := r.p.Table(t)
	var chains []Chain
	if tc != nil {
		chains = tc.Chains
	}
	if r.opts.Chains != nil && !r.hasOutput(t, chains) {
		return
	}
	w := r.w
	w.WriteString("*")
	w.WriteString(string(t))
	w.WriteByte('\n')
	for i := range chains {
		if r.selected(t, chains[i].Name) {
			writeChainLine(w, chains[i].Name)
		}
	}
	for _, k := range r.opts.Delete {
		if k.Table == t {
			writeChainLine(w, k.Chain)
		}
	}
	for i := range chains {
		if r.selected(t, chains[i].Name) {
			writeRules(w, &chains[i])
		}
	}
	for _, k := range r.opts.Delete {
		if k.Table == t {
			w.WriteString("-X ")
			w.WriteString(k.Chain)
			w.WriteByte('\n')
		}
	}
	if !r.opts.NoJumps {
		r.jumps(t)
	}
	w.WriteString("COMMIT\n")
}

func (r *renderer) hasOutput(t Table, chains []Chain) bool {
	for i := range chains {
		if r.selected(t, chains[i].Name) {
			return true
		}
	}
	for _, k := range r.opts.Delete {
		if k.Table == t {
			return true
		}
	}
	if !r.opts.NoJumps {
		for _, j := range r.p.Jumps {
			if j.Table == t {
				return true
			}
		}
	}
	return false
}

func writeChainLine(w *bufio.Writer, name string) {
	if w.Available() < len(name)+10 {
		w.Flush() // an error stays in w and is reported by the last Flush
	}
	b := append(w.AvailableBuffer(), ':')
	b = append(b, name...)
	w.Write(append(b, " - [0:0]\n"...))
}

// writeRules writes c's rules as "-A" lines. Each line is assembled in
// the writer's free buffer and handed over in one Write, which costs far
// less per line than four small writes.
func writeRules(w *bufio.Writer, c *Chain) {
	body := c.body
	for body != "" {
		i := strings.IndexByte(body, '\n')
		if i < 0 {
			i = len(body) - 1 // unreachable: bodies end in a newline
		}
		line := body[:i+1]
		if w.Available() < len(line)+len(c.Name)+4 {
			w.Flush() // an error stays in w and is reported by the last Flush
		}
		b := append(w.AvailableBuffer(), "-A "...)
		b = append(b, c.Name...)
		b = append(b, ' ')
		w.Write(append(b, line...))
		body = body[i+1:]
	}
}

// jumps writes the Jumps of table t as "-I" lines.
func (r *renderer) jumps(t Table) {
	w := r.w
	for i, j := range r.p.Jumps {
		if j.Table != t {
			continue
		}
		w.WriteString("-I ")
		w.WriteString(j.Chain)
		w.WriteByte(' ')
		w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(r.p.jumpPosition(i)), 10))
		for _, a := range j.Match {
			w.WriteByte(' ')
			w.Write(mustQuote(w.AvailableBuffer(), a))
		}
		if j.Comment != "" {
			w.WriteString(" -m comment --comment ")
			w.Write(mustQuote(w.AvailableBuffer(), j.Comment))
		}
		if j.Target != "" {
			w.WriteString(" -j ")
			w.WriteString(j.Target)
		}
		w.WriteByte('\n')
	}
}

func mustQuote(dst []byte, a string) []byte {
	b, _ := quoteArg(dst, a) // checked by check
	return b
}

// quoteArg appends a as ChainBuilder writes it: in double quotes when it
// holds a space, "'" or "#". It reports false for an argument that cannot
// be written safely: empty, or holding a double quote, a backslash or a
// control character.
func quoteArg(dst []byte, a string) ([]byte, bool) {
	if a == "" {
		return dst, false
	}
	quote := false
	for i := 0; i < len(a); i++ {
		switch c := a[i]; {
		case c == '"' || c == '\\' || c < 0x20 || c == 0x7f:
			return dst, false
		case c == ' ' || c == '\'' || c == '#':
			quote = true
		}
	}
	if !quote {
		return append(dst, a...), true
	}
	dst = append(dst, '"')
	dst = append(dst, a...)
	return append(dst, '"'), true
}

// CanonicalRule returns a rule's text as iptables-save of family f prints
// it once the kernel holds the rule, so that a plan's rules can be
// compared with what the kernel reports. It reports a rule ParseRule
// refuses.
func CanonicalRule(f Family, text string) (string, error) {
	r, err := ParseRule(text)
	if err != nil {
		return "", err
	}
	return r.Canonical(f), nil
}

// String returns r as [Rule.Canonical] does, for the family of the
// addresses r holds (IPv4 when it holds none).
func (r *Rule) String() string {
	f := IPv4
	for _, a := range []netip.Addr{r.Source.Prefix.Addr(), r.Destination.Prefix.Addr(),
		r.TargetOptions.ToDestination.Addr(), r.TargetOptions.ToSource.Addr()} {
		if a.IsValid() {
			f = familyOf(a)
			break
		}
	}
	return r.Canonical(f)
}

// Canonical returns r's text in the order and spelling iptables-save of
// family f prints: -s, -d, -i, -o and -p first, then the matches in the
// order they were loaded with their options in the extension's order and
// defaults filled in, then the target. A statistic probability is
// rounded as the kernel keeps it.
func (r *Rule) Canonical(f Family) string {
	b := make([]byte, 0, 128)
	b = appendAddr(b, "-s", r.Source)
	b = appendAddr(b, "-d", r.Destination)
	b = appendIface(b, "-i", r.InInterface)
	b = appendIface(b, "-o", r.OutInterface)
	if r.Protocol != "" {
		b = appendNot(b, r.NotProtocol)
		b = append(b, " -p "+r.Protocol...)
	}
	sets := r.Sets
	for _, m := range r.Modules {
		b = append(b, " -m "+m...)
		if m == "set" && len(sets) > 0 {
			b = appendNot(b, sets[0].Invert)
			b = append(b, " --match-set "+sets[0].Name+" "+strings.Join(sets[0].Flags, ",")...)
			sets = sets[1:]
			continue
		}
		b = r.appendModule(b, m, f)
	}
	if r.Target != "" {
		if r.Goto {
			b = append(b, " -g "...)
		} else {
			b = append(b, " -j "...)
		}
		b = append(b, r.Target...)
		b = r.appendTargetOptions(b, f)
	}
	return strings.TrimPrefix(string(b), " ")
}

func appendNot(b []byte, not bool) []byte {
	if not {
		return append(b, " !"...)
	}
	return b
}

func appendAddr(b []byte, opt string, m AddrMatch) []byte {
	if !m.Prefix.IsValid() {
		return b
	}
	b = appendNot(b, m.Invert)
	return append(b, " "+opt+" "+m.Prefix.Masked().String()...)
}

func appendIface(b []byte, opt string, m InterfaceMatch) []byte {
	if m.Name == "" {
		return b
	}
	b = appendNot(b, m.Invert)
	return append(b, " "+opt+" "+m.Name...)
}

func appendPorts(b []byte, sep string, pr PortRange) []byte {
	b = strconv.AppendUint(b, uint64(pr.First), 10)
	if pr.Last != pr.First {
		b = append(b, sep...)
		b = strconv.AppendUint(b, uint64(pr.Last), 10)
	}
	return b
}

func appendPortMatch(b []byte, opt string, m *PortMatch) []byte {
	if m == nil || m.Ports == (PortRange{0, 65535}) {
		return b
	}
	b = appendNot(b, m.Invert)
	return appendPorts(append(b, " "+opt+" "...), ":", m.Ports)
}

// appendOrdered appends the items of list that are in set, in list's
// order, joined by commas.
func appendOrdered(b []byte, list []string, set []string) []byte {
	first := true
	for _, s := range list {
		if oneOf(s, set) {
			if !first {
				b = append(b, ',')
			}
			b, first = append(b, s...), false
		}
	}
	return b
}

func (r *Rule) appendModule(b []byte, m string, f Family) []byte {
	switch m {
	case "tcp", "udp", "sctp":
		b = appendPortMatch(b, "--sport", r.SourcePort)
		b = appendPortMatch(b, "--dport", r.DestinationPort)
	case "multiport":
		b = appendNot(b, r.Multiport.Invert)
		b = append(b, " "+r.Multiport.Option+" "...)
		for i, pr := range r.Multiport.Ports {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPorts(b, ":", pr)
		}
	case "comment":
		b = appendSaveString(append(b, " --comment "...), r.Comment)
	case "addrtype":
		if a := r.AddrType; a.SrcTypes != nil {
			b = appendOrdered(append(appendNot(b, a.NotSrc), " --src-type "...), addrTypes[:], a.SrcTypes)
		}
		if a := r.AddrType; a.DstTypes != nil {
			b = appendOrdered(append(appendNot(b, a.NotDst), " --dst-type "...), addrTypes[:], a.DstTypes)
		}
	case "mark":
		b = appendNot(b, r.Mark.Invert)
		b = appendMark(append(b, " --mark "...), r.Mark.Value, r.Mark.Mask, r.Mark.Mask != ^uint32(0))
	case "conntrack", "state":
		opt := " --ctstate "
		if m == "state" {
			opt = " --state "
		}
		b = appendOrdered(append(appendNot(b, r.ConnState.Invert), opt...), connStates[:], r.ConnState.States)
	case "statistic":
		b = appendStatistic(b, r.Statistic)
	case "recent":
		b = appendRecent(b, r.Recent, f)
	case "physdev":
		b = appendPhysdev(b, r.Physdev)
	}
	return b
}

func appendMark(b []byte, v, mask uint32, withMask bool) []byte {
	b = strconv.AppendUint(append(b, "0x"...), uint64(v), 16)
	if withMask {
		b = strconv.AppendUint(append(b, "/0x"...), uint64(mask), 16)
	}
	return b
}

func appendStatistic(b []byte, s *StatisticMatch) []byte {
	b = appendNot(b, s.Invert)
	if s.Mode == "nth" {
		b = strconv.AppendUint(append(b, " --mode nth --every "...), uint64(s.Every), 10)
		return strconv.AppendUint(append(b, " --packet "...), uint64(s.Packet), 10)
	}
	// The kernel keeps the probability as a fraction of 2^31.
	q := math.Round(s.Probability * (1 << 31))
	return strconv.AppendFloat(append(b, " --mode random --probability "...), q/(1<<31), 'f', 11, 64)
}

func appendRecent(b []byte, m *RecentMatch, f Family) []byte {
	b = appendNot(b, m.Invert)
	b = append(b, " --"+m.Command...)
	if m.Seconds != 0 {
		b = strconv.AppendUint(append(b, " --seconds "...), uint64(m.Seconds), 10)
	}
	if m.Reap {
		b = append(b, " --reap"...)
	}
	if m.HitCount != 0 {
		b = strconv.AppendUint(append(b, " --hitcount "...), uint64(m.HitCount), 10)
	}
	if m.TTL {
		b = append(b, " --rttl"...)
	}
	name := m.Name
	if name == "" {
		name = "DEFAULT"
	}
	mask := m.Mask
	if !mask.IsValid() {
		mask = netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if f == IPv6 {
			mask = netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
				8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
		}
	}
	b = append(b, " --name "+name+" --mask "+mask.String()...)
	if m.Dest {
		return append(b, " --rdest"...)
	}
	return append(b, " --rsource"...)
}

func appendPhysdev(b []byte, m *PhysdevMatch) []byte {
	flag := func(b []byte, opt string, f *bool) []byte {
		if f == nil {
			return b
		}
		return append(appendNot(b, !*f), " "+opt...)
	}
	b = flag(b, "--physdev-is-in", m.IsIn)
	if m.In.Name != "" {
		b = append(appendNot(b, m.In.Invert), " --physdev-in "+m.In.Name...)
	}
	b = flag(b, "--physdev-is-out", m.IsOut)
	if m.Out.Name != "" {
		b = append(appendNot(b, m.Out.Invert), " --physdev-out "+m.Out.Name...)
	}
	return flag(b, "--physdev-is-bridged", m.IsBridged)
}

func (r *Rule) appendTargetOptions(b []byte, f Family) []byte {
	o := &r.TargetOptions
	switch r.Target {
	case "DNAT":
		b = appendNATAddr(append(b, " --to-destination "...), o.ToDestination)
	case "SNAT":
		b = appendNATAddr(append(b, " --to-source "...), o.ToSource)
	case "MASQUERADE", "REDIRECT":
		if o.ToPorts != (PortRange{}) {
			b = appendPorts(append(b, " --to-ports "...), "-", o.ToPorts)
		}
	case "MARK":
		return appendMark(append(b, " --set-xmark "...), o.Mark.Value, o.Mark.Mask, true)
	case "REJECT":
		with := o.RejectWith
		if with == "" {
			with = "icmp-port-unreachable"
			if f == IPv6 {
				with = "icmp6-port-unreachable"
			}
		}
		return append(b, " --reject-with "+with...)
	case "LOG":
		if o.LogPrefix != "" {
			b = appendSaveString(append(b, " --log-prefix "...), o.LogPrefix)
		}
		if o.LogLevel != "" && o.LogLevel != "4" && o.LogLevel != "warning" {
			b = append(b, " --log-level "+o.LogLevel...)
		}
		return b
	case "CT":
		if o.NoTrack {
			b = append(b, " --notrack"...)
		}
		return b
	}
	if o.Random {
		b = append(b, " --random"...)
	}
	if o.RandomFully {
		b = append(b, " --random-fully"...)
	}
	if o.Persistent {
		b = append(b, " --persistent"...)
	}
	return b
}

func appendNATAddr(b []byte, ap netip.AddrPort) []byte {
	if ap.Port() == 0 {
		return append(b, ap.Addr().String()...)
	}
	return append(b, ap.String()...)
}

// appendSaveString appends s as iptables-save quotes a string: bare when
// it is made only of letters, digits, "_" and "-", else in double quotes
// with `"`, `\` and `'` escaped by a backslash.
func appendSaveString(b []byte, s string) []byte {
	bare := s != ""
	for i := 0; i < len(s) && bare; i++ {
		c := s[i]
		bare = c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	}
	if bare {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == '\'' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}
