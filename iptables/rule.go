package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one rule's arguments parsed into the matches and target that
// svcplan and kube-proxy write. ParseRule refuses anything else, so that a
// Rule never silently misses part of what the kernel would do. The zero
// Rule matches every packet and has no target.
type Rule struct {
	// Protocol is the -p protocol in lower case, such as "tcp"; empty
	// means any.
	Protocol string
	// NotProtocol inverts Protocol (! -p).
	NotProtocol bool
	// Source and Destination are the -s and -d matches.
	Source, Destination AddrMatch
	// InInterface and OutInterface are the -i and -o matches.
	InInterface, OutInterface InterfaceMatch
	// Modules are the match modules in the order they were loaded, with
	// -m or implicitly by a port option after -p; nil means none.
	Modules []string
	// Comment is the -m comment text; empty means none.
	Comment string
	// SourcePort and DestinationPort are the --sport and --dport of the
	// tcp, udp or sctp match; nil means not matched.
	SourcePort, DestinationPort *PortMatch
	// Multiport is the -m multiport match; nil means none.
	Multiport *MultiportMatch
	// AddrType is the -m addrtype match; nil means none.
	AddrType *AddrTypeMatch
	// Mark is the -m mark match; nil means none.
	Mark *MarkMatch
	// ConnState is the -m conntrack --ctstate (or -m state --state)
	// match; nil means none.
	ConnState *ConnStateMatch
	// Statistic is the -m statistic match; nil means none.
	Statistic *StatisticMatch
	// Recent is the -m recent match; nil means none.
	Recent *RecentMatch
	// Sets are the -m set matches in order; nil means none.
	Sets []SetMatch
	// Physdev is the -m physdev match; nil means none.
	Physdev *PhysdevMatch
	// Target is the -j or -g target, a chain or a target extension such
	// as "DNAT"; empty means none.
	Target string
	// Goto reports that Target was given with -g rather than -j.
	Goto bool
	// TargetOptions are the target extension's options.
	TargetOptions TargetOptions
}

// AddrMatch is a -s or -d match. The zero AddrMatch matches every address.
type AddrMatch struct {
	// Prefix is the address or network; the zero Prefix means no match
	// is made.
	Prefix netip.Prefix
	// Invert inverts the match (! -s).
	Invert bool
}

// InterfaceMatch is an -i or -o match, or a physdev interface match. The
// zero InterfaceMatch matches every interface.
type InterfaceMatch struct {
	// Name is the interface name; a trailing "+" matches every name with
	// that prefix. Empty means no match is made.
	Name string
	// Invert inverts the match.
	Invert bool
}

// PortRange is an inclusive range of ports; a single port has First ==
// Last.
type PortRange struct {
	// First and Last bound the range.
	First, Last uint16
}

// Contains reports whether port is in r.
func (r PortRange) Contains(port uint16) bool { return r.First <= port && port <= r.Last }

// PortMatch is a --sport or --dport match.
type PortMatch struct {
	// Ports is the port range.
	Ports PortRange
	// Invert inverts the match.
	Invert bool
}

// MultiportMatch is a -m multiport match.
type MultiportMatch struct {
	// Option is which ports are matched: "--dports", "--sports" or
	// "--ports" (either).
	Option string
	// Ports are the ports and ranges listed.
	Ports []PortRange
	// Invert inverts the match.
	Invert bool
}

// AddrTypeMatch is a -m addrtype match.
type AddrTypeMatch struct {
	// SrcTypes and DstTypes are the address types listed, upper case,
	// such as "LOCAL"; nil means not matched.
	SrcTypes, DstTypes []string
	// NotSrc and NotDst invert the source and destination matches.
	NotSrc, NotDst bool
}

// MarkMatch is a -m mark match: it matches when mark&Mask == Value.
type MarkMatch struct {
	// Value and Mask are the --mark value and mask; without a mask in the
	// rule, Mask is 0xffffffff.
	Value, Mask uint32
	// Invert inverts the match.
	Invert bool
}

// ConnStateMatch is a -m conntrack --ctstate or -m state --state match.
type ConnStateMatch struct {
	// Module is "conntrack" or "state".
	Module string
	// States are the states listed, upper case, such as "NEW".
	States []string
	// Invert inverts the match.
	Invert bool
}

// StatisticMatch is a -m statistic match.
type StatisticMatch struct {
	// Mode is "random" or "nth".
	Mode string
	// Probability is the chance that a packet matches in random mode.
	Probability float64
	// Every and Packet are nth mode's options: every Every-th packet,
	// starting at Packet, matches.
	Every, Packet uint32
	// Invert inverts the match.
	Invert bool
}

// RecentMatch is a -m recent match.
type RecentMatch struct {
	// Name is the list name; empty means "DEFAULT".
	Name string
	// Command is "set", "rcheck", "update" or "remove".
	Command string
	// Invert inverts the match.
	Invert bool
	// Seconds limits the match to entries seen that recently; 0 means no
	// limit.
	Seconds uint32
	// HitCount limits the match to entries seen that often; 0 means no
	// limit.
	HitCount uint32
	// Reap purges older entries (--reap); TTL also compares the TTL
	// (--rttl).
	Reap, TTL bool
	// Mask is the --mask applied to addresses; the zero Addr means all
	// ones.
	Mask netip.Addr
	// Dest reports --rdest: the list holds destination addresses rather
	// than source addresses (--rsource, the default).
	Dest bool
}

// SetMatch is one -m set --match-set match.
type SetMatch struct {
	// Name is the ipset name.
	Name string
	// Flags are the directions, such as {"dst", "dst"}.
	Flags []string
	// Invert inverts the match.
	Invert bool
}

// PhysdevMatch is a -m physdev match.
type PhysdevMatch struct {
	// In and Out are the --physdev-in and --physdev-out bridge ports.
	In, Out InterfaceMatch
	// IsIn, IsOut and IsBridged are --physdev-is-in, --physdev-is-out and
	// --physdev-is-bridged: nil means not tested, else the value the
	// condition must have (false when inverted).
	IsIn, IsOut, IsBridged *bool
}

// TargetOptions are the options of a target extension. The zero value
// means none.
type TargetOptions struct {
	// ToDestination is DNAT's --to-destination; a zero port keeps the
	// packet's port.
	ToDestination netip.AddrPort
	// ToSource is SNAT's --to-source; a zero port keeps the packet's port.
	ToSource netip.AddrPort
	// ToPorts is the --to-ports of REDIRECT and MASQUERADE; zero means
	// none.
	ToPorts PortRange
	// Mark is the MARK target's change, whichever option expressed it;
	// nil means none.
	Mark *MarkSet
	// RejectWith is REJECT's --reject-with; empty means the default.
	RejectWith string
	// Random, RandomFully and Persistent are the NAT targets' flags.
	Random, RandomFully, Persistent bool
	// LogPrefix and LogLevel are the LOG target's options.
	LogPrefix, LogLevel string
	// NoTrack is the CT target's --notrack.
	NoTrack bool
}

// MarkSet is a MARK target's change to the packet mark, in the form the
// kernel keeps (--set-xmark): the new mark is (mark &^ Mask) ^ Value.
type MarkSet struct {
	// Value and Mask are the --set-xmark value and mask.
	Value, Mask uint32
}

// Apply returns mark changed by s.
func (s MarkSet) Apply(mark uint32) uint32 { return mark&^s.Mask ^ s.Value }

// ParseRule parses a rule's text, as iptables-save prints it after
// "-A CHAIN ", into a Rule. It reports an unbalanced quote, a match module
// or option it does not understand, and a malformed value.
func ParseRule(args string) (Rule, error) {
	toks, err := SplitArgs(args)
	if err != nil {
		return Rule{}, err
	}
	return ParseRuleArgs(toks)
}

// ParseRuleArgs is like [ParseRule] for a rule already split into
// arguments.
func ParseRuleArgs(args []string) (Rule, error) {
	p := ruleParser{toks: args}
	if err := p.parse(); err != nil {
		return Rule{}, err
	}
	return p.r, nil
}

// knownModules are the match modules ParseRule understands.
var knownModules = [...]string{"tcp", "udp", "sctp", "multiport", "comment", "addrtype", "mark",
	"conntrack", "state", "statistic", "recent", "set", "physdev"}

type ruleParser struct {
	toks []string
	i    int
	r    Rule
	// seen[:nseen] and more are the options given so far; the array
	// saves an allocation for most rules.
	seen  [16]optionKey
	nseen int
	more  []optionKey
}

// optionKey is an option given in a place: "" for the basic options, a
// match module, or "-j" for the target.
type optionKey struct{ place, opt string }

// once reports an option given twice in one place, which iptables
// refuses or which would override the first.
func (p *ruleParser) once(place, opt string) error {
	k := optionKey{place, opt}
	for _, s := range append(p.seen[:p.nseen:p.nseen], p.more...) {
		if s == k {
			return fmt.Errorf("option %s given twice: %w", opt, ErrSyntax)
		}
	}
	if p.nseen < len(p.seen) {
		p.seen[p.nseen] = k
		p.nseen++
	} else {
		p.more = append(p.more, k)
	}
	return nil
}

func (p *ruleParser) parse() error {
	for p.i < len(p.toks) {
		tok := p.toks[p.i]
		p.i++
		neg := false
		if tok == "!" {
			if p.i == len(p.toks) || p.toks[p.i] == "!" {
				return fmt.Errorf("misplaced \"!\": %w", ErrSyntax)
			}
			neg, tok = true, p.toks[p.i]
			p.i++
		}
		if err := p.option(tok, neg); err != nil {
			return err
		}
	}
	return p.finish()
}

func (p *ruleParser) value(opt string) (string, error) {
	if p.i == len(p.toks) {
		return "", fmt.Errorf("option %s needs a value: %w", opt, ErrSyntax)
	}
	v := p.toks[p.i]
	p.i++
	return v, nil
}

// word returns the next argument as a name, checked by checkWord.
func (p *ruleParser) word(opt string) (string, error) {
	v, err := p.value(opt)
	if err != nil {
		return "", err
	}
	return v, checkWord(opt, v)
}

// checkWord reports a name that is empty or holds a space, a quote, a
// backslash or a control character.
func checkWord(opt, v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c == 0x7f {
			return fmt.Errorf("option %s: %q: %w", opt, v, ErrSyntax)
		}
	}
	if v == "" {
		return fmt.Errorf("option %s: empty value: %w", opt, ErrSyntax)
	}
	return nil
}

func (p *ruleParser) option(opt string, neg bool) error {
	r := &p.r
	if len(opt) == 2 && strings.IndexByte("psdio", opt[1]) >= 0 {
		if err := p.once("", opt); err != nil {
			return err
		}
	}
	switch opt {
	case "-p", "--protocol":
		v, err := p.word(opt)
		if err != nil {
			return err
		}
		r.Protocol, r.NotProtocol = normalizeProtocol(v), neg
		if r.Protocol == "" && neg {
			return fmt.Errorf("\"! -p %s\" matches nothing: %w", v, ErrSyntax)
		}
		return nil
	case "-s", "--source", "--src", "-d", "--destination", "--dst":
		return p.addrOption(opt, neg)
	case "-i", "--in-interface", "-o", "--out-interface":
		v, err := p.word(opt)
		if err != nil {
			return err
		}
		if opt[1] == 'i' || opt == "--in-interface" {
			r.InInterface = InterfaceMatch{Name: v, Invert: neg}
		} else {
			r.OutInterface = InterfaceMatch{Name: v, Invert: neg}
		}
		return nil
	case "-m", "--match":
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		if neg {
			return fmt.Errorf("\"!\" before %s: %w", opt, ErrSyntax)
		}
		return p.load(v)
	case "-j", "--jump", "-g", "--goto":
		v, err := p.word(opt)
		if err != nil {
			return err
		}
		if neg || r.Target != "" {
			return fmt.Errorf("misplaced %s %s: %w", opt, v, ErrSyntax)
		}
		r.Target, r.Goto = v, opt == "-g" || opt == "--goto"
		return nil
	}
	if !strings.HasPrefix(opt, "--") {
		return fmt.Errorf("unexpected argument %q: %w", opt, ErrSyntax)
	}
	if r.Target != "" {
		if ok, err := p.targetOption(opt, neg); ok || err != nil {
			if err == nil {
				err = p.once("-j", opt)
			}
			return err
		}
	}
	return p.matchOption(opt, neg)
}

func (p *ruleParser) addrOption(opt string, neg bool) error {
	v, err := p.value(opt)
	if err != nil {
		return err
	}
	pfx, err := parseAddrPrefix(v)
	if err != nil {
		return fmt.Errorf("option %s: %w", opt, err)
	}
	if opt[1] == 's' || opt == "--source" || opt == "--src" {
		p.r.Source = AddrMatch{Prefix: pfx, Invert: neg}
	} else {
		p.r.Destination = AddrMatch{Prefix: pfx, Invert: neg}
	}
	return nil
}

// load loads the match module name.
func (p *ruleParser) load(name string) error {
	known := false
	for _, m := range knownModules {
		known = known || m == name
	}
	if !known {
		return fmt.Errorf("match %q: %w", name, ErrUnknownMatch)
	}
	r := &p.r
	if name == "set" {
		r.Sets = append(r.Sets, SetMatch{})
	} else {
		for _, m := range r.Modules {
			if m == name || isConnState(m) && isConnState(name) {
				return fmt.Errorf("match %q loaded twice: %w", name, ErrUnsupported)
			}
		}
	}
	r.Modules = append(r.Modules, name)
	switch name {
	case "multiport":
		r.Multiport = &MultiportMatch{}
	case "addrtype":
		r.AddrType = &AddrTypeMatch{}
	case "conntrack", "state":
		r.ConnState = &ConnStateMatch{Module: name}
	case "statistic":
		r.Statistic = &StatisticMatch{}
	case "recent":
		r.Recent = &RecentMatch{}
	case "physdev":
		r.Physdev = &PhysdevMatch{}
	}
	return nil
}

func isConnState(m string) bool { return m == "conntrack" || m == "state" }

// matchOption gives opt to the most recently loaded module that knows it,
// or to the protocol's implicit match.
func (p *ruleParser) matchOption(opt string, neg bool) error {
	mods := p.r.Modules
	for i := len(mods) - 1; i >= 0; i-- {
		if ok, err := p.moduleOption(mods[i], opt, neg); ok || err != nil {
			if err == nil && mods[i] != "set" {
				err = p.once(mods[i], opt)
			}
			return err
		}
	}
	if proto := p.r.Protocol; isPortProtocol(proto) && !p.r.NotProtocol && isPortOption(opt) {
		if err := p.load(proto); err != nil {
			return err
		}
		if _, err := p.moduleOption(proto, opt, neg); err != nil {
			return err
		}
		return p.once(proto, opt)
	}
	return fmt.Errorf("option %s: %w", opt, ErrUnknownOption)
}

func isPortProtocol(proto string) bool { return proto == "tcp" || proto == "udp" || proto == "sctp" }

func isPortOption(opt string) bool {
	switch opt {
	case "--dport", "--destination-port", "--sport", "--source-port":
		return true
	}
	return false
}

// moduleOption handles opt for module mod, reporting whether mod knows it.
func (p *ruleParser) moduleOption(mod, opt string, neg bool) (bool, error) {
	var err error
	switch mod {
	case "tcp", "udp", "sctp":
		if !isPortOption(opt) {
			return false, nil
		}
		err = p.portOption(opt, neg)
	case "multiport":
		return p.multiportOption(opt, neg)
	case "comment":
		if opt != "--comment" {
			return false, nil
		}
		if neg {
			return true, fmt.Errorf("\"!\" before %s: %w", opt, ErrSyntax)
		}
		p.r.Comment, err = p.value(opt)
	case "addrtype":
		return p.addrTypeOption(opt, neg)
	case "mark":
		if opt != "--mark" {
			return false, nil
		}
		err = p.markOption(opt, neg)
	case "conntrack", "state":
		if opt != "--ctstate" && mod == "conntrack" || opt != "--state" && mod == "state" {
			return false, nil
		}
		err = p.connStateOption(opt, neg)
	case "statistic":
		return p.statisticOption(opt, neg)
	case "recent":
		return p.recentOption(opt, neg)
	case "set":
		return p.setOption(opt, neg)
	case "physdev":
		return p.physdevOption(opt, neg)
	default:
		return false, nil
	}
	return true, err
}

func (p *ruleParser) portOption(opt string, neg bool) error {
	v, err := p.value(opt)
	if err != nil {
		return err
	}
	pr, err := parsePortRange(v, ":")
	if err != nil {
		return fmt.Errorf("option %s: %w", opt, err)
	}
	m := &PortMatch{Ports: pr, Invert: neg}
	if opt == "--dport" || opt == "--destination-port" {
		p.r.DestinationPort = m
	} else {
		p.r.SourcePort = m
	}
	return nil
}

func (p *ruleParser) multiportOption(opt string, neg bool) (bool, error) {
	switch opt {
	case "--dports", "--destination-ports":
		opt = "--dports"
	case "--sports", "--source-ports":
		opt = "--sports"
	case "--ports":
	default:
		return false, nil
	}
	v, err := p.value(opt)
	if err != nil {
		return true, err
	}
	m := p.r.Multiport
	if m.Option != "" {
		return true, fmt.Errorf("multiport: two port lists: %w", ErrSyntax)
	}
	m.Option, m.Invert = opt, neg
	for _, s := range strings.Split(v, ",") {
		pr, err := parsePortRange(s, ":")
		if err != nil {
			return true, fmt.Errorf("option %s: %w", opt, err)
		}
		m.Ports = append(m.Ports, pr)
	}
	return true, nil
}

// addrTypes are the address types of -m addrtype, in the order
// iptables-save prints them.
var addrTypes = [...]string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST",
	"BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

func (p *ruleParser) addrTypeOption(opt string, neg bool) (bool, error) {
	if opt != "--src-type" && opt != "--dst-type" {
		return false, nil
	}
	v, err := p.value(opt)
	if err != nil {
		return true, err
	}
	var types []string
	for _, s := range strings.Split(v, ",") {
		s = strings.ToUpper(s)
		if !oneOf(s, addrTypes[:]) {
			return true, fmt.Errorf("option %s: address type %q: %w", opt, s, ErrSyntax)
		}
		types = append(types, s)
	}
	m := p.r.AddrType
	if opt == "--src-type" {
		m.SrcTypes, m.NotSrc = types, neg
	} else {
		m.DstTypes, m.NotDst = types, neg
	}
	return true, nil
}

func (p *ruleParser) markOption(opt string, neg bool) error {
	v, err := p.value(opt)
	if err != nil {
		return err
	}
	val, mask, err := parseMarkMask(v)
	if err != nil {
		return fmt.Errorf("option %s: %w", opt, err)
	}
	p.r.Mark = &MarkMatch{Value: val, Mask: mask, Invert: neg}
	return nil
}

// connStates are the conntrack states, in the order iptables-save prints
// them.
var connStates = [...]string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

func (p *ruleParser) connStateOption(opt string, neg bool) error {
	v, err := p.value(opt)
	if err != nil {
		return err
	}
	m := p.r.ConnState
	m.States, m.Invert = nil, neg
	for _, s := range strings.Split(v, ",") {
		s = strings.ToUpper(s)
		if !oneOf(s, connStates[:]) || m.Module == "state" && (s == "SNAT" || s == "DNAT") {
			return fmt.Errorf("option %s: state %q: %w", opt, s, ErrSyntax)
		}
		m.States = append(m.States, s)
	}
	return nil
}

func (p *ruleParser) statisticOption(opt string, neg bool) (bool, error) {
	if opt != "--mode" && opt != "--probability" && opt != "--every" && opt != "--packet" {
		return false, nil
	}
	v, err := p.value(opt)
	if err != nil {
		return true, err
	}
	m := p.r.Statistic
	m.Invert = m.Invert || neg
	switch opt {
	case "--mode":
		if v != "random" && v != "nth" {
			return true, fmt.Errorf("option --mode: %q: %w", v, ErrSyntax)
		}
		m.Mode = v
	case "--probability":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			return true, fmt.Errorf("option --probability: %q: %w", v, ErrSyntax)
		}
		m.Probability = f
	default:
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return true, fmt.Errorf("option %s: %q: %w", opt, v, ErrSyntax)
		}
		if opt == "--every" {
			m.Every = uint32(n)
		} else {
			m.Packet = uint32(n)
		}
	}
	return true, nil
}

func (p *ruleParser) recentOption(opt string, neg bool) (bool, error) {
	m := p.r.Recent
	switch opt {
	case "--set", "--rcheck", "--update", "--remove":
		if m.Command != "" {
			return true, fmt.Errorf("recent: two commands: %w", ErrSyntax)
		}
		m.Command, m.Invert = opt[2:], neg
		return true, nil
	case "--reap":
		m.Reap = true
	case "--rttl":
		m.TTL = true
	case "--rsource":
		m.Dest = false
	case "--rdest":
		m.Dest = true
	case "--seconds", "--hitcount", "--name", "--mask":
		return true, p.recentValue(opt, neg)
	default:
		return false, nil
	}
	if neg {
		return true, fmt.Errorf("\"!\" before %s: %w", opt, ErrSyntax)
	}
	return true, nil
}

func (p *ruleParser) recentValue(opt string, neg bool) error {
	v, err := p.word(opt)
	if err != nil {
		return err
	}
	if neg {
		return fmt.Errorf("\"!\" before %s: %w", opt, ErrSyntax)
	}
	m := p.r.Recent
	switch opt {
	case "--name":
		m.Name = v
		return nil
	case "--mask":
		a, err := netip.ParseAddr(v)
		if err != nil {
			return fmt.Errorf("option --mask: %w", err)
		}
		m.Mask = a
		return nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("option %s: %q: %w", opt, v, ErrSyntax)
	}
	if opt == "--seconds" {
		m.Seconds = uint32(n)
	} else {
		m.HitCount = uint32(n)
	}
	return nil
}

func (p *ruleParser) setOption(opt string, neg bool) (bool, error) {
	if opt != "--match-set" {
		return false, nil
	}
	name, err := p.word(opt)
	if err != nil {
		return true, err
	}
	flags, err := p.value(opt)
	if err != nil {
		return true, err
	}
	m := &p.r.Sets[len(p.r.Sets)-1]
	if m.Name != "" {
		return true, fmt.Errorf("set: two --match-set in one match: %w", ErrSyntax)
	}
	m.Name, m.Flags, m.Invert = name, strings.Split(flags, ","), neg
	for _, f := range m.Flags {
		if f != "src" && f != "dst" {
			return true, fmt.Errorf("option --match-set: flag %q: %w", f, ErrSyntax)
		}
	}
	return true, nil
}

func (p *ruleParser) physdevOption(opt string, neg bool) (bool, error) {
	m := p.r.Physdev
	var flag **bool
	switch opt {
	case "--physdev-in", "--physdev-out":
		v, err := p.word(opt)
		if err != nil {
			return true, err
		}
		if opt == "--physdev-in" {
			m.In = InterfaceMatch{Name: v, Invert: neg}
		} else {
			m.Out = InterfaceMatch{Name: v, Invert: neg}
		}
		return true, nil
	case "--physdev-is-in":
		flag = &m.IsIn
	case "--physdev-is-out":
		flag = &m.IsOut
	case "--physdev-is-bridged":
		flag = &m.IsBridged
	default:
		return false, nil
	}
	want := !neg
	*flag = &want
	return true, nil
}

// finish checks what can only be checked once every argument is read.
func (p *ruleParser) finish() error {
	r := &p.r
	switch {
	case r.Multiport != nil && r.Multiport.Option == "":
		return fmt.Errorf("multiport: no port list: %w", ErrSyntax)
	case r.Statistic != nil && r.Statistic.Mode == "":
		return fmt.Errorf("statistic: no --mode: %w", ErrSyntax)
	case r.Statistic != nil && r.Statistic.Mode == "nth" && r.Statistic.Every == 0:
		return fmt.Errorf("statistic: nth mode needs --every: %w", ErrSyntax)
	case oneOf("mark", r.Modules) && r.Mark == nil:
		return fmt.Errorf("mark: no --mark: %w", ErrSyntax)
	case r.AddrType != nil && r.AddrType.SrcTypes == nil && r.AddrType.DstTypes == nil:
		return fmt.Errorf("addrtype: no --src-type or --dst-type: %w", ErrSyntax)
	case r.ConnState != nil && r.ConnState.States == nil:
		return fmt.Errorf("%s: no states: %w", r.ConnState.Module, ErrSyntax)
	case r.Recent != nil && r.Recent.Command == "":
		return fmt.Errorf("recent: no --set, --rcheck, --update or --remove: %w", ErrSyntax)
	case r.Target == "MARK" && r.TargetOptions.Mark == nil:
		return fmt.Errorf("MARK: no mark change: %w", ErrSyntax)
	case r.Target == "DNAT" && !r.TargetOptions.ToDestination.Addr().IsValid():
		return fmt.Errorf("DNAT: no --to-destination: %w", ErrSyntax)
	case r.Target == "SNAT" && !r.TargetOptions.ToSource.Addr().IsValid():
		return fmt.Errorf("SNAT: no --to-source: %w", ErrSyntax)
	}
	for _, s := range r.Sets {
		if s.Name == "" {
			return fmt.Errorf("set: no --match-set: %w", ErrSyntax)
		}
	}
	for _, m := range r.Modules {
		if isPortProtocol(m) && (m != r.Protocol || r.NotProtocol) {
			return fmt.Errorf("match %q needs \"-p %s\": %w", m, m, ErrSyntax)
		}
	}
	return nil
}

func oneOf(s string, list []string) bool {
	for _, l := range list {
		if s == l {
			return true
		}
	}
	return false
}
