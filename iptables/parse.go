package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ParseOptions tune [ParseSave]. The zero value keeps everything.
type ParseOptions struct {
	// OwnerPrefix, when not empty, keeps only the chains whose names start
	// with it and the rules of built-in chains whose target does, so that
	// the chains of other programs in real iptables-save output are left
	// out. Tables with nothing kept are left out too.
	OwnerPrefix string
}

// ParseSave parses iptables-save output, or the text of [Plan.WriteTo],
// into a Plan of the given family. Chains declared with policy "-" are
// owned chains; rules in built-in chains become Jumps: a rule ending in
// "-j TARGET" has that Target, its last comment as Comment and its other
// arguments as Match, and any other rule has an empty Target and all its
// arguments but the comment as Match. The Jumps come in text order,
// grouped by table in the order [Plan.WriteTo] writes the tables, so
// that ParseSave(p.String()) equals p. Counters ("[p:b]") and "#" lines
// are ignored; the commands -N, -X and -F are understood as
// iptables-restore does. Rules of owned chains are kept as written, after
// checking that they split into arguments. An error is an [*Error] naming
// the line.
//
// At most one ParseOptions may be given.
func ParseSave(family Family, text string, opts ...ParseOptions) (*Plan, error) {
	p := saveParser{plan: &Plan{Family: family}}
	switch len(opts) {
	case 0:
	case 1:
		p.opts = opts[0]
	default:
		return nil, &Error{Op: "parse", Err: fmt.Errorf("more than one ParseOptions: %w", ErrSyntax)}
	}
	for text != "" {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		p.line++
		if err := p.parseLine(strings.Trim(line, " \t\r")); err != nil {
			e := &Error{Op: "parse", Line: p.line, Chain: p.chain, Err: err}
			if p.table != nil {
				e.Table = p.table.name
			}
			return nil, e
		}
	}
	if p.table != nil {
		return nil, &Error{Op: "parse", Line: p.table.line, Table: p.table.name,
			Err: fmt.Errorf("no COMMIT for table: %w", ErrSyntax)}
	}
	// Group the jumps in the order WriteTo writes the tables, which puts
	// the tables without owned chains last.
	order := p.plan.renderTables(nil)
	slices.SortStableFunc(p.plan.Jumps, func(a, b Jump) int {
		return slices.Index(order, a.Table) - slices.Index(order, b.Table)
	})
	return p.plan, nil
}

type saveParser struct {
	opts  ParseOptions
	plan  *Plan
	line  int
	table *tableState
	// chain is the chain of the line being parsed, for errors.
	chain string
	// jumpStart is where the current table's jumps start in plan.Jumps.
	jumpStart int
	// seen are the tables opened so far.
	seen []string
}

type tableState struct {
	name     Table
	line     int
	chains   []*chainState
	byName   map[string]*chainState
	builtins map[string]bool
}

type chainState struct {
	name    string
	rules   []string
	keep    bool
	deleted bool
}

func (p *saveParser) parseLine(line string) error {
	p.chain = ""
	if line == "" || line[0] == '#' {
		return nil
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("control character %q: %w", c, ErrSyntax)
		}
	}
	if line[0] == '[' {
		counters, rest, ok := strings.Cut(line, " ")
		if !ok || !isCounters(counters) || !strings.HasPrefix(strings.TrimLeft(rest, " "), "-") {
			return fmt.Errorf("malformed counters: %w", ErrSyntax)
		}
		line = strings.TrimLeft(rest, " ")
	}
	switch {
	case line[0] == '*':
		return p.openTable(Table(line[1:]))
	case p.table == nil:
		return fmt.Errorf("%q outside a table: %w", firstWord(line), ErrSyntax)
	case line == "COMMIT":
		p.commit()
		return nil
	case line[0] == ':':
		return p.declare(line[1:])
	case line[0] == '-':
		return p.command(line)
	}
	return fmt.Errorf("unexpected %q: %w", firstWord(line), ErrSyntax)
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
}

func (p *saveParser) openTable(t Table) error {
	if p.table != nil {
		return fmt.Errorf("table %s opened before COMMIT of %s: %w", t, p.table.name, ErrSyntax)
	}
	if t == "" || strings.ContainsAny(string(t), " \t") {
		return fmt.Errorf("table name %q: %w", t, ErrSyntax)
	}
	if oneOf(string(t), p.seen) {
		return fmt.Errorf("table %s: %w", t, ErrDuplicateTable)
	}
	p.seen = append(p.seen, string(t))
	// Built-in chains are those of the tables svcplan knows: Plan text
	// never declares them, and ParseSave refuses a policy on any other.
	ts := &tableState{name: t, line: p.line, byName: map[string]*chainState{}, builtins: map[string]bool{}}
	for _, c := range builtinChains(t) {
		ts.builtins[c] = true
	}
	p.table, p.jumpStart = ts, len(p.plan.Jumps)
	return nil
}

func (p *saveParser) commit() {
	ts := p.table
	p.table = nil
	tc := TableChains{Table: ts.name}
	for _, c := range ts.chains {
		if c.deleted || !c.keep {
			continue
		}
		ch := Chain{Name: c.name, n: len(c.rules)}
		if len(c.rules) > 0 {
			ch.body = strings.Join(c.rules, "\n") + "\n"
		}
		tc.Chains = append(tc.Chains, ch)
	}
	// A table without owned chains is left out when it has jumps (the
	// plan renders a section for it anyway) or when filtering by owner.
	hasJumps := len(p.plan.Jumps) > p.jumpStart
	if len(tc.Chains) == 0 && (hasJumps || p.opts.OwnerPrefix != "") {
		return
	}
	p.plan.Tables = append(p.plan.Tables, tc)
}

// declare handles ":NAME POLICY [p:b]".
func (p *saveParser) declare(rest string) error {
	f := strings.Fields(rest)
	if len(f) < 2 || len(f) > 3 {
		return fmt.Errorf("chain line needs a name and a policy: %w", ErrSyntax)
	}
	name, policy := f[0], f[1]
	p.chain = name
	if len(f) == 3 && !isCounters(f[2]) {
		return fmt.Errorf("malformed counters %q: %w", f[2], ErrSyntax)
	}
	builtin := p.table.builtins[name]
	switch {
	case builtin && policy != "-" && policy != "ACCEPT" && policy != "DROP":
		return fmt.Errorf("policy %q: %w", policy, ErrSyntax)
	case !builtin && policy != "-":
		return fmt.Errorf("policy %s for a chain that is not built-in: %w", policy, ErrSyntax)
	case builtin:
		return nil
	}
	return p.newChain(name)
}

func (p *saveParser) newChain(name string) error {
	ts := p.table
	if err := checkChainName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrChainName, err)
	}
	if _, dup := ts.byName[name]; dup || ts.builtins[name] {
		return ErrDuplicateChain
	}
	c := &chainState{name: name, keep: strings.HasPrefix(name, p.opts.OwnerPrefix)}
	ts.chains = append(ts.chains, c)
	ts.byName[name] = c
	return nil
}

func isCounters(s string) bool {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	a, b, ok := strings.Cut(s[1:len(s)-1], ":")
	_, errA := strconv.ParseUint(a, 10, 64)
	_, errB := strconv.ParseUint(b, 10, 64)
	return ok && errA == nil && errB == nil
}

// command handles "-A CHAIN args", "-I CHAIN [N] args", "-N CHAIN",
// "-X CHAIN" and "-F CHAIN".
func (p *saveParser) command(line string) error {
	cmd, rest, _ := strings.Cut(line, " ")
	name, args, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
	args = strings.Trim(args, " ")
	if name == "" {
		return fmt.Errorf("%s needs a chain: %w", cmd, ErrSyntax)
	}
	p.chain = name
	switch cmd {
	case "-A", "--append":
		return p.addRule(name, args, -1)
	case "-I", "--insert":
		pos := 1
		if n, after, _ := strings.Cut(args, " "); n != "" && n[0] >= '0' && n[0] <= '9' {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				return fmt.Errorf("insert position %q: %w", n, ErrSyntax)
			}
			pos, args = v, strings.TrimLeft(after, " ")
		}
		return p.addRule(name, args, pos)
	}
	if args != "" {
		return fmt.Errorf("unexpected arguments after %s %s: %w", cmd, name, ErrSyntax)
	}
	switch cmd {
	case "-N", "--new-chain":
		return p.newChain(name)
	case "-X", "--delete-chain":
		return p.deleteChain(name)
	case "-F", "--flush":
		return p.flush(name)
	}
	return fmt.Errorf("command %q: %w", cmd, ErrUnsupported)
}

func (p *saveParser) deleteChain(name string) error {
	c := p.table.byName[name]
	if c == nil {
		return ErrMissingChain
	}
	if len(c.rules) > 0 {
		return fmt.Errorf("deleting a chain that has rules: %w", ErrSyntax)
	}
	c.deleted = true
	delete(p.table.byName, name)
	return nil
}

func (p *saveParser) flush(name string) error {
	if c := p.table.byName[name]; c != nil {
		c.rules = nil
		return nil
	}
	if !p.table.builtins[name] {
		return ErrMissingChain
	}
	js := p.plan.Jumps[:p.jumpStart]
	for _, j := range p.plan.Jumps[p.jumpStart:] {
		if j.Chain != name {
			js = append(js, j)
		}
	}
	p.plan.Jumps = js
	return nil
}

// addRule appends (pos < 0) or inserts at 1-based pos a rule.
func (p *saveParser) addRule(name, args string, pos int) error {
	ts := p.table
	if c := ts.byName[name]; c != nil {
		if err := checkArgs(args); err != nil {
			return err
		}
		if !c.keep {
			return nil
		}
		if pos > len(c.rules)+1 {
			return fmt.Errorf("insert position %d beyond the chain's %d rules: %w", pos, len(c.rules), ErrSyntax)
		}
		if pos < 0 {
			c.rules = append(c.rules, args)
		} else {
			c.rules = append(c.rules, "")
			copy(c.rules[pos:], c.rules[pos-1:])
			c.rules[pos-1] = args
		}
		return nil
	}
	if !ts.builtins[name] {
		return ErrMissingChain
	}
	toks, err := SplitArgs(args)
	if err != nil {
		return err
	}
	j := jumpFromArgs(ts.name, name, toks)
	if pfx := p.opts.OwnerPrefix; pfx != "" && !strings.HasPrefix(effectiveTarget(toks), pfx) {
		return nil
	}
	return p.insertJump(j, pos)
}

func (p *saveParser) insertJump(j Jump, pos int) error {
	js := p.plan.Jumps
	if pos < 0 {
		p.plan.Jumps = append(js, j)
		return nil
	}
	n := 0
	for i := p.jumpStart; i < len(js); i++ {
		if js[i].Chain != j.Chain {
			continue
		}
		if n++; n == pos {
			js = append(js, Jump{})
			copy(js[i+1:], js[i:])
			js[i] = j
			p.plan.Jumps = js
			return nil
		}
	}
	if pos > n+1 {
		return fmt.Errorf("insert position %d beyond the chain's %d rules: %w", pos, n, ErrSyntax)
	}
	p.plan.Jumps = append(js, j)
	return nil
}

// jumpFromArgs makes the Jump for a rule of a built-in chain.
func jumpFromArgs(t Table, chain string, toks []string) Jump {
	j := Jump{Table: t, Chain: chain}
	for i := len(toks) - 4; i >= 0; i-- {
		if (toks[i] == "-m" || toks[i] == "--match") && toks[i+1] == "comment" && toks[i+2] == "--comment" {
			j.Comment = toks[i+3]
			toks = append(toks[:i:i], toks[i+4:]...)
			break
		}
	}
	if n := len(toks); n >= 2 && (toks[n-2] == "-j" || toks[n-2] == "--jump") && toks[n-1] != "" {
		j.Target = toks[n-1]
		toks = toks[:n-2]
	}
	if len(toks) > 0 {
		j.Match = toks
	}
	return j
}

// effectiveTarget returns the argument after the last -j or -g.
func effectiveTarget(toks []string) string {
	for i := len(toks) - 2; i >= 0; i-- {
		switch toks[i] {
		case "-j", "--jump", "-g", "--goto":
			return toks[i+1]
		}
	}
	return ""
}

// builtinChains returns the built-in chains of table t.
func builtinChains(t Table) []string {
	switch t {
	case TableFilter:
		return []string{"INPUT", "FORWARD", "OUTPUT"}
	case TableNAT:
		return []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}
	case TableMangle:
		return []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
	case TableRaw:
		return []string{"PREROUTING", "OUTPUT"}
	case "security":
		return []string{"INPUT", "FORWARD", "OUTPUT"}
	}
	return nil
}

// SplitArgs splits a rule's text into arguments as iptables-restore
// does: arguments are separated by spaces or tabs, and a double-quoted
// part may contain them, with a backslash escaping the next character
// inside quotes. A closing quote ends the argument. It reports an
// unterminated quote.
func SplitArgs(text string) ([]string, error) {
	args := make([]string, 0, strings.Count(text, " ")+1)
	for i := 0; ; {
		a, next, ok, err := nextArg(text, i)
		if err != nil {
			return nil, err
		}
		if !ok {
			if len(args) == 0 {
				return nil, nil
			}
			return args, nil
		}
		args = append(args, a)
		i = next
	}
}

// checkArgs reports whether text splits into arguments, without keeping
// them.
func checkArgs(text string) error {
	for i := 0; ; {
		_, next, ok, err := nextArg(text, i)
		if err != nil || !ok {
			return err
		}
		i = next
	}
}

// nextArg returns the argument starting at or after i, and where the
// next one may start; ok is false at the end of text.
func nextArg(s string, i int) (arg string, next int, ok bool, err error) {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i == len(s) {
		return "", i, false, nil
	}
	start := i
	for ; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t':
			return s[start:i], i, true, nil
		case '"':
			return quotedArg(s, start, i)
		}
	}
	return s[start:], i, true, nil
}

// quotedArg finishes an argument s[start:] whose quote opens at q.
func quotedArg(s string, start, q int) (string, int, bool, error) {
	b := []byte(s[start:q])
	for i := q + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			b = append(b, s[i])
		case c == '"':
			return string(b), i + 1, true, nil
		default:
			b = append(b, c)
		}
	}
	return "", len(s), false, fmt.Errorf("argument starting %q: %w", truncate(s[start:], 20), ErrUnbalancedQuote)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Normalize returns iptables-save output reduced to what two saves of the
// same rules have in common: comment lines ("# Generated by ...") and
// blank lines are removed, chain counters read "[0:0]", rule counters
// ("[p:b] -A ...") are dropped and trailing spaces are trimmed. Nothing is
// reordered.
func Normalize(text string) string {
	var b strings.Builder
	b.Grow(len(text))
	for text != "" {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		line = strings.TrimRight(line, " \t\r")
		switch {
		case line == "" || line[0] == '#':
			continue
		case line[0] == ':':
			if i := strings.LastIndexByte(line, ' '); i > 0 && isCounters(line[i+1:]) {
				line = line[:i] + " [0:0]"
			}
		case line[0] == '[':
			if _, rest, ok := strings.Cut(line, "] "); ok && isCounters(line[:len(line)-len(rest)-1]) {
				line = rest
			}
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// targetOption handles opt for the rule's target, reporting whether the
// target knows it.
func (p *ruleParser) targetOption(opt string, neg bool) (bool, error) {
	o := &p.r.TargetOptions
	var known []string
	switch p.r.Target {
	case "DNAT":
		known = []string{"--to-destination", "--random", "--persistent"}
	case "SNAT":
		known = []string{"--to-source", "--random", "--random-fully", "--persistent"}
	case "MASQUERADE":
		known = []string{"--to-ports", "--random", "--random-fully"}
	case "REDIRECT":
		known = []string{"--to-ports", "--random"}
	case "MARK":
		known = []string{"--set-xmark", "--set-mark", "--or-mark", "--xor-mark", "--and-mark"}
	case "REJECT":
		known = []string{"--reject-with"}
	case "LOG":
		known = []string{"--log-prefix", "--log-level"}
	case "CT":
		known = []string{"--notrack"}
	}
	if !oneOf(opt, known) {
		return false, nil
	}
	if neg {
		return true, fmt.Errorf("\"!\" before %s: %w", opt, ErrSyntax)
	}
	switch opt {
	case "--random":
		o.Random = true
	case "--random-fully":
		o.RandomFully = true
	case "--persistent":
		o.Persistent = true
	case "--notrack":
		o.NoTrack = true
	default:
		v, err := p.value(opt)
		if err == nil && opt != "--log-prefix" {
			err = checkWord(opt, v)
		}
		if err != nil {
			return true, err
		}
		if err := p.targetValue(opt, v); err != nil {
			return true, fmt.Errorf("option %s: %w", opt, err)
		}
	}
	return true, nil
}

func (p *ruleParser) targetValue(opt, v string) error {
	o := &p.r.TargetOptions
	var err error
	switch opt {
	case "--to-destination":
		o.ToDestination, err = parseNATAddr(v)
	case "--to-source":
		o.ToSource, err = parseNATAddr(v)
	case "--to-ports":
		o.ToPorts, err = parsePortRange(v, "-")
	case "--reject-with":
		o.RejectWith = v
	case "--log-prefix":
		o.LogPrefix = v
	case "--log-level":
		o.LogLevel = v
	default:
		if o.Mark != nil {
			return fmt.Errorf("two mark changes: %w", ErrSyntax)
		}
		o.Mark, err = parseMarkSet(opt, v)
	}
	return err
}

// normalizeProtocol returns the name iptables-save prints for protocol v,
// or "" for any protocol.
func normalizeProtocol(v string) string {
	switch v = strings.ToLower(v); v {
	case "all", "0":
		return ""
	case "6":
		return "tcp"
	case "17":
		return "udp"
	case "132":
		return "sctp"
	case "1":
		return "icmp"
	case "58", "icmpv6":
		return "ipv6-icmp"
	}
	return v
}

// parseAddrPrefix parses the value of -s or -d: an address, or an address
// with a prefix length or (IPv4) a netmask.
func parseAddrPrefix(v string) (netip.Prefix, error) {
	addr, bits, hasBits := strings.Cut(v, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", v, ErrSyntax)
	}
	n := a.BitLen()
	if hasBits {
		n, err = prefixBits(a, bits)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("address %q: %w", v, err)
		}
	}
	return a.Prefix(n)
}

func prefixBits(a netip.Addr, bits string) (int, error) {
	if n, err := strconv.Atoi(bits); err == nil {
		if n < 0 || n > a.BitLen() {
			return 0, fmt.Errorf("prefix length %d: %w", n, ErrSyntax)
		}
		return n, nil
	}
	m, err := netip.ParseAddr(bits)
	if err != nil || m.BitLen() != a.BitLen() {
		return 0, fmt.Errorf("mask %q: %w", bits, ErrSyntax)
	}
	b := m.AsSlice()
	n := 0
	for n < len(b)*8 && b[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	for i := n; i < len(b)*8; i++ {
		if b[i/8]&(0x80>>(i%8)) != 0 {
			return 0, fmt.Errorf("mask %q not contiguous: %w", bits, ErrUnsupported)
		}
	}
	return n, nil
}

// parsePortRange parses "P", or "P<sep>Q" with either end optional.
func parsePortRange(v, sep string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(v, sep)
	if !isRange {
		n, err := parsePort(v)
		return PortRange{n, n}, err
	}
	r := PortRange{0, 65535}
	var err error
	if lo != "" {
		if r.First, err = parsePort(lo); err != nil {
			return PortRange{}, err
		}
	}
	if hi != "" {
		if r.Last, err = parsePort(hi); err != nil {
			return PortRange{}, err
		}
	}
	if r.First > r.Last {
		return PortRange{}, fmt.Errorf("port range %q: %w", v, ErrSyntax)
	}
	return r, nil
}

func parsePort(v string) (uint16, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: %w", v, ErrSyntax)
	}
	return uint16(n), nil
}

// parseNATAddr parses a NAT target's address: "ip", "ip:port",
// "[ip6]:port" or "ip6". Ranges are not supported.
func parseNATAddr(v string) (netip.AddrPort, error) {
	if strings.HasPrefix(v, "[") {
		if strings.HasSuffix(v, "]") {
			v = strings.Trim(v, "[]")
		} else {
			ap, err := netip.ParseAddrPort(v)
			if err != nil || ap.Addr().Zone() != "" {
				return netip.AddrPort{}, fmt.Errorf("address %q: %w", v, ErrSyntax)
			}
			return ap, nil
		}
	} else if strings.Count(v, ":") == 1 {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", v, ErrSyntax)
		}
		return ap, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", v, ErrSyntax)
	}
	return netip.AddrPortFrom(a, 0), nil
}

func parseMark(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("mark %q: %w", v, ErrSyntax)
	}
	return uint32(n), nil
}

// parseMarkMask parses "V" or "V/M"; without a mask the mask is all ones.
func parseMarkMask(v string) (val, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(v, "/")
	if val, err = parseMark(vs); err != nil {
		return 0, 0, err
	}
	mask = ^uint32(0)
	if hasMask {
		if mask, err = parseMark(ms); err != nil {
			return 0, 0, err
		}
	}
	return val, mask, nil
}

// parseMarkSet turns a MARK target option into the kernel's xmark form,
// as libxt_MARK does.
func parseMarkSet(opt, v string) (*MarkSet, error) {
	switch opt {
	case "--set-xmark", "--set-mark":
		val, mask, err := parseMarkMask(v)
		if err != nil {
			return nil, err
		}
		if opt == "--set-mark" {
			mask |= val
		}
		return &MarkSet{Value: val, Mask: mask}, nil
	}
	n, err := parseMark(v)
	if err != nil {
		return nil, err
	}
	switch opt {
	case "--or-mark":
		return &MarkSet{Value: n, Mask: n}, nil
	case "--xor-mark":
		return &MarkSet{Value: n}, nil
	}
	return &MarkSet{Mask: ^n}, nil // --and-mark
}
