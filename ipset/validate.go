package ipset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// MaxNameLen is the longest set name the kernel accepts.
const MaxNameLen = 31

// ErrInvalidPlan is wrapped by every error [Plan.Validate] reports.
var ErrInvalidPlan = errors.New("invalid ipset plan")

// Validate reports what in p the kernel or "ipset restore" would refuse,
// or what would make the plan differ from what the kernel then holds,
// every problem at once (joined with [errors.Join]), each naming the set
// (and member) by its path, such as "sets[KUBE-CLUSTER-IP].entries[3]": a
// name empty, longer than [MaxNameLen] bytes, holding a space, quote,
// control character or non-ASCII byte, or appearing twice; an unknown
// type; a hash set without family inet or inet6, or a bitmap set with
// one; a bitmap port range that is reversed or wider than 65536 ports; a
// comment that is not printable ASCII; a member lacking a field its type
// needs or having one it does not use, of the other family, with an
// unknown protocol, with a network that is not masked or has length 0, or
// with a port outside the bitmap range; and members not sorted by
// [Entry.Compare] or listed twice.
func (p *Plan) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i := range p.Sets {
		s := &p.Sets[i]
		path := fmt.Sprintf("sets[%s]", s.Name)
		if seen[s.Name] {
			errs = append(errs, invalid(path, "name appears twice"))
		}
		seen[s.Name] = true
		errs = append(errs, s.validateHeader(path)...)
		for j, e := range s.Entries {
			if err := s.checkEntry(e); err != nil {
				errs = append(errs, invalid(fmt.Sprintf("%s.entries[%d]", path, j), fmt.Sprintf("%s: %v", e, err)))
			}
			if j > 0 && s.Entries[j-1].Compare(e) >= 0 {
				errs = append(errs, invalid(fmt.Sprintf("%s.entries[%d]", path, j), fmt.Sprintf("%s: not sorted after %s or listed twice", e, s.Entries[j-1])))
			}
		}
	}
	return errors.Join(errs...)
}

func invalid(path, msg string) error {
	return fmt.Errorf("%s: %s: %w", path, msg, ErrInvalidPlan)
}

func (s *Set) validateHeader(path string) []error {
	var errs []error
	if err := checkName(s.Name); err != nil {
		errs = append(errs, invalid(path, err.Error()))
	}
	switch s.Type {
	case TypeHashIP, TypeHashIPPort, TypeHashIPPortIP, TypeHashIPPortNet:
		if s.Family != IPv4 && s.Family != IPv6 {
			errs = append(errs, invalid(path, fmt.Sprintf("hash set family %q: must be inet or inet6", s.Family)))
		}
		if s.PortRange != (PortRange{}) {
			errs = append(errs, invalid(path, "port range on a hash set"))
		}
	case TypeBitmapPort:
		if s.Family != "" {
			errs = append(errs, invalid(path, "family on a bitmap:port set"))
		}
		if s.PortRange.First > s.PortRange.Last {
			errs = append(errs, invalid(path, fmt.Sprintf("port range %d-%d reversed", s.PortRange.First, s.PortRange.Last)))
		}
	default:
		errs = append(errs, invalid(path, fmt.Sprintf("unknown type %q", s.Type)))
	}
	for i := 0; i < len(s.Comment); i++ {
		if c := s.Comment[i]; c < 0x20 || c > 0x7e {
			errs = append(errs, invalid(path, fmt.Sprintf("comment %q: not printable ASCII", s.Comment)))
			break
		}
	}
	return errs
}

func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("name %q: must be 1..%d bytes", name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == '"' || c == '\'' || c == '\\' || c == '#' {
			return fmt.Errorf("name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// checkEntry reports what is wrong with e as a member of s.
func (s *Set) checkEntry(e Entry) error {
	if s.Type == TypeBitmapPort {
		if e.IP.IsValid() || e.Protocol != "" || e.IP2.IsValid() || e.Net.IsValid() {
			return errors.New("bitmap:port member with more than a port")
		}
		if e.Port < s.PortRange.First || e.Port > s.PortRange.Last {
			return fmt.Errorf("port outside the range %d-%d", s.PortRange.First, s.PortRange.Last)
		}
		return nil
	}
	if !e.IP.IsValid() || e.IP.Zone() != "" {
		return errors.New("no address, or one with a zone")
	}
	if err := s.checkFamily(e.IP); err != nil {
		return err
	}
	hasPort := s.Type != TypeHashIP
	if !hasPort && (e.Protocol != "" || e.Port != 0) {
		return errors.New("hash:ip member with a protocol or port")
	}
	if hasPort && !slices.Contains([]Protocol{TCP, UDP, SCTP}, e.Protocol) {
		return fmt.Errorf("protocol %q: must be tcp, udp or sctp", e.Protocol)
	}
	if e.IP2.IsValid() != (s.Type == TypeHashIPPortIP) {
		return errors.New("second address missing or not used by the type")
	}
	if e.Net.IsValid() != (s.Type == TypeHashIPPortNet) {
		return errors.New("network missing or not used by the type")
	}
	if e.IP2.IsValid() {
		return s.checkFamily(e.IP2)
	}
	if e.Net.IsValid() {
		if e.Net != e.Net.Masked() || e.Net.Bits() == 0 {
			return errors.New("network not masked, or of length 0")
		}
		return s.checkFamily(e.Net.Addr())
	}
	return nil
}

func (s *Set) checkFamily(a netip.Addr) error {
	if a.Is4() != (s.Family == IPv4) || a.Is4In6() {
		return fmt.Errorf("address %s not of family %s", a, s.Family)
	}
	return nil
}
