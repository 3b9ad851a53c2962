package iptables

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Hook is where a traced packet enters the host's netfilter hooks.
type Hook string

// The hooks a packet can enter at.
const (
	// HookPrerouting is a packet arriving from outside: nat PREROUTING,
	// then filter INPUT (local destination) or FORWARD and nat
	// POSTROUTING.
	HookPrerouting Hook = "prerouting"
	// HookOutput is a locally generated packet: nat OUTPUT, filter OUTPUT
	// and nat POSTROUTING.
	HookOutput Hook = "output"
)

// Verdict is what became of a traced packet.
type Verdict string

// The verdicts.
const (
	VerdictAccept Verdict = "accept"
	VerdictDrop   Verdict = "drop"
	VerdictReject Verdict = "reject"
)

// Packet is the first packet of a new connection, to trace.
type Packet struct {
	// Src is the source address.
	Src netip.Addr
	// Dst is the destination address and port.
	Dst netip.AddrPort
	// Protocol is "tcp", "udp" or "sctp".
	Protocol string
	// Hook is where the packet enters.
	Hook Hook
	// InInterface and OutInterface are the interfaces -i and -o match;
	// empty means unknown, and a rule that matches on an unknown
	// interface is an error.
	InInterface, OutInterface string
}

// Outcome is one way a traced packet can go, with its probability.
type Outcome struct {
	// Probability is the chance of this outcome, in (0, 1].
	Probability float64
	// Verdict is whether the packet passes.
	Verdict Verdict
	// Dst is the destination after DNAT or REDIRECT; the packet's own
	// destination when not translated.
	Dst netip.AddrPort
	// DNAT reports that the destination was translated.
	DNAT bool
	// Masquerade reports that nat POSTROUTING rewrote the source
	// (MASQUERADE or SNAT).
	Masquerade bool
	// Path are the chains the packet went through, for display: each
	// built-in chain as "table/CHAIN", followed by the owned chains it
	// entered. Built-in chains without Jumps are left out.
	Path []string
}

// Result is the distribution of a traced packet's outcomes.
type Result struct {
	// Outcomes are the distinct outcomes, sorted by destination, then
	// verdict; their probabilities add up to 1 up to rounding.
	Outcomes []Outcome
}

// TracerOption configures a [Tracer].
type TracerOption func(*tracerConfig)

type tracerConfig struct {
	local []netip.Addr
}

// WithLocalAddrs sets the host's own addresses: the destinations
// "-m addrtype --dst-type LOCAL" matches (besides loopback), and those a
// packet is delivered to (filter INPUT) rather than forwarded. The first
// address of a family is where REDIRECT sends arriving packets.
func WithLocalAddrs(addrs []netip.Addr) TracerOption {
	addrs = slices.Clone(addrs)
	return func(c *tracerConfig) { c.local = append(c.local, addrs...) }
}

// Tracer follows packets through a plan's rules, the way the kernel would
// for the first packet of a connection. It is safe for concurrent use.
type Tracer struct {
	family Family
	local  []netip.Addr
	// chains holds the parsed rules of owned chains and, from the Jumps,
	// of built-in chains.
	chains  map[ChainKey][]Rule
	owned   map[ChainKey]bool
	hasJump map[ChainKey]bool
}

// maxDepth is how deep chains may call each other before the tracer
// reports a loop.
const maxDepth = 64

// maxBranches bounds the outcomes explored by one trace.
const maxBranches = 1 << 20

// NewTracer returns a tracer for p, parsing every rule once. It reports a
// rule that ParseRule refuses as an [*Error] naming it.
func NewTracer(p *Plan, opts ...TracerOption) (*Tracer, error) {
	var cfg tracerConfig
	for _, o := range opts {
		o(&cfg)
	}
	t := &Tracer{family: p.FamilyOrDefault(), local: cfg.local,
		chains: map[ChainKey][]Rule{}, owned: map[ChainKey]bool{}, hasJump: map[ChainKey]bool{}}
	for _, tc := range p.Tables {
		for i := range tc.Chains {
			c := &tc.Chains[i]
			k := ChainKey{tc.Table, c.Name}
			rules := make([]Rule, 0, c.n)
			for ri, text := range c.Rules() {
				r, err := ParseRule(text)
				if err != nil {
					return nil, &Error{Op: "trace", Table: tc.Table, Chain: c.Name, Rule: ri + 1, Err: err}
				}
				rules = append(rules, r)
			}
			t.chains[k], t.owned[k] = rules, true
		}
	}
	for i, j := range p.Jumps {
		r, err := ParseRuleArgs(j.Args())
		if err != nil {
			return nil, &Error{Op: "trace", Table: j.Table, Chain: j.Chain, Rule: p.jumpPosition(i), Err: err}
		}
		k := ChainKey{j.Table, j.Chain}
		t.chains[k] = append(t.chains[k], r)
		t.hasJump[k] = true
	}
	return t, nil
}

// verdict is the result of walking rules: continue (fell off a chain or
// RETURN) or a terminal verdict of the table.
type verdict int

const (
	vContinue verdict = iota
	vAccept
	vDrop
	vReject
)

// state is one possible packet state during a trace.
type state struct {
	prob       float64
	src        netip.Addr
	dst        netip.AddrPort
	proto      string
	mark       uint32
	dnat       bool
	masquerade bool
	path       []string
}

func (s state) scaled(p float64) state {
	s.prob *= p
	return s
}

func (s state) enter(name string) state {
	s.path = append(s.path[:len(s.path):len(s.path)], name)
	return s
}

type branch struct {
	st state
	v  verdict
}

// walk is one trace in progress.
type walk struct {
	t        *Tracer
	pkt      *Packet
	branches int
	done     []Outcome
}

// Trace follows pkt through the plan and returns the distribution of its
// outcomes: each "-m statistic" rule splits the packet into the case where
// it matches, with the rule's probability, and the case where it does not.
// The packet is the first of a new connection: conntrack state NEW (and
// DNAT once translated), no "-m recent" entries (--rcheck, --update and
// --remove do not match, --set does), not bridged. Built-in chains hold
// only the plan's Jumps and accept at their end. An arriving packet whose
// destination (after DNAT) is local goes to INPUT and, as in the kernel,
// not through POSTROUTING. It reports a packet of the other family than
// the plan's, a rule it cannot evaluate (such as an ipset match or a
// source port), and chains nested deeper than 64 (a loop).
func (t *Tracer) Trace(pkt Packet) (Result, error) {
	if err := t.checkPacket(pkt); err != nil {
		return Result{}, &Error{Op: "trace", Err: err}
	}
	w := &walk{t: t, pkt: &pkt}
	st := state{prob: 1, src: pkt.Src, dst: pkt.Dst, proto: normalizeProtocol(pkt.Protocol)}
	if pkt.Hook == HookOutput {
		acc, err := w.stages([]state{st}, outputStages())
		if err != nil {
			return Result{}, err
		}
		w.finish(acc, vAccept)
		return Result{Outcomes: merge(w.done)}, nil
	}
	routed, err := w.stages([]state{st}, preroutingStages())
	if err != nil {
		return Result{}, err
	}
	for _, s := range routed {
		next := forwardStages()
		if t.isLocal(s.dst.Addr()) {
			next = inputStages()
		}
		acc, err := w.stages([]state{s}, next)
		if err != nil {
			return Result{}, err
		}
		w.finish(acc, vAccept)
	}
	return Result{Outcomes: merge(w.done)}, nil
}

func (t *Tracer) checkPacket(pkt Packet) error {
	switch {
	case pkt.Hook != HookPrerouting && pkt.Hook != HookOutput:
		return fmt.Errorf("hook %q: %w", pkt.Hook, ErrSyntax)
	case !pkt.Src.IsValid() || !pkt.Dst.IsValid():
		return fmt.Errorf("packet needs a source and a destination: %w", ErrSyntax)
	case familyOf(pkt.Src) != t.family || familyOf(pkt.Dst.Addr()) != t.family:
		return fmt.Errorf("packet %s -> %s in an %s plan: %w", pkt.Src, pkt.Dst, t.family, ErrWrongFamily)
	case normalizeProtocol(pkt.Protocol) == "":
		return fmt.Errorf("packet needs a protocol: %w", ErrSyntax)
	}
	return nil
}

// isLocal reports whether a is one of the host's addresses.
func (t *Tracer) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(t.local, a)
}

// redirectAddr is where REDIRECT sends a packet: loopback for local
// packets, else the first local address of the family.
func (t *Tracer) redirectAddr(hook Hook) netip.Addr {
	if hook == HookPrerouting {
		for _, a := range t.local {
			if familyOf(a) == t.family && !a.IsLoopback() {
				return a
			}
		}
	}
	if t.family == IPv6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// A stage is a built-in chain a packet traverses.
type stage struct {
	table Table
	chain string
}

func preroutingStages() []stage {
	return []stage{{TableRaw, "PREROUTING"}, {TableMangle, "PREROUTING"}, {TableNAT, "PREROUTING"}}
}

func inputStages() []stage {
	return []stage{{TableMangle, "INPUT"}, {TableFilter, "INPUT"}, {TableNAT, "INPUT"}}
}

func forwardStages() []stage {
	return []stage{{TableMangle, "FORWARD"}, {TableFilter, "FORWARD"},
		{TableMangle, "POSTROUTING"}, {TableNAT, "POSTROUTING"}}
}

func outputStages() []stage {
	return []stage{{TableRaw, "OUTPUT"}, {TableMangle, "OUTPUT"}, {TableNAT, "OUTPUT"},
		{TableFilter, "OUTPUT"}, {TableMangle, "POSTROUTING"}, {TableNAT, "POSTROUTING"}}
}

// stages walks each state through the built-in chains ss in turn,
// returning the states that passed them all; dropped and rejected ones
// become outcomes.
func (w *walk) stages(sts []state, ss []stage) ([]state, error) {
	for _, sg := range ss {
		k := ChainKey{sg.table, sg.chain}
		if !w.t.hasJump[k] {
			continue
		}
		var next []state
		for _, st := range sts {
			bs, err := w.run(st.enter(string(sg.table)+"/"+sg.chain), k, w.t.chains[k], 0, 0)
			if err != nil {
				return nil, err
			}
			for _, b := range bs {
				if b.v == vContinue || b.v == vAccept {
					next = append(next, b.st)
				} else {
					w.finish([]state{b.st}, b.v)
				}
			}
		}
		sts = next
	}
	return sts, nil
}

func (w *walk) finish(sts []state, v verdict) {
	verdict := VerdictAccept
	switch v {
	case vDrop:
		verdict = VerdictDrop
	case vReject:
		verdict = VerdictReject
	}
	for _, s := range sts {
		w.done = append(w.done, Outcome{Probability: s.prob, Verdict: verdict, Dst: s.dst,
			DNAT: s.dnat, Masquerade: s.masquerade, Path: s.path})
	}
}

func ruleError(k ChainKey, i int, err error) error {
	return &Error{Op: "trace", Table: k.Table, Chain: k.Chain, Rule: i + 1, Err: err}
}

// run evaluates the rules of chain k from index i.
func (w *walk) run(st state, k ChainKey, rules []Rule, i, depth int) ([]branch, error) {
	for ; i < len(rules); i++ {
		p, err := w.match(&st, &rules[i])
		if err != nil {
			return nil, ruleError(k, i, err)
		}
		switch {
		case p <= 0:
			continue
		case p >= 1:
			return w.take(st, k, rules, i, depth)
		}
		if w.branches++; w.branches > maxBranches {
			return nil, ruleError(k, i, fmt.Errorf("more than %d branches: %w", maxBranches, ErrUnsupported))
		}
		taken, err := w.take(st.scaled(p), k, rules, i, depth)
		if err != nil {
			return nil, err
		}
		rest, err := w.run(st.scaled(1-p), k, rules, i+1, depth)
		if err != nil {
			return nil, err
		}
		return append(taken, rest...), nil
	}
	return []branch{{st, vContinue}}, nil
}

// take applies the target of rules[i], which matched.
func (w *walk) take(st state, k ChainKey, rules []Rule, i, depth int) ([]branch, error) {
	r := &rules[i]
	if r.Target == "" {
		return w.run(st, k, rules, i+1, depth)
	}
	if w.t.owned[ChainKey{k.Table, r.Target}] {
		return w.call(st, k, rules, i, depth)
	}
	if r.Goto {
		return nil, ruleError(k, i, fmt.Errorf("goto %q: %w", r.Target, ErrMissingChain))
	}
	o := &r.TargetOptions
	switch r.Target {
	case "ACCEPT":
		return []branch{{st, vAccept}}, nil
	case "DROP":
		return []branch{{st, vDrop}}, nil
	case "REJECT":
		return []branch{{st, vReject}}, nil
	case "RETURN":
		return []branch{{st, vContinue}}, nil
	case "MARK":
		st.mark = o.Mark.Apply(st.mark)
		return w.run(st, k, rules, i+1, depth)
	case "LOG", "NOTRACK", "CT":
		return w.run(st, k, rules, i+1, depth)
	case "DNAT":
		port := o.ToDestination.Port()
		if port == 0 {
			port = st.dst.Port()
		}
		st.dst, st.dnat = netip.AddrPortFrom(o.ToDestination.Addr(), port), true
		return []branch{{st, vAccept}}, nil
	case "REDIRECT":
		port := o.ToPorts.First
		if port == 0 {
			port = st.dst.Port()
		}
		st.dst, st.dnat = netip.AddrPortFrom(w.t.redirectAddr(w.pkt.Hook), port), true
		return []branch{{st, vAccept}}, nil
	case "MASQUERADE", "SNAT":
		st.masquerade = true
		return []branch{{st, vAccept}}, nil
	}
	return nil, ruleError(k, i, fmt.Errorf("target %q: %w", r.Target, ErrMissingChain))
}

// call jumps (or goes) to the owned chain rules[i] targets and continues
// after the rule in the states that return.
func (w *walk) call(st state, k ChainKey, rules []Rule, i, depth int) ([]branch, error) {
	r := &rules[i]
	if depth >= maxDepth {
		return nil, ruleError(k, i, fmt.Errorf("chains nested deeper than %d at %s: %w", maxDepth, r.Target, ErrLoop))
	}
	ck := ChainKey{k.Table, r.Target}
	sub, err := w.run(st.enter(r.Target), ck, w.t.chains[ck], 0, depth+1)
	if err != nil {
		return nil, err
	}
	var out []branch
	for _, b := range sub {
		if b.v != vContinue || r.Goto {
			out = append(out, b)
			continue
		}
		more, err := w.run(b.st, k, rules, i+1, depth)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// merge sums equal outcomes, keeping the first path, and sorts them.
func merge(outs []Outcome) []Outcome {
	slices.SortStableFunc(outs, compareOutcomes)
	var merged []Outcome
	for _, o := range outs {
		if n := len(merged); n > 0 && compareOutcomes(merged[n-1], o) == 0 {
			merged[n-1].Probability += o.Probability
			continue
		}
		merged = append(merged, o)
	}
	return merged
}

func compareOutcomes(a, b Outcome) int {
	return cmp.Or(a.Dst.Compare(b.Dst), cmp.Compare(a.Verdict, b.Verdict),
		compareBool(a.DNAT, b.DNAT), compareBool(a.Masquerade, b.Masquerade))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// String returns r as lines like
// " 50.00% accept 10.0.1.5:8080 dnat masquerade via nat/PREROUTING > KUBE-SERVICES > ...".
func (r Result) String() string {
	var b strings.Builder
	for _, o := range r.Outcomes {
		fmt.Fprintf(&b, "%6.2f%% %s %s", o.Probability*100, o.Verdict, o.Dst)
		if o.DNAT {
			b.WriteString(" dnat")
		}
		if o.Masquerade {
			b.WriteString(" masquerade")
		}
		if len(o.Path) > 0 {
			b.WriteString(" via ")
			b.WriteString(strings.Join(o.Path, " > "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// match returns the probability that r matches the packet in state st: 0
// or 1, or a statistic rule's probability.
func (w *walk) match(st *state, r *Rule) (float64, error) {
	if r.Protocol != "" && (r.Protocol == st.proto) == r.NotProtocol {
		return 0, nil
	}
	if !addrMatches(r.Source, st.src) || !addrMatches(r.Destination, st.dst.Addr()) {
		return 0, nil
	}
	ok, err := w.portsMatch(st, r)
	if err != nil || !ok {
		return 0, err
	}
	if ok, err = w.stateMatches(st, r); err != nil || !ok {
		return 0, err
	}
	if len(r.Sets) > 0 {
		return 0, fmt.Errorf("set match %q: %w", r.Sets[0].Name, ErrUnsupported)
	}
	if !physdevMatches(r.Physdev) {
		return 0, nil
	}
	// Interfaces last: an unknown interface is an error only when the
	// rest of the rule matches.
	for _, m := range [...]struct {
		m     InterfaceMatch
		name  string
		known bool
	}{{r.InInterface, w.pkt.InInterface, w.pkt.Hook == HookPrerouting}, {r.OutInterface, w.pkt.OutInterface, true}} {
		if m.m.Name == "" {
			continue
		}
		if m.name == "" || !m.known {
			return 0, fmt.Errorf("interface match %q on a packet without that interface: %w", m.m.Name, ErrUnsupported)
		}
		if !interfaceMatches(m.m, m.name) {
			return 0, nil
		}
	}
	return statisticProbability(r.Statistic), nil
}

func addrMatches(m AddrMatch, a netip.Addr) bool {
	if !m.Prefix.IsValid() {
		return true
	}
	if familyOf(m.Prefix.Addr()) != familyOf(a) {
		return false
	}
	return m.Prefix.Contains(a) != m.Invert
}

// interfaceMatches reports whether m matches the interface name; a
// trailing "+" in m.Name matches any suffix.
func interfaceMatches(m InterfaceMatch, name string) bool {
	var hit bool
	if prefix, ok := strings.CutSuffix(m.Name, "+"); ok {
		hit = strings.HasPrefix(name, prefix)
	} else {
		hit = name == m.Name
	}
	return hit != m.Invert
}

func (w *walk) portsMatch(st *state, r *Rule) (bool, error) {
	if r.SourcePort != nil {
		return false, fmt.Errorf("source port match: %w", ErrUnsupported)
	}
	port := st.dst.Port()
	if m := r.DestinationPort; m != nil && m.Ports.Contains(port) == m.Invert {
		return false, nil
	}
	if m := r.Multiport; m != nil {
		if m.Option != "--dports" {
			return false, fmt.Errorf("multiport %s: source port match: %w", m.Option, ErrUnsupported)
		}
		hit := slices.ContainsFunc(m.Ports, func(pr PortRange) bool { return pr.Contains(port) })
		if hit == m.Invert {
			return false, nil
		}
	}
	return true, nil
}

// stateMatches evaluates the addrtype, mark, conntrack and recent
// matches.
func (w *walk) stateMatches(st *state, r *Rule) (bool, error) {
	if m := r.AddrType; m != nil {
		for _, c := range [...]struct {
			types []string
			not   bool
			addr  netip.Addr
		}{{m.SrcTypes, m.NotSrc, st.src}, {m.DstTypes, m.NotDst, st.dst.Addr()}} {
			if c.types == nil {
				continue
			}
			hit, err := w.t.addrTypeMatches(c.types, c.addr)
			if err != nil || hit == c.not {
				return false, err
			}
		}
	}
	if m := r.Mark; m != nil && (st.mark&m.Mask == m.Value) == m.Invert {
		return false, nil
	}
	if m := r.ConnState; m != nil {
		hit := slices.ContainsFunc(m.States, func(s string) bool { return s == "NEW" || s == "DNAT" && st.dnat })
		if hit == m.Invert {
			return false, nil
		}
	}
	if m := r.Recent; m != nil && (m.Command == "set") == m.Invert {
		return false, nil
	}
	return true, nil
}

func (t *Tracer) addrTypeMatches(types []string, a netip.Addr) (bool, error) {
	local := t.isLocal(a)
	for _, typ := range types {
		switch typ {
		case "LOCAL":
			if local {
				return true, nil
			}
		case "MULTICAST":
			if a.IsMulticast() {
				return true, nil
			}
		case "UNICAST":
			if !local && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return true, nil
			}
		default:
			return false, fmt.Errorf("address type %s: %w", typ, ErrUnsupported)
		}
	}
	return false, nil
}

// physdevMatches evaluates a physdev match for a packet that was not
// bridged: as in the kernel, it matches only if every condition is
// inverted.
func physdevMatches(m *PhysdevMatch) bool {
	if m == nil {
		return true
	}
	for _, f := range [...]*bool{m.IsIn, m.IsOut, m.IsBridged} {
		if f != nil && *f {
			return false
		}
	}
	return (m.In.Name == "" || m.In.Invert) && (m.Out.Name == "" || m.Out.Invert)
}

func statisticProbability(m *StatisticMatch) float64 {
	if m == nil {
		return 1
	}
	p := m.Probability
	if m.Mode == "nth" {
		p = 1 / float64(m.Every)
	}
	if m.Invert {
		p = 1 - p
	}
	return p
}
