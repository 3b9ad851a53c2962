package proxy

import (
	"net/netip"
	"slices"
	"strings"
)

// Packet is the first packet of a connection, as the node's proxy rules see
// it.
type Packet struct {
	// Src is the source address.
	Src netip.Addr
	// Dst is the destination address and port.
	Dst netip.AddrPort
	// Protocol is the transport protocol; empty means ProtocolTCP.
	Protocol Protocol
	// FromNode means the node itself sent the packet (it passes the OUTPUT
	// hook); false means it arrived from outside the node or from a pod
	// (PREROUTING).
	FromNode bool
}

// Verdict is what the proxy does with a packet.
type Verdict string

// The verdicts.
const (
	// VerdictPass: no proxy rule changes or stops the packet.
	VerdictPass Verdict = "pass"
	// VerdictForward: the packet is sent to one of the answer's endpoints.
	VerdictForward Verdict = "forward"
	// VerdictDrop: the packet is silently dropped (no local endpoints, or
	// a load balancer source range excludes it).
	VerdictDrop Verdict = "drop"
	// VerdictReject: the packet is refused (the service has no endpoints).
	VerdictReject Verdict = "reject"
)

// Choice is one endpoint a forwarded packet may reach.
type Choice struct {
	// Endpoint is the endpoint address and port after DNAT.
	Endpoint netip.AddrPort
	// Probability is the chance of this endpoint for a new client.
	Probability float64
	// Masquerade means the packet leaves with the node's address as source.
	Masquerade bool
}

// Answer is the reference answer for a packet.
type Answer struct {
	// Verdict is what happens to the packet.
	Verdict Verdict
	// ServicePort names the service port that decided it
	// ("namespace/name:port"); empty for VerdictPass.
	ServicePort string
	// Choices are the endpoints for VerdictForward, sorted by endpoint,
	// with probabilities summing to 1; nil otherwise.
	Choices []Choice
}

// Resolve returns where the node's proxy sends pkt, following kube-proxy's
// rules: cluster IPs, external IPs and load balancer IPs in service order,
// then NodePorts on node addresses, then the filter rules that reject or
// drop traffic to services without (local) endpoints. Addresses considered
// local are the node's IPs and loopback. st must be valid.
func Resolve(st *State, pkt Packet) Answer {
	r := resolver{st: st, pkt: pkt, ipv6: pkt.Dst.Addr().Is6()}
	if pkt.Protocol == "" {
		r.pkt.Protocol = ProtocolTCP
	}
	if !pkt.Src.IsValid() || !pkt.Dst.IsValid() || pkt.Src.Is6() != r.ipv6 {
		return Answer{Verdict: VerdictPass}
	}
	r.srcLocal, r.dstLocal = r.isLocal(pkt.Src), r.isLocal(pkt.Dst.Addr())
	ports := r.servicePorts()
	for i := range ports {
		if a, ok := r.natService(&ports[i]); ok {
			return a
		}
	}
	if r.nodePortDispatch() {
		for i := range ports {
			if a, ok := r.natNodePort(&ports[i]); ok {
				return a
			}
		}
	}
	return r.filter(ports)
}

type resolver struct {
	st                 *State
	pkt                Packet
	ipv6               bool
	srcLocal, dstLocal bool
}

// portInfo is one service port with its endpoint choice, in rule order.
type portInfo struct {
	svc  *Service
	port *ServicePort
	name string
	pe   PortEndpoints
	cip  netip.Addr
}

func (r *resolver) servicePorts() []portInfo {
	svcs := make([]*Service, 0, len(r.st.Services))
	for i := range r.st.Services {
		svcs = append(svcs, &r.st.Services[i])
	}
	slices.SortFunc(svcs, func(a, b *Service) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []portInfo
	for _, svc := range svcs {
		cip, ok := r.familyAddr(svc.ClusterIPs)
		if !ok {
			continue
		}
		for j := range svc.Ports {
			p := &svc.Ports[j]
			out = append(out, portInfo{svc: svc, port: p, name: ServicePortName(svc, p), cip: cip,
				pe: SelectEndpoints(r.st, svc, p, r.ipv6)})
		}
	}
	return out
}

func (r *resolver) familyAddr(as []netip.Addr) (netip.Addr, bool) {
	for _, a := range as {
		if a.Is6() == r.ipv6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (r *resolver) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(r.st.Node.IPs, a)
}

func (r *resolver) matches(pi *portInfo, addr netip.Addr, port int) bool {
	return pi.port.ProtocolOrDefault() == r.pkt.Protocol && r.pkt.Dst == netip.AddrPortFrom(addr, uint16(port))
}

func (pi *portInfo) hasInternal() bool {
	if pi.svc.InternalLocal() {
		return len(pi.pe.Local) > 0
	}
	return pi.pe.HasAny
}

func (pi *portInfo) hasExternal() bool {
	if pi.svc.ExternalLocal() {
		return len(pi.pe.Local) > 0
	}
	return pi.pe.HasAny
}

// natService walks the KUBE-SERVICES rules of one service port: cluster
// IP, external IPs, load balancer IPs. ok is false when the packet falls
// through to later rules.
func (r *resolver) natService(pi *portInfo) (Answer, bool) {
	if pi.hasInternal() && r.matches(pi, pi.cip, pi.port.Port) {
		targets := pi.pe.Cluster
		if pi.svc.InternalLocal() {
			targets = pi.pe.Local
		}
		return r.forward(pi, targets, r.clusterMasquerade()), true
	}
	if !pi.pe.HasAny {
		return Answer{}, false
	}
	for _, ip := range pi.svc.ExternalIPs {
		if ip.Is6() == r.ipv6 && r.matches(pi, ip, pi.port.Port) {
			if a, ok := r.external(pi); ok {
				return a, true
			}
		}
	}
	for _, ip := range pi.svc.LoadBalancerIPs {
		if ip.Is6() != r.ipv6 || !r.matches(pi, ip, pi.port.Port) {
			continue
		}
		if !r.usesFirewall(pi) {
			if a, ok := r.external(pi); ok {
				return a, true
			}
			continue
		}
		if a, ok := r.firewall(pi); ok {
			return a, true
		}
	}
	return Answer{}, false
}

// usesFirewall reports whether the port has a KUBE-FW chain: it has
// endpoints, load balancer IPs and source ranges of this family (ranges of
// the other family are ignored, as kube-proxy ignores them).
func (r *resolver) usesFirewall(pi *portInfo) bool {
	return pi.pe.HasAny && r.hasFamily(pi.svc.LoadBalancerIPs) &&
		slices.ContainsFunc(pi.svc.LoadBalancerSourceRanges, func(p netip.Prefix) bool { return p.Addr().Is6() == r.ipv6 })
}

func (r *resolver) hasFamily(as []netip.Addr) bool {
	_, ok := r.familyAddr(as)
	return ok
}

// firewall is the KUBE-FW chain: sources inside a load balancer source
// range (of this family) go on to the external chain; so do packets sent
// from a load balancer IP when a range contains the node's IP.
func (r *resolver) firewall(pi *portInfo) (Answer, bool) {
	allowFromNode := false
	nodeIP, hasNodeIP := r.st.PrimaryNodeIP(r.ipv6)
	for _, cidr := range pi.svc.LoadBalancerSourceRanges {
		if cidr.Addr().Is6() != r.ipv6 {
			continue
		}
		if cidr.Contains(r.pkt.Src) {
			if a, ok := r.external(pi); ok {
				return a, true
			}
		}
		if hasNodeIP && cidr.Contains(nodeIP) {
			allowFromNode = true
		}
	}
	if allowFromNode {
		for _, ip := range pi.svc.LoadBalancerIPs {
			if ip.Is6() == r.ipv6 && ip == r.pkt.Src {
				if a, ok := r.external(pi); ok {
					return a, true
				}
			}
		}
	}
	return Answer{}, false
}

// external is the KUBE-EXT chain.
func (r *resolver) external(pi *portInfo) (Answer, bool) {
	if !pi.svc.ExternalLocal() {
		return r.forward(pi, pi.pe.Cluster, true), true
	}
	if cidr, ok := r.st.Config.ClusterCIDR(r.ipv6); ok && cidr.Contains(r.pkt.Src) {
		return r.forward(pi, pi.pe.Cluster, false), true
	}
	if r.srcLocal {
		return r.forward(pi, pi.pe.Cluster, true), true
	}
	if len(pi.pe.Local) > 0 {
		return r.forward(pi, pi.pe.Local, false), true
	}
	return Answer{}, false
}

// clusterMasquerade is the masquerade rule at the top of the internal
// policy chain, which matches only traffic addressed to the cluster IP.
func (r *resolver) clusterMasquerade() bool {
	if r.st.Config.MasqueradeAll {
		return true
	}
	cidr, ok := r.st.Config.ClusterCIDR(r.ipv6)
	return ok && !cidr.Contains(r.pkt.Src)
}

func (r *resolver) forward(pi *portInfo, targets []Target, masq bool) Answer {
	a := Answer{Verdict: VerdictForward, ServicePort: pi.name}
	p := 1 / float64(len(targets))
	for _, t := range targets {
		a.Choices = append(a.Choices, Choice{
			Endpoint:    t.AddrPort,
			Probability: p,
			Masquerade:  masq || t.AddrPort.Addr() == r.pkt.Src,
		})
	}
	slices.SortFunc(a.Choices, func(x, y Choice) int { return x.Endpoint.Compare(y.Endpoint) })
	return a
}

// nodePortDispatch is the last rule of KUBE-SERVICES: local destinations
// (all of them, or those in Config.NodePortAddresses) go to KUBE-NODEPORTS.
// IPv6 loopback never serves NodePorts.
func (r *resolver) nodePortDispatch() bool {
	dst := r.pkt.Dst.Addr()
	if len(r.st.Config.NodePortAddresses) == 0 {
		return r.dstLocal && !(r.ipv6 && dst.IsLoopback())
	}
	return slices.Contains(r.st.NodePortIPs(r.ipv6), dst) && !(r.ipv6 && dst.IsLoopback())
}

func (r *resolver) natNodePort(pi *portInfo) (Answer, bool) {
	if pi.port.NodePort == 0 || !pi.pe.HasAny || pi.port.ProtocolOrDefault() != r.pkt.Protocol ||
		int(r.pkt.Dst.Port()) != pi.port.NodePort {
		return Answer{}, false
	}
	return r.external(pi)
}

// filter applies the filter-table rules to a packet nat left untranslated.
// Forwarded packets see KUBE-PROXY-FIREWALL, KUBE-SERVICES and
// KUBE-EXTERNAL-SERVICES; packets to a local address see
// KUBE-PROXY-FIREWALL, KUBE-NODEPORTS (health checks) and
// KUBE-EXTERNAL-SERVICES; packets the node sends see KUBE-PROXY-FIREWALL
// and KUBE-SERVICES. Before all of them, kubelet's KUBE-FIREWALL drops
// non-loopback packets to 127.0.0.0/8.
func (r *resolver) filter(ports []portInfo) Answer {
	dst := r.pkt.Dst.Addr()
	input := !r.pkt.FromNode && r.dstLocal
	if !r.ipv6 && dst.IsLoopback() && !r.pkt.Src.IsLoopback() && (input || r.pkt.FromNode) {
		return Answer{Verdict: VerdictDrop}
	}
	for i := range ports {
		pi := &ports[i]
		for _, ip := range pi.svc.LoadBalancerIPs {
			if r.usesFirewall(pi) && ip.Is6() == r.ipv6 && r.matches(pi, ip, pi.port.Port) {
				return Answer{Verdict: VerdictDrop, ServicePort: pi.name}
			}
		}
	}
	if input {
		for i := range ports {
			hc := ports[i].svc.HealthCheckNodePort
			if hc != 0 && r.pkt.Protocol == ProtocolTCP && int(r.pkt.Dst.Port()) == hc {
				return Answer{Verdict: VerdictPass}
			}
		}
	}
	if !input {
		for i := range ports {
			pi := &ports[i]
			if !pi.hasInternal() && r.matches(pi, pi.cip, pi.port.Port) {
				return Answer{Verdict: noEndpointVerdict(pi), ServicePort: pi.name}
			}
		}
	}
	if r.pkt.FromNode {
		return Answer{Verdict: VerdictPass}
	}
	for i := range ports {
		if a, ok := r.externalFilter(&ports[i]); ok {
			return a
		}
	}
	return Answer{Verdict: VerdictPass}
}

func (r *resolver) externalFilter(pi *portInfo) (Answer, bool) {
	if pi.hasExternal() {
		return Answer{}, false
	}
	hit := false
	for _, ip := range append(slices.Clip(pi.svc.ExternalIPs), pi.svc.LoadBalancerIPs...) {
		hit = hit || ip.Is6() == r.ipv6 && r.matches(pi, ip, pi.port.Port)
	}
	if pi.port.NodePort != 0 && r.dstLocal && pi.port.ProtocolOrDefault() == r.pkt.Protocol &&
		int(r.pkt.Dst.Port()) == pi.port.NodePort {
		hit = true
	}
	if !hit {
		return Answer{}, false
	}
	return Answer{Verdict: noEndpointVerdict(pi), ServicePort: pi.name}, true
}

func noEndpointVerdict(pi *portInfo) Verdict {
	if !pi.pe.HasAny {
		return VerdictReject
	}
	return VerdictDrop
}
