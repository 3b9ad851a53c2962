package ipvs

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// MaxInterfaceNameLen is the longest interface name Linux accepts.
const MaxInterfaceNameLen = 15

// ErrInvalidPlan is wrapped by every error [Plan.Validate] reports.
var ErrInvalidPlan = errors.New("invalid ipvs plan")

var schedulers = map[Scheduler]bool{
	RoundRobin: true, WeightedRoundRobin: true, LeastConnection: true, WeightedLeastConnection: true,
	LocalityBasedLeastConnection: true, LocalityBasedLeastConnRepl: true, DestinationHashing: true,
	SourceHashing: true, ShortestExpectedDelay: true, NeverQueue: true, MaglevHashing: true,
}

// Validate reports what in p the kernel or ipvsadm would refuse, or what
// would make the kernel differ from p, every problem at once (joined with
// [errors.Join]), each naming its path, such as
// "virtualServers[tcp/10.0.0.1:80].realServers[1]": an interface name that
// is empty-but-set, too long or holds '/', ':' or white space; an address
// that is invalid, zoned, IPv4-mapped IPv6, unspecified, out of order or
// listed twice; a virtual server of an unknown protocol or scheduler,
// without an address or port, with a negative timeout or one that is not
// whole seconds or exceeds 2^32-1 s, out of order or listed twice; a real
// server without address or port, of the other family, with a weight
// outside 0..65535, out of order or listed twice.
func (p *Plan) Validate() error {
	var errs []error
	if p.Interface != "" {
		if err := checkInterface(p.Interface); err != nil {
			errs = append(errs, invalid("interface", err.Error()))
		}
	}
	for i, a := range p.Addresses {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() {
			errs = append(errs, invalid(addrPath(i), fmt.Sprintf("address %s: invalid, zoned, IPv4-mapped or unspecified", a)))
		}
		if i > 0 && p.Addresses[i-1].Compare(a) >= 0 {
			errs = append(errs, invalid(addrPath(i), fmt.Sprintf("address %s: not sorted or listed twice", a)))
		}
	}
	for i := range p.VirtualServers {
		v := &p.VirtualServers[i]
		errs = append(errs, v.validate()...)
		if i > 0 && p.VirtualServers[i-1].Compare(v) >= 0 {
			errs = append(errs, invalid(v.path(), "not sorted or listed twice"))
		}
	}
	return errors.Join(errs...)
}

func addrPath(i int) string { return fmt.Sprintf("addresses[%d]", i) }

func invalid(path, msg string) error {
	return fmt.Errorf("%s: %s: %w", path, msg, ErrInvalidPlan)
}

func checkInterface(name string) error {
	if len(name) > MaxInterfaceNameLen {
		return fmt.Errorf("name %q: longer than %d bytes", name, MaxInterfaceNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == '/' || c == ':' {
			return fmt.Errorf("name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// path names v in error messages; it is built only for an error.
func (v *VirtualServer) path() string {
	return fmt.Sprintf("virtualServers[%s/%s]", v.Protocol, v.Addr)
}

func (v *VirtualServer) realPath(j int) string {
	return fmt.Sprintf("%s.realServers[%d]", v.path(), j)
}

func (v *VirtualServer) validate() []error {
	var errs []error
	switch v.Protocol {
	case TCP, UDP, SCTP:
	default:
		errs = append(errs, invalid(v.path(), fmt.Sprintf("protocol %q: must be tcp, udp or sctp", v.Protocol)))
	}
	if a := v.Addr.Addr(); !v.Addr.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || v.Addr.Port() == 0 {
		errs = append(errs, invalid(v.path(), "address invalid, zoned, IPv4-mapped, unspecified or without port"))
	}
	if !schedulers[v.SchedulerOrDefault()] {
		errs = append(errs, invalid(v.path(), fmt.Sprintf("scheduler %q unknown", v.Scheduler)))
	}
	if v.Timeout < 0 || v.Timeout%time.Second != 0 || v.Timeout/time.Second > math.MaxUint32 {
		errs = append(errs, invalid(v.path(), fmt.Sprintf("timeout %s: must be whole seconds in 0..2^32-1", v.Timeout)))
	}
	for j, r := range v.RealServers {
		if a := r.Addr.Addr(); !r.Addr.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || r.Addr.Port() == 0 {
			errs = append(errs, invalid(v.realPath(j), fmt.Sprintf("address %s invalid, zoned, IPv4-mapped, unspecified or without port", r.Addr)))
		} else if v.Addr.IsValid() && r.Addr.Addr().Is4() != v.Addr.Addr().Is4() {
			errs = append(errs, invalid(v.realPath(j), fmt.Sprintf("address %s of the other family", r.Addr)))
		}
		if r.Weight < 0 || r.Weight > math.MaxUint16 {
			errs = append(errs, invalid(v.realPath(j), fmt.Sprintf("weight %d outside 0..65535", r.Weight)))
		}
		if j > 0 && v.RealServers[j-1].Addr.Compare(r.Addr) >= 0 {
			errs = append(errs, invalid(v.realPath(j), fmt.Sprintf("%s not sorted or listed twice", r.Addr)))
		}
	}
	return errs
}
