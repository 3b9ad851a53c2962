package userspace

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Protocol is the transport protocol of a listener.
type Protocol string

// The protocols the proxy forwards. SCTP is not among them: the Go
// standard library has no SCTP sockets.
const (
	ProtocolTCP Protocol = "TCP"
	ProtocolUDP Protocol = "UDP"
)

// DefaultUDPIdleTimeout is how long a UDP session lives without a
// datagram in either direction when Listener.UDPIdleTimeout is zero; old
// kube-proxy's --udp-timeout default.
const DefaultUDPIdleTimeout = 250 * time.Millisecond

// defaultDialTimeouts are the timeouts of the successive attempts to
// reach a backend for one new TCP connection, each attempt on the next
// backend; the same as old kube-proxy's. It is never modified.
var defaultDialTimeouts = [...]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// Plan is the set of listeners a [Proxy] should have: one per service port,
// protocol and address family (two when the service port needs separate
// endpoint lists for its Cluster and Local traffic policies). The
// redirecting iptables rules that send service traffic to the listeners
// ("portals") are not part of it; translate compiles them into an
// iptables.Plan beside it.
//
// The zero Plan has no listeners; applying it closes every listener.
type Plan struct {
	// Listeners are the listeners, in display order. Each identity (see
	// [Listener.ID]) appears once.
	Listeners []Listener
}

// Listener is one proxy socket and where it forwards to.
type Listener struct {
	// Name names the listener in tables, logs, errors and [Proxy.Stats];
	// translate uses the service port name, "namespace/name:port", with a
	// " (local)" suffix for the listener holding the Local policy's
	// endpoints. Empty is allowed but unhelpful.
	Name string
	// Protocol is the transport protocol. Empty means ProtocolTCP.
	Protocol Protocol
	// Addr is the address and port to listen on: the unspecified address
	// of a family (0.0.0.0, ::) or one of the node's addresses. IPv6
	// listeners accept IPv6 only. Port 0 lets the kernel choose; the chosen
	// port shows in [Proxy.Stats].
	Addr netip.AddrPort
	// Backends are the addresses connections are forwarded to, in any
	// order; the proxy spreads new connections over them round robin,
	// starting from a shuffled order. Nil means none: new TCP connections
	// are reset at once and UDP datagrams are dropped.
	Backends []netip.AddrPort
	// AffinityTimeout enables ClientIP session affinity: a client address
	// keeps going to the backend it last used until it has been idle for
	// this long. Zero means no affinity.
	AffinityTimeout time.Duration
	// UDPIdleTimeout ends a UDP session after this long without a
	// datagram. Zero means DefaultUDPIdleTimeout; ignored for TCP.
	UDPIdleTimeout time.Duration
}

// ID identifies a listener across plans: its protocol and address, and,
// when the port is left to the kernel (0), its name. [Proxy.Apply] keeps a
// listener open, and only updates its backends and settings, when the next
// plan has a listener with the same ID.
type ID struct {
	// Protocol is the listener's protocol, defaulted.
	Protocol Protocol
	// Addr is the listener's address, IPv4-mapped addresses unmapped.
	Addr netip.AddrPort
	// Name is the listener's name when Addr's port is 0, else empty.
	Name string
}

// ID returns l's identity.
func (l *Listener) ID() ID {
	id := ID{Protocol: l.ProtocolOrDefault(), Addr: unmapAddrPort(l.Addr)}
	if l.Addr.Port() == 0 {
		id.Name = l.Name
	}
	return id
}

// ProtocolOrDefault returns l.Protocol, defaulted to TCP.
func (l *Listener) ProtocolOrDefault() Protocol {
	if l.Protocol == "" {
		return ProtocolTCP
	}
	return l.Protocol
}

// UDPIdleTimeoutOrDefault returns l.UDPIdleTimeout, defaulted.
func (l *Listener) UDPIdleTimeoutOrDefault() time.Duration {
	if l.UDPIdleTimeout == 0 {
		return DefaultUDPIdleTimeout
	}
	return l.UDPIdleTimeout
}

// PortKey returns the key of l's proxy port in [Plan.Ports]: the lower-case
// protocol, a slash and the name, such as "tcp/ns1/svc1:p80".
func (l *Listener) PortKey() string {
	return strings.ToLower(string(l.ProtocolOrDefault())) + "/" + l.Name
}

// network returns the Go network name for l: "tcp4", "tcp6", "udp4" or
// "udp6".
func (l *Listener) network() string {
	n := "tcp"
	if l.ProtocolOrDefault() == ProtocolUDP {
		n = "udp"
	}
	if unmapAddrPort(l.Addr).Addr().Is4() {
		return n + "4"
	}
	return n + "6"
}

// Ports returns the proxy port of every listener with a port, keyed by
// [Listener.PortKey]. Listeners of two families with the same key share a
// port. It is what translate.WithUserspacePorts takes to keep ports
// stable from one compile to the next.
func (p *Plan) Ports() map[string]int {
	out := make(map[string]int, len(p.Listeners))
	for i := range p.Listeners {
		l := &p.Listeners[i]
		if l.Addr.Port() != 0 {
			out[l.PortKey()] = int(l.Addr.Port())
		}
	}
	return out
}

// Listener returns the first listener named name with protocol proto of
// the family of ipv6, or nil.
func (p *Plan) Listener(name string, proto Protocol, ipv6 bool) *Listener {
	for i := range p.Listeners {
		l := &p.Listeners[i]
		if l.Name == name && l.ProtocolOrDefault() == proto && unmapAddrPort(l.Addr).Addr().Is6() == ipv6 {
			return l
		}
	}
	return nil
}

// ErrInvalidPlan is wrapped by the errors of [Plan.Validate].
var ErrInvalidPlan = errors.New("invalid userspace plan")

// Validate reports every problem of p at once, each naming the listener
// by index and name: an unknown protocol, a missing or zoned address, a
// backend without address or port, a negative timeout, and two listeners
// with the same [Listener.ID].
func (p *Plan) Validate() error {
	var errs []error
	seen := make(map[ID]int, len(p.Listeners))
	for i := range p.Listeners {
		l := &p.Listeners[i]
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("listeners[%d] (%s): %s: %w", i, l.Name, fmt.Sprintf(format, args...), ErrInvalidPlan))
		}
		switch l.ProtocolOrDefault() {
		case ProtocolTCP, ProtocolUDP:
		default:
			bad("protocol %q not supported", l.Protocol)
		}
		if !l.Addr.Addr().IsValid() || l.Addr.Addr().Zone() != "" {
			bad("address %q must be an address without zone", l.Addr)
		}
		for j, b := range l.Backends {
			if !b.Addr().IsValid() || b.Port() == 0 {
				bad("backends[%d]: %q needs an address and a port", j, b)
			}
		}
		if l.AffinityTimeout < 0 {
			bad("negative affinity timeout %s", l.AffinityTimeout)
		}
		if l.UDPIdleTimeout < 0 {
			bad("negative UDP idle timeout %s", l.UDPIdleTimeout)
		}
		id := l.ID()
		if j, dup := seen[id]; dup {
			bad("same protocol and address as listeners[%d] (%s)", j, p.Listeners[j].Name)
		} else {
			seen[id] = i
		}
	}
	return errors.Join(errs...)
}

// clone returns a deep copy of l, with its backends unmapped.
func (l *Listener) clone() Listener {
	c := *l
	c.Backends = make([]netip.AddrPort, len(l.Backends))
	for i, b := range l.Backends {
		c.Backends[i] = unmapAddrPort(b)
	}
	c.Addr = unmapAddrPort(l.Addr)
	return c
}

// unmapAddrPort turns an IPv4-mapped IPv6 address into IPv4.
func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// sortedBackends returns a sorted copy of bs without duplicates.
func sortedBackends(bs []netip.AddrPort) []netip.AddrPort {
	out := slices.Clone(bs)
	slices.SortFunc(out, netip.AddrPort.Compare)
	return slices.Compact(out)
}
