package nftables

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
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
	// Hook is where the packet enters: HookPrerouting for a packet
	// arriving from outside the host or from a pod, HookOutput for one a
	// host process sends.
	Hook Hook
}

// Outcome is one way a traced packet can go, with its probability.
type Outcome struct {
	// Probability is the chance of this outcome, in (0, 1].
	Probability float64
	// Verdict is whether the packet passes.
	Verdict Verdict
	// Dst is the destination after DNAT; the packet's own destination
	// when not translated.
	Dst netip.AddrPort
	// DNAT reports that the destination was translated.
	DNAT bool
	// Masquerade reports that a postrouting chain masqueraded the packet.
	Masquerade bool
	// Path are the chains the packet went through, for display: each base
	// chain followed by the regular chains it entered.
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

// WithLocalAddrs sets the host's own addresses: those "fib ... type local"
// matches (besides loopback), and the destinations a packet is delivered
// to (the input hook) rather than forwarded.
func WithLocalAddrs(addrs []netip.Addr) TracerOption {
	addrs = slices.Clone(addrs)
	return func(c *tracerConfig) { c.local = append(c.local, addrs...) }
}

// Tracer follows packets through a plan, the way the kernel would for the
// first packet of a connection. It is safe for concurrent use.
type Tracer struct {
	family Family
	local  []netip.Addr
	chains map[string]*tchain
	// hooks are the base chains of each hook, by priority.
	hooks map[Hook][]*tchain
	sets  map[string]*tset
}

type tchain struct {
	name  string
	base  *BaseChain
	rules []Rule
}

// tset is a set or map indexed for lookups.
type tset struct {
	key   []DataType
	isMap bool
	elems map[elemKey]Action
}

type elemKey struct {
	addr  netip.Addr
	proto Protocol
	port  uint16
}

// maxDepth is how deep chains may call each other before the tracer
// reports a loop; the kernel's own limit is 16 jumps.
const maxDepth = 64

// maxBranches bounds the outcomes explored by one trace.
const maxBranches = 1 << 20

// NewTracer returns a tracer for p, parsing every rule once. It reports a
// rule that does not parse as an [*Error] naming it.
func NewTracer(p *Plan, opts ...TracerOption) (*Tracer, error) {
	var cfg tracerConfig
	for _, o := range opts {
		o(&cfg)
	}
	t := &Tracer{family: p.FamilyOrDefault(), local: cfg.local,
		chains: make(map[string]*tchain, len(p.Chains)), hooks: map[Hook][]*tchain{},
		sets: make(map[string]*tset, len(p.Sets))}
	for i := range p.Sets {
		s := &p.Sets[i]
		ts := &tset{key: s.Key, isMap: s.IsMap(), elems: make(map[elemKey]Action, len(s.Elements))}
		for _, e := range s.Elements {
			ts.elems[ts.lookupKey(e.Addr, e.Proto, e.Port)] = e.Action
		}
		t.sets[s.Name] = ts
	}
	for i := range p.Chains {
		c := &p.Chains[i]
		rules, err := c.ParsedRules()
		if err != nil {
			err.(*Error).Op = "trace"
			return nil, err
		}
		tc := &tchain{name: c.Name, base: c.Base, rules: rules}
		t.chains[c.Name] = tc
		if c.Base != nil {
			t.hooks[c.Base.Hook] = append(t.hooks[c.Base.Hook], tc)
		}
	}
	for _, cs := range t.hooks {
		slices.SortStableFunc(cs, func(a, b *tchain) int { return cmp.Compare(a.base.Priority, b.base.Priority) })
	}
	return t, nil
}

// lookupKey returns the index key of an element with these parts, keeping
// only those the set's key has.
func (s *tset) lookupKey(a netip.Addr, proto Protocol, port uint16) elemKey {
	var k elemKey
	for _, d := range s.key {
		switch d {
		case TypeIPv4Addr, TypeIPv6Addr:
			k.addr = a
		case TypeInetProto:
			k.proto = proto
		case TypeInetService:
			k.port = port
		}
	}
	return k
}

// verdict is the result of walking a chain: go on (fell off its end or
// returned), or a verdict.
type verdict int

const (
	vNext verdict = iota
	vAccept
	vDrop
	vReject
)

// state is one possible packet state during a trace.
type state struct {
	prob       float64
	src        netip.Addr
	dst        netip.AddrPort
	proto      Protocol
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
	branches int
	done     []Outcome
}

// Trace follows pkt through the plan's base chains, hook by hook in
// priority order, and returns the distribution of its outcomes: each
// numgen splits the packet into equally likely branches. The packet is
// the first of a new connection: "ct state new" matches, and the dynamic
// affinity sets are empty (an "update" has no effect on the trace). An
// arriving packet passes prerouting, then input when its destination
// (after DNAT) is local, else forward and postrouting; a sent packet
// passes output and postrouting (its delivery to a local address through
// input is not followed). Accept ends one base chain, and the packet goes
// on to the next; drop and reject end the trace. It reports a packet of
// the other family than the plan's, a reference to a missing chain or
// set, and chains nested deeper than 64 (a loop).
func (t *Tracer) Trace(pkt Packet) (Result, error) {
	if err := t.checkPacket(pkt); err != nil {
		return Result{}, &Error{Op: "trace", Err: err}
	}
	w := &walk{t: t}
	st := state{prob: 1, src: pkt.Src, dst: pkt.Dst, proto: Protocol(strings.ToLower(pkt.Protocol))}
	first := []Hook{HookOutput, HookPostrouting}
	if pkt.Hook == HookPrerouting {
		first = []Hook{HookPrerouting}
	}
	sts, err := w.hooks([]state{st}, first)
	if err != nil {
		return Result{}, err
	}
	for _, s := range sts {
		if pkt.Hook == HookPrerouting {
			next := []Hook{HookForward, HookPostrouting}
			if t.isLocal(s.dst.Addr()) {
				next = []Hook{HookInput}
			}
			more, err := w.hooks([]state{s}, next)
			if err != nil {
				return Result{}, err
			}
			w.finish(more, vAccept)
			continue
		}
		w.finish([]state{s}, vAccept)
	}
	return Result{Outcomes: merge(w.done)}, nil
}

func (t *Tracer) checkPacket(pkt Packet) error {
	switch p := Protocol(strings.ToLower(pkt.Protocol)); {
	case pkt.Hook != HookPrerouting && pkt.Hook != HookOutput:
		return fmt.Errorf("hook %q: packets enter at prerouting or output: %w", pkt.Hook, ErrSyntax)
	case !pkt.Src.IsValid() || !pkt.Dst.IsValid():
		return fmt.Errorf("packet needs a source and a destination: %w", ErrSyntax)
	case familyOf(pkt.Src) != t.family || familyOf(pkt.Dst.Addr()) != t.family:
		return fmt.Errorf("packet %s -> %s in an %s plan: %w", pkt.Src, pkt.Dst, t.family, ErrWrongFamily)
	case p != ProtocolTCP && p != ProtocolUDP && p != ProtocolSCTP:
		return fmt.Errorf("protocol %q: %w", pkt.Protocol, ErrSyntax)
	}
	return nil
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// isLocal reports whether a is one of the host's addresses.
func (t *Tracer) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(t.local, a)
}

// hooks walks each state through the base chains of the hooks in turn,
// returning the states that passed them all; dropped and rejected ones
// become outcomes.
func (w *walk) hooks(sts []state, hooks []Hook) ([]state, error) {
	for _, h := range hooks {
		for _, c := range w.t.hooks[h] {
			var next []state
			for _, st := range sts {
				bs, err := w.rule(c, 0, 0, st.enter(c.name), 0)
				if err != nil {
					return nil, err
				}
				for _, b := range bs {
					if b.v == vNext || b.v == vAccept {
						next = append(next, b.st)
					} else {
						w.finish([]state{b.st}, b.v)
					}
				}
			}
			sts = next
		}
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

func ruleError(c *tchain, i int, err error) error {
	return &Error{Op: "trace", Chain: c.name, Rule: i + 1, Err: err}
}

// rule evaluates rule i of chain c from expression j on, and the rest of
// the chain after it; it returns how the chain ends in each branch.
func (w *walk) rule(c *tchain, i, j int, st state, depth int) ([]branch, error) {
	for i < len(c.rules) {
		r := &c.rules[i]
		if j >= len(r.Exprs) {
			i, j = i+1, 0
			continue
		}
		ok, err := w.match(&st, r.Exprs[j])
		if err != nil {
			return nil, ruleError(c, i, err)
		}
		switch {
		case ok == matchNo:
			i, j = i+1, 0
			continue
		case ok == matchYes:
			j++
			continue
		}
		return w.statement(c, i, j, st, depth)
	}
	return []branch{{st, vNext}}, nil
}

type matchResult int

const (
	matchNo matchResult = iota
	matchYes
	// notMatch: the expression is a statement.
	notMatch
)

// match evaluates a match expression; statements give notMatch.
func (w *walk) match(st *state, e Expr) (matchResult, error) {
	yes := func(b bool) (matchResult, error) {
		if b {
			return matchYes, nil
		}
		return matchNo, nil
	}
	switch e := e.(type) {
	case CTState:
		return yes(e.State == "new")
	case AddrMatch:
		a := st.addr(e.Field)
		in := slices.ContainsFunc(e.Prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
		return yes(in != e.Negate)
	case AddrInSet:
		s, err := w.set(e.Set, false)
		if err != nil {
			return matchNo, err
		}
		_, in := s.elems[s.lookupKey(st.addr(e.Field), "", 0)]
		return yes(in)
	case FibLocal:
		return yes(w.t.isLocal(st.addr(e.Field)))
	case L4Proto:
		return yes(st.proto == e.Proto)
	case DPort:
		return yes(st.proto == e.Proto && st.dst.Port() == e.Port)
	case MarkMatch:
		return yes((st.mark&e.Mask == e.Value) != e.Negate)
	case MarkSet:
		if e.Op == MarkOr {
			st.mark |= e.Value
		} else {
			st.mark ^= e.Value
		}
		return matchYes, nil
	case SetUpdate:
		if _, err := w.set(e.Set, false); err != nil {
			return matchNo, err
		}
		return matchYes, nil
	}
	return notMatch, nil
}

func (s *state) addr(f AddrField) netip.Addr {
	if f == FieldSAddr {
		return s.src
	}
	return s.dst.Addr()
}

func (w *walk) set(name string, isMap bool) (*tset, error) {
	s := w.t.sets[name]
	if s == nil || s.isMap != isMap {
		return nil, fmt.Errorf("@%s: %w", name, ErrMissingSet)
	}
	return s, nil
}

// statement applies a statement that ends the rule's evaluation: a
// verdict, a map lookup, a NAT statement or reject.
func (w *walk) statement(c *tchain, i, j int, st state, depth int) ([]branch, error) {
	switch e := c.rules[i].Exprs[j].(type) {
	case DNAT:
		st.dst, st.dnat = e.To, true
		return []branch{{st, vAccept}}, nil
	case Masquerade:
		st.masquerade = true
		return []branch{{st, vAccept}}, nil
	case Reject:
		return []branch{{st, vReject}}, nil
	case Action:
		return w.verdict(c, i, st, e, depth)
	case VMap:
		m, err := w.set(e.Map, true)
		if err != nil {
			return nil, ruleError(c, i, err)
		}
		a, ok := m.elems[st.key(e.Key, m)]
		if !ok {
			return w.rule(c, i+1, 0, st, depth)
		}
		return w.verdict(c, i, st, a, depth)
	case Numgen:
		if w.branches += len(e.Actions); w.branches > maxBranches {
			return nil, ruleError(c, i, fmt.Errorf("more than %d branches: %w", maxBranches, ErrLoop))
		}
		var out []branch
		p := 1 / float64(len(e.Actions))
		for _, a := range e.Actions {
			bs, err := w.verdict(c, i, st.scaled(p), a, depth)
			if err != nil {
				return nil, err
			}
			out = append(out, bs...)
		}
		return out, nil
	}
	return nil, ruleError(c, i, fmt.Errorf("expression %T: %w", c.rules[i].Exprs[j], ErrSyntax))
}

// key builds the lookup key parts from the packet.
func (s *state) key(parts []KeyField, m *tset) elemKey {
	var a netip.Addr
	var proto Protocol
	var port uint16
	for _, k := range parts {
		switch k {
		case KeyDAddr:
			a = s.dst.Addr()
		case KeyL4Proto:
			proto = s.proto
		case KeyDPort:
			port = s.dst.Port()
		}
	}
	return m.lookupKey(a, proto, port)
}

// verdict applies verdict a, reached in rule i of c.
func (w *walk) verdict(c *tchain, i int, st state, a Action, depth int) ([]branch, error) {
	switch a.Kind {
	case ActionAccept:
		return []branch{{st, vAccept}}, nil
	case ActionDrop:
		return []branch{{st, vDrop}}, nil
	case ActionReturn:
		return []branch{{st, vNext}}, nil
	case ActionJump, ActionGoto:
	default:
		return nil, ruleError(c, i, fmt.Errorf("verdict %q: %w", a.Kind, ErrSyntax))
	}
	target := w.t.chains[a.Chain]
	if target == nil || target.base != nil {
		return nil, ruleError(c, i, fmt.Errorf("%s: %w", a, ErrMissingChain))
	}
	if depth >= maxDepth {
		return nil, ruleError(c, i, fmt.Errorf("chains nested deeper than %d at %s: %w", maxDepth, a.Chain, ErrLoop))
	}
	sub, err := w.rule(target, 0, 0, st.enter(target.name), depth+1)
	if err != nil || a.Kind == ActionGoto {
		// A goto's chain ends the calling chain too: falling off its end
		// returns to whoever jumped to the caller.
		return sub, err
	}
	var out []branch
	for _, b := range sub {
		if b.v != vNext {
			out = append(out, b)
			continue
		}
		more, err := w.rule(c, i+1, 0, b.st, depth)
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
// " 50.00% accept 10.0.1.5:8080 dnat masquerade via nat-prerouting > services > ...".
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
