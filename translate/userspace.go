package translate

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/userspace"
)

// The proxy ports of the userspace mode come from this range unless
// [WithUserspacePortRange] says otherwise. It lies below the default
// NodePort range and Linux's default ephemeral port range (32768-60999),
// so that neither takes a proxy port.
const (
	DefaultUserspacePortMin = 20000
	DefaultUserspacePortMax = 29999
)

// LocalListenerSuffix ends the name of the userspace listener that holds
// a service port's Local-policy endpoints.
//
// Old kube-proxy's userspace mode predates traffic policies and sent
// everything to all endpoints. svcplan gives them the meaning they have
// in iptables mode, as far as a proxy that hides the client's address
// can: a service port gets a listener named after it with the Cluster
// policy's endpoints when any of its traffic uses that policy, and one
// named with this suffix, with the endpoints on this node, when any uses
// the Local policy. Cluster IP traffic goes to the listener of
// InternalTrafficPolicy. External traffic (external IPs, load balancer
// IPs, NodePorts) goes to the Cluster listener, or under
// ExternalTrafficPolicy Local to the Local one, except traffic from pods
// (the cluster CIDR) and from the node itself, which goes to the Cluster
// listener. Traffic that has no endpoint to go to is rejected (the
// service port has no endpoints) or dropped (none of the policy's) by
// filter rules before it reaches the proxy; the listener stays, and
// refuses connections itself.
const LocalListenerSuffix = " (local)"

// ErrUserspacePortsExhausted is wrapped by the error [Compile] returns when
// the userspace proxy port range has no free port for a service port.
var ErrUserspacePortsExhausted = errors.New("userspace proxy port range exhausted")

// userspaceOptions are the settings of the userspace mode.
type userspaceOptions struct {
	portRange proxy.PortRange
	prev      map[string]int
	// bind holds the listen address per family (IPv4, IPv6); the zero
	// Addr means the unspecified address.
	bind    [2]netip.Addr
	udpIdle time.Duration
}

// WithUserspacePortRange sets the range userspace proxy ports come from
// (default [DefaultUserspacePortMin]-[DefaultUserspacePortMax]).
func WithUserspacePortRange(r proxy.PortRange) Option {
	return func(o *options) { o.userspace.portRange = r }
}

// WithUserspacePorts gives Compile the proxy ports of the previous
// userspace plan, keyed by [userspace.Listener.PortKey], as
// [userspace.Plan.Ports] returns them. Every listener that is still there
// keeps its port, so that applying the new plan leaves its socket and
// connections alone; new listeners get the lowest free ports. Ports
// outside the range, or claimed twice, are given out afresh. The map is
// not kept.
func WithUserspacePorts(prev map[string]int) Option {
	prev = maps.Clone(prev)
	return func(o *options) { o.userspace.prev = prev }
}

// WithUserspaceBindAddress makes the userspace listeners of a's family
// listen on a, one of the node's addresses, rather than on the
// unspecified address (0.0.0.0, ::). The portal rules then DNAT to a
// instead of redirecting. Give it once per family; loopback is refused.
func WithUserspaceBindAddress(a netip.Addr) Option {
	return func(o *options) {
		a = a.Unmap()
		o.userspace.bind[familyIndex(a.Is6())] = a
	}
}

// WithUDPIdleTimeout sets how long a UDP session of the userspace proxy
// lives without traffic (default [userspace.DefaultUDPIdleTimeout],
// 250 ms, as old kube-proxy's --udp-timeout).
func WithUDPIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.userspace.udpIdle = d }
}

func familyIndex(ipv6 bool) int {
	if ipv6 {
		return 1
	}
	return 0
}

// check refuses a bad port range, a loopback bind
// address and a negative timeout.
func (u *userspaceOptions) check() error {
	r := u.portRangeOrDefault()
	if r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return fmt.Errorf("userspace proxy port range %d-%d: must be within 1-65535, low to high", r.Min, r.Max)
	}
	for _, a := range u.bind {
		if a.IsValid() && a.IsLoopback() {
			return fmt.Errorf("userspace bind address %s: the portal rules cannot reach a loopback listener", a)
		}
	}
	if u.udpIdle < 0 {
		return fmt.Errorf("negative UDP idle timeout %s", u.udpIdle)
	}
	return nil
}

func (u *userspaceOptions) portRangeOrDefault() proxy.PortRange {
	if u.portRange == (proxy.PortRange{}) {
		return proxy.PortRange{Min: DefaultUserspacePortMin, Max: DefaultUserspacePortMax}
	}
	return u.portRange
}

// usPort is one service port the userspace mode programs, with the
// listeners it needs and their proxy ports.
type usPort struct {
	svc  *proxy.Service
	port *proxy.ServicePort
	// spn is the service port name, "ns/name:port".
	spn string
	// cluster and local say whether the port needs a listener with the
	// Cluster policy's endpoints and one with the Local policy's.
	cluster, local bool
	// clusterPort and localPort are their proxy ports.
	clusterPort, localPort int
}

// listenerName returns the name of the port's Cluster (or Local) listener.
func (up *usPort) listenerName(local bool) string {
	if local {
		return up.spn + LocalListenerSuffix
	}
	return up.spn
}

// portKey returns the key of a listener's proxy port, as
// userspace.Listener.PortKey makes it.
func (up *usPort) portKey(local bool) string {
	l := userspace.Listener{Name: up.listenerName(local), Protocol: userspaceProtocol(up.port)}
	return l.PortKey()
}

func userspaceProtocol(p *proxy.ServicePort) userspace.Protocol {
	if p.ProtocolOrDefault() == proxy.ProtocolUDP {
		return userspace.ProtocolUDP
	}
	return userspace.ProtocolTCP
}

// compileUserspace compiles the userspace plan and the portal rules, one
// iptables plan per family.
func compileUserspace(st *proxy.State, o *options) (*userspace.Plan, []*iptables.Plan, error) {
	if err := o.userspace.check(); err != nil {
		return nil, nil, err
	}
	ports, err := userspacePorts(st)
	if err != nil {
		return nil, nil, err
	}
	if err := allocateProxyPorts(st, ports, &o.userspace); err != nil {
		return nil, nil, err
	}
	plan := &userspace.Plan{}
	var plans []*iptables.Plan
	v4, v6 := families(st)
	for _, ipv6 := range []bool{false, true} {
		if (ipv6 && !v6) || (!ipv6 && !v4) {
			continue
		}
		f := newUSFamily(st, ipv6, &o.userspace)
		for i := range ports {
			if cip, ok := familyAddr(ports[i].svc.ClusterIPs, ipv6); ok {
				f.port(&ports[i], cip)
			}
		}
		p, err := f.plan()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", familyName(ipv6), err)
		}
		plan.Listeners = append(plan.Listeners, f.listeners...)
		plans = append(plans, p)
	}
	return plan, plans, nil
}

func familyName(ipv6 bool) string {
	if ipv6 {
		return "ipv6"
	}
	return "ipv4"
}

// userspacePorts returns the service ports the userspace mode programs:
// those of services with a cluster IP, sorted by namespace and name, in
// port order. SCTP ports are left out: the proxy cannot serve them.
func userspacePorts(st *proxy.State) ([]usPort, error) {
	idx := make([]int, 0, len(st.Services))
	for i := range st.Services {
		if len(st.Services[i].ClusterIPs) > 0 {
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(a, b int) int {
		sa, sb := &st.Services[a], &st.Services[b]
		if c := strings.Compare(sa.Namespace, sb.Namespace); c != 0 {
			return c
		}
		return strings.Compare(sa.Name, sb.Name)
	})
	var out []usPort
	for _, i := range idx {
		svc := &st.Services[i]
		for j := range svc.Ports {
			p := &svc.Ports[j]
			if err := checkName(svc.Namespace, svc.Name, p.Name); err != nil {
				return nil, err
			}
			if p.ProtocolOrDefault() == proxy.ProtocolSCTP {
				continue
			}
			out = append(out, usPort{svc: svc, port: p, spn: proxy.ServicePortName(svc, p),
				cluster: proxy.UsesCluster(svc, p), local: proxy.UsesLocal(svc, p)})
		}
	}
	return out, nil
}

// allocateProxyPorts gives every listener of ports a proxy port: its port
// in the previous plan when that is in the range and not claimed by an
// earlier listener, else the lowest free port of the range. Ports that are
// NodePorts or health check NodePorts of the state are never given out,
// so that a proxy socket never sits on a port that service traffic uses.
func allocateProxyPorts(st *proxy.State, ports []usPort, u *userspaceOptions) error {
	r := u.portRangeOrDefault()
	used := map[int]bool{}
	for i := range st.Services {
		svc := &st.Services[i]
		if hc := svc.HealthCheckNodePort; hc != 0 {
			used[hc] = true
		}
		for j := range svc.Ports {
			if np := svc.Ports[j].NodePort; np != 0 {
				used[np] = true
			}
		}
	}
	slot := func(up *usPort, local bool) *int {
		if local {
			return &up.localPort
		}
		return &up.clusterPort
	}
	each := func(fn func(up *usPort, local bool) error) error {
		for i := range ports {
			for _, local := range []bool{false, true} {
				if (local && ports[i].local) || (!local && ports[i].cluster) {
					if err := fn(&ports[i], local); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	_ = each(func(up *usPort, local bool) error {
		if p, ok := u.prev[up.portKey(local)]; ok && p >= r.Min && p <= r.Max && !used[p] {
			*slot(up, local) = p
			used[p] = true
		}
		return nil
	})
	next := r.Min
	return each(func(up *usPort, local bool) error {
		if *slot(up, local) != 0 {
			return nil
		}
		for next <= r.Max && used[next] {
			next++
		}
		if next > r.Max {
			return fmt.Errorf("service port %s (%s): no free proxy port in %d-%d: %w",
				up.listenerName(local), strings.ToLower(string(up.port.ProtocolOrDefault())), r.Min, r.Max, ErrUserspacePortsExhausted)
		}
		*slot(up, local) = next
		used[next] = true
		return nil
	})
}
