package ipset

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrSaveSyntax is wrapped by the errors of [ParseSave] and [ParseEntry]
// for text they cannot read.
var ErrSaveSyntax = errors.New("ipset save syntax")

// ParseSave reads "ipset save" output (or [Plan.WriteTo] output) into a
// Plan: sets in the order they appear, each member list sorted by
// [Entry.Compare] without duplicates. Create options that only size or
// seed the kernel's tables (hashsize, maxelem, bucketsize, initval) and
// the flags comment, counters, skbinfo and forceadd are ignored, as are
// per-member comment, timeout, packets and bytes; "#" lines and blank
// lines are skipped. Anything else it does not know (another command, set
// type, option or protocol) is an error naming the line, so that a Plan
// never silently misses part of what the kernel holds. Comments are not
// stored in the kernel, so every parsed Set has an empty Comment.
func ParseSave(text string) (*Plan, error) {
	p := &Plan{}
	index := map[string]int{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if err := parseLine(p, index, line); err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
		}
	}
	for i := range p.Sets {
		p.Sets[i].Entries = SortEntries(p.Sets[i].Entries)
	}
	return p, nil
}

func parseLine(p *Plan, index map[string]int, line string) error {
	f := strings.Fields(line)
	if len(f) < 3 {
		return fmt.Errorf("too few words: %w", ErrSaveSyntax)
	}
	switch f[0] {
	case "create", "-N", "-exist":
		if _, dup := index[f[1]]; dup {
			return fmt.Errorf("set %s created twice: %w", f[1], ErrSaveSyntax)
		}
		s, err := parseCreate(f[1], Type(f[2]), f[3:])
		if err != nil {
			return err
		}
		index[s.Name] = len(p.Sets)
		p.Sets = append(p.Sets, s)
		return nil
	case "add", "-A":
		i, ok := index[f[1]]
		if !ok {
			return fmt.Errorf("add to set %s before its create line: %w", f[1], ErrSaveSyntax)
		}
		s := &p.Sets[i]
		e, err := ParseEntry(s.Type, f[2])
		if err != nil {
			return err
		}
		if err := skipOptions(f[3:], nil, []string{"comment", "timeout", "packets", "bytes"}); err != nil {
			return err
		}
		s.Entries = append(s.Entries, e)
		return nil
	}
	return fmt.Errorf("command %q: %w", f[0], ErrSaveSyntax)
}

func parseCreate(name string, t Type, opts []string) (Set, error) {
	s := Set{Name: name, Type: t}
	switch t {
	case TypeHashIP, TypeHashIPPort, TypeHashIPPortIP, TypeHashIPPortNet:
		s.Family = IPv4
	case TypeBitmapPort:
	default:
		return s, fmt.Errorf("set type %q: %w", t, ErrSaveSyntax)
	}
	var rest []string
	for i := 0; i < len(opts); i++ {
		switch opts[i] {
		case "family":
			if i+1 >= len(opts) || (opts[i+1] != string(IPv4) && opts[i+1] != string(IPv6)) || t == TypeBitmapPort {
				return s, fmt.Errorf("family option: %w", ErrSaveSyntax)
			}
			s.Family = Family(opts[i+1])
			i++
		case "range":
			if i+1 >= len(opts) || t != TypeBitmapPort {
				return s, fmt.Errorf("range option: %w", ErrSaveSyntax)
			}
			r, err := parseRange(opts[i+1])
			if err != nil {
				return s, err
			}
			s.PortRange = r
			i++
		default:
			rest = append(rest, opts[i])
		}
	}
	flags := []string{"comment", "counters", "skbinfo", "forceadd", "-exist"}
	valued := []string{"hashsize", "maxelem", "bucketsize", "initval"}
	if err := skipOptions(rest, flags, valued); err != nil {
		return s, err
	}
	if t == TypeBitmapPort && s.PortRange == (PortRange{}) {
		return s, fmt.Errorf("bitmap:port set without range: %w", ErrSaveSyntax)
	}
	return s, nil
}

// skipOptions accepts opts made only of the given flags and of valued
// options each followed by one word (a quoted value may span words).
func skipOptions(opts, flags, valued []string) error {
	for i := 0; i < len(opts); i++ {
		o := opts[i]
		switch {
		case contains(flags, o):
		case contains(valued, o) && i+1 < len(opts):
			i++
			if v := opts[i]; strings.HasPrefix(v, `"`) && (len(v) == 1 || !strings.HasSuffix(v, `"`)) {
				for {
					i++
					if i >= len(opts) {
						return fmt.Errorf("unterminated quoted value of %s: %w", o, ErrSaveSyntax)
					}
					if strings.HasSuffix(opts[i], `"`) {
						break
					}
				}
			}
		default:
			return fmt.Errorf("option %q: %w", o, ErrSaveSyntax)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func parseRange(s string) (PortRange, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, ErrSaveSyntax)
	}
	first, err1 := strconv.ParseUint(a, 10, 16)
	last, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, ErrSaveSyntax)
	}
	return PortRange{First: uint16(first), Last: uint16(last)}, nil
}

// ParseEntry reads one member of a set of type t as ipset prints it (see
// [Entry.String]). A hash:ip,port,net network given as a bare address is
// a full-length prefix; a bitmap:port member may carry a protocol
// ("tcp:80"), which is dropped, as the kernel drops it.
func ParseEntry(t Type, s string) (Entry, error) {
	var e Entry
	bad := func(what string) (Entry, error) {
		return Entry{}, fmt.Errorf("%s member %q: %s: %w", t, s, what, ErrSaveSyntax)
	}
	if t == TypeBitmapPort {
		if _, p, ok := strings.Cut(s, ":"); ok {
			s = p
		}
		port, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return bad("bad port")
		}
		e.Port = uint16(port)
		return e, nil
	}
	parts := strings.Split(s, ",")
	want := map[Type]int{TypeHashIP: 1, TypeHashIPPort: 2, TypeHashIPPortIP: 3, TypeHashIPPortNet: 3}[t]
	if want == 0 {
		return bad("unknown set type")
	}
	if len(parts) != want {
		return bad("wrong number of parts")
	}
	ip, err := netip.ParseAddr(parts[0])
	if err != nil || ip.Zone() != "" {
		return bad("bad address")
	}
	e.IP = ip
	if want == 1 {
		return e, nil
	}
	proto, port, ok := strings.Cut(parts[1], ":")
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || err != nil {
		return bad("bad protocol:port")
	}
	switch Protocol(proto) {
	case TCP, UDP, SCTP:
	default:
		return bad("unsupported protocol")
	}
	e.Protocol, e.Port = Protocol(proto), uint16(n)
	switch t {
	case TypeHashIPPortIP:
		if e.IP2, err = netip.ParseAddr(parts[2]); err != nil {
			return bad("bad second address")
		}
	case TypeHashIPPortNet:
		if e.Net, err = parseNet(parts[2]); err != nil {
			return bad("bad network")
		}
	}
	return e, nil
}

func parseNet(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}
