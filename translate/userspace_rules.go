package translate

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/userspace"
)

// The chains of old kube-proxy's userspace mode. The filter chains
// KUBE-SERVICES, KUBE-EXTERNAL-SERVICES and KUBE-PROXY-FIREWALL (named
// and linked as in iptables mode) are svcplan's addition: they reject
// traffic to services without endpoints and drop traffic that load
// balancer source ranges exclude.
const (
	chainPortalsContainer  = "KUBE-PORTALS-CONTAINER"
	chainPortalsHost       = "KUBE-PORTALS-HOST"
	chainNodePortContainer = "KUBE-NODEPORT-CONTAINER"
	chainNodePortHost      = "KUBE-NODEPORT-HOST"
	chainNodePortNonLocal  = "KUBE-NODEPORT-NON-LOCAL"
)

// usFamily compiles the userspace listeners and portal rules of one
// address family.
type usFamily struct {
	st   *proxy.State
	ipv6 bool
	o    *userspaceOptions
	sel  proxy.Selector
	// bind is the listeners' address; hostIP the address the host chains
	// DNAT to, invalid when the family has none (they REDIRECT then).
	bind, hostIP netip.Addr
	cidr         netip.Prefix
	hasCIDR      bool
	nodeIP       netip.Addr

	listeners []userspace.Listener

	// The chains' rules, as text.
	container, host, npContainer, npHost, nonLocal []byte
	filServices, filExternal, filFirewall          []byte
}

// target is a listener that rules send traffic to.
type target struct {
	port int
	// has says the listener has backends.
	has bool
}

func newUSFamily(st *proxy.State, ipv6 bool, o *userspaceOptions) *usFamily {
	f := &usFamily{st: st, ipv6: ipv6, o: o, bind: o.bind[familyIndex(ipv6)]}
	f.nodeIP, _ = st.PrimaryNodeIP(ipv6)
	f.hostIP = f.bind
	if !f.bind.IsValid() {
		f.bind = netip.IPv4Unspecified()
		if ipv6 {
			f.bind = netip.IPv6Unspecified()
		}
		f.hostIP = f.nodeIP
	}
	f.cidr, f.hasCIDR = st.Config.ClusterCIDR(ipv6)
	return f
}

// usCtx is one service port being compiled in a family.
type usCtx struct {
	f      *usFamily
	up     *usPort
	pe     proxy.PortEndpoints
	proto  string // "tcp"
	cl, lo target
}

// port compiles one service port: its listeners, portal rules and filter
// rules.
func (f *usFamily) port(up *usPort, cip netip.Addr) {
	c := usCtx{f: f, up: up, pe: f.sel.Select(f.st, up.svc, up.port, f.ipv6), proto: "tcp"}
	if up.port.ProtocolOrDefault() == proxy.ProtocolUDP {
		c.proto = "udp"
	}
	if up.cluster {
		c.cl = f.listener(up, false, c.pe.Cluster)
	}
	if up.local {
		c.lo = f.listener(up, true, c.pe.Local)
	}
	svc, port := up.svc, up.port
	internal := c.cl
	if svc.InternalLocal() {
		internal = c.lo
	}
	if internal.has {
		c.portal(false, netip.Prefix{}, cip, port.Port, "", internal)
	} else {
		f.filServices = c.filterRule(f.filServices, cip, port.Port, "", c.noEndpoints())
	}
	if c.pe.HasAny {
		c.externals()
	}
	hasExternal := c.pe.HasAny
	if svc.ExternalLocal() {
		hasExternal = len(c.pe.Local) > 0
	}
	if !hasExternal {
		c.rejectExternals()
	}
	if hc := svc.HealthCheckNodePort; hc != 0 {
		// As in iptables mode, through a default-deny INPUT policy; the
		// health check server is the caller's.
		b := c.comment(f.nonLocal, up.spn+" health check node port")
		f.nonLocal = append(strconv.AppendInt(append(b, " -p tcp -m tcp --dport "...), int64(hc), 10), " -j ACCEPT\n"...)
	}
}

// listener adds the port's listener holding targets and returns it.
func (f *usFamily) listener(up *usPort, local bool, targets []proxy.Target) target {
	port := up.clusterPort
	if local {
		port = up.localPort
	}
	l := userspace.Listener{
		Name:            up.listenerName(local),
		Protocol:        userspaceProtocol(up.port),
		Addr:            netip.AddrPortFrom(f.bind, uint16(port)),
		AffinityTimeout: time.Duration(up.svc.AffinityTimeout()) * time.Second,
	}
	if l.Protocol == userspace.ProtocolUDP {
		l.UDPIdleTimeout = f.o.udpIdle
		if l.UDPIdleTimeout == 0 {
			l.UDPIdleTimeout = userspace.DefaultUDPIdleTimeout
		}
	}
	for _, t := range targets {
		l.Backends = append(l.Backends, t.AddrPort)
	}
	f.listeners = append(f.listeners, l)
	return target{port: port, has: len(targets) > 0}
}

// externals writes the portal rules of the port's external IPs, load
// balancer IPs and NodePort.
func (c *usCtx) externals() {
	f, svc, port := c.f, c.up.svc, c.up.port
	for _, ip := range svc.ExternalIPs {
		if ofFamily(ip, f.ipv6) {
			c.external(false, netip.Prefix{}, ip, port.Port)
		}
	}
	var ranges []netip.Prefix
	fromNode := false
	for _, p := range svc.LoadBalancerSourceRanges {
		if ofFamily(p.Addr(), f.ipv6) {
			ranges = append(ranges, p)
			fromNode = fromNode || (f.nodeIP.IsValid() && p.Contains(f.nodeIP))
		}
	}
	for _, ip := range svc.LoadBalancerIPs {
		if !ofFamily(ip, f.ipv6) {
			continue
		}
		if len(ranges) == 0 {
			c.external(false, netip.Prefix{}, ip, port.Port)
			continue
		}
		for _, r := range ranges {
			c.external(false, r, ip, port.Port)
		}
		if fromNode {
			// The node may reach its load balancer, which sends the
			// traffic back with the load balancer IP as source.
			for _, src := range svc.LoadBalancerIPs {
				if ofFamily(src, f.ipv6) {
					c.external(false, netip.PrefixFrom(src, src.BitLen()), ip, port.Port)
				}
			}
		}
		comment := c.up.spn + " traffic not accepted by the load balancer source ranges"
		f.filFirewall = c.filterRuleText(f.filFirewall, comment, netip.Prefix{}, ip, port.Port, "", "DROP")
	}
	if port.NodePort != 0 {
		c.external(true, netip.Prefix{}, netip.Addr{}, port.NodePort)
		f.nonLocal = c.acceptRule(f.nonLocal, c.cl.port)
		if svc.ExternalLocal() && c.lo.has {
			f.nonLocal = c.acceptRule(f.nonLocal, c.lo.port)
		}
	}
}

// external writes the rules for external traffic from src (any source
// when invalid) to dst:dport (any local address when dst is invalid: a
// NodePort), in the portal chains or, for a NodePort, the NodePort
// chains. Under the Cluster external policy it all goes to the Cluster
// listener. Under the Local policy, as in iptables mode, traffic from
// pods and from the node itself still does, and the rest goes to the
// Local listener, or, when that has no backends, falls through to the
// filter rule that drops it.
func (c *usCtx) external(nodePort bool, src netip.Prefix, dst netip.Addr, dport int) {
	f := c.f
	if !c.up.svc.ExternalLocal() {
		c.portal(nodePort, src, dst, dport, "", c.cl)
		return
	}
	if f.hasCIDR {
		if pods, ok := intersectPrefixes(src, f.cidr); ok {
			c.portal(nodePort, pods, dst, dport, "", c.cl)
		}
	}
	c.portal(nodePort, src, dst, dport, "-m addrtype --src-type LOCAL", c.cl)
	if c.lo.has {
		c.portal(nodePort, src, dst, dport, "", c.lo)
	}
}

// intersectPrefixes returns the intersection of a (the zero Prefix
// meaning everything) and b, and whether it is not empty.
func intersectPrefixes(a, b netip.Prefix) (netip.Prefix, bool) {
	switch {
	case !a.IsValid():
		return b, true
	case a.Bits() >= b.Bits() && b.Contains(a.Addr()):
		return a, true
	case b.Bits() >= a.Bits() && a.Contains(b.Addr()):
		return b, true
	}
	return netip.Prefix{}, false
}

// rejectExternals writes the filter rules for the port's external
// addresses and NodePort when external traffic has nowhere to go: REJECT
// without endpoints, DROP without local ones.
func (c *usCtx) rejectExternals() {
	f, svc, port := c.f, c.up.svc, c.up.port
	v := c.noEndpoints()
	for _, ip := range svc.ExternalIPs {
		if ofFamily(ip, f.ipv6) {
			f.filExternal = c.filterRule(f.filExternal, ip, port.Port, "", v)
		}
	}
	for _, ip := range svc.LoadBalancerIPs {
		if ofFamily(ip, f.ipv6) {
			f.filExternal = c.filterRule(f.filExternal, ip, port.Port, "", v)
		}
	}
	if port.NodePort != 0 {
		f.filExternal = c.filterRule(f.filExternal, netip.Addr{}, port.NodePort, "-m addrtype --dst-type LOCAL", v)
	}
}

// noEndpoints returns the filter target for traffic without an endpoint:
// REJECT when the port has none at all, DROP when it has none of the
// policy's.
func (c *usCtx) noEndpoints() string {
	if c.pe.HasAny {
		return "DROP"
	}
	return "REJECT"
}

// portal writes one rule into the container and the host chain (portal or
// NodePort ones), sending the traffic to listener t.
func (c *usCtx) portal(nodePort bool, src netip.Prefix, dst netip.Addr, dport int, extra string, t target) {
	f := c.f
	cont, host := &f.container, &f.host
	if nodePort {
		cont, host = &f.npContainer, &f.npHost
	}
	*cont = c.rule(*cont, src, dst, dport, extra, f.containerTarget(t.port))
	*host = c.rule(*host, src, dst, dport, extra, f.hostTarget(t.port))
}

// containerTarget is where traffic arriving from outside the node goes:
// REDIRECT to the proxy port on the arrival interface's address when the
// listeners listen on every address, else DNAT to their address.
func (f *usFamily) containerTarget(port int) string {
	if f.bind.IsUnspecified() {
		return "REDIRECT --to-ports " + strconv.Itoa(port)
	}
	return "DNAT --to-destination " + netip.AddrPortFrom(f.bind, uint16(port)).String()
}

// hostTarget is where traffic the node sends goes: DNAT to the node's
// address (REDIRECT there would answer UDP from the wrong address), or
// REDIRECT to loopback when the family has no node address.
func (f *usFamily) hostTarget(port int) string {
	if !f.hostIP.IsValid() {
		return "REDIRECT --to-ports " + strconv.Itoa(port)
	}
	return "DNAT --to-destination " + netip.AddrPortFrom(f.hostIP, uint16(port)).String()
}

// rule appends a portal rule, in the old proxier's argument order:
// `-m comment --comment "spn" -p tcp -m tcp [-s src] [-d dst/32] --dport port [extra] -j target`.
func (c *usCtx) rule(b []byte, src netip.Prefix, dst netip.Addr, dport int, extra, target string) []byte {
	b = c.comment(b, c.up.spn)
	b = c.match(b, src, dst, dport, extra)
	b = append(b, " -j "...)
	b = append(b, target...)
	return append(b, '\n')
}

// filterRule appends a REJECT or DROP rule for traffic without endpoints.
func (c *usCtx) filterRule(b []byte, dst netip.Addr, dport int, extra, verdict string) []byte {
	comment := c.up.spn + " has no endpoints"
	if verdict == "DROP" {
		comment = c.up.spn + " has no local endpoints"
	}
	return c.filterRuleText(b, comment, netip.Prefix{}, dst, dport, extra, verdict)
}

func (c *usCtx) filterRuleText(b []byte, comment string, src netip.Prefix, dst netip.Addr, dport int, extra, verdict string) []byte {
	b = c.comment(b, comment)
	b = c.match(b, src, dst, dport, extra)
	b = append(b, " -j "...)
	b = append(b, verdict...)
	return append(b, '\n')
}

// acceptRule appends the KUBE-NODEPORT-NON-LOCAL rule that lets new
// connections redirected to a proxy port through a default-deny INPUT
// policy.
func (c *usCtx) acceptRule(b []byte, proxyPort int) []byte {
	b = c.comment(b, c.up.spn)
	b = c.match(b, netip.Prefix{}, netip.Addr{}, proxyPort, "-m state --state NEW")
	return append(b, " -j ACCEPT\n"...)
}

// comment appends `-m comment --comment "text"`; the text is a service
// port name (checked by checkName) and fixed words, so it needs no
// escaping.
func (c *usCtx) comment(b []byte, text string) []byte {
	b = append(b, `-m comment --comment "`...)
	b = append(b, text...)
	return append(b, '"')
}

// match appends ` -p tcp -m tcp [-s src] [-d dst/32] --dport port [extra]`.
func (c *usCtx) match(b []byte, src netip.Prefix, dst netip.Addr, dport int, extra string) []byte {
	b = append(b, " -p "...)
	b = append(b, c.proto...)
	b = append(b, " -m "...)
	b = append(b, c.proto...)
	if src.IsValid() {
		b = src.AppendTo(append(b, " -s "...))
	}
	if dst.IsValid() {
		b = netip.PrefixFrom(dst, dst.BitLen()).AppendTo(append(b, " -d "...))
	}
	b = strconv.AppendInt(append(b, " --dport "...), int64(dport), 10)
	if extra != "" {
		b = append(append(b, ' '), extra...)
	}
	return b
}

// plan assembles the family's iptables plan.
func (f *usFamily) plan() (*iptables.Plan, error) {
	build := func(specs ...chainText) ([]iptables.Chain, error) {
		out := make([]iptables.Chain, len(specs))
		for i, s := range specs {
			ch, err := iptables.ChainFromText(s.name, string(s.text))
			if err != nil {
				return nil, err
			}
			out[i] = ch
		}
		return out, nil
	}
	filter, err := build(
		chainText{chainNodePortNonLocal, f.nonLocal},
		chainText{chainServices, f.filServices},
		chainText{chainExternalServices, f.filExternal},
		chainText{chainProxyFirewall, f.filFirewall},
	)
	if err != nil {
		return nil, err
	}
	nat, err := build(
		chainText{chainPortalsContainer, f.container},
		chainText{chainPortalsHost, f.host},
		chainText{chainNodePortContainer, f.npContainer},
		chainText{chainNodePortHost, f.npHost},
	)
	if err != nil {
		return nil, err
	}
	fam := iptables.IPv4
	if f.ipv6 {
		fam = iptables.IPv6
	}
	return &iptables.Plan{
		Family: fam,
		Tables: []iptables.TableChains{
			{Table: iptables.TableFilter, Chains: filter},
			{Table: iptables.TableNAT, Chains: nat},
		},
		Jumps: f.jumps(),
	}, nil
}

type chainText struct {
	name string
	text []byte
}

// jumps returns the rules linking the chains from the built-in ones: old
// kube-proxy's, then those of the filter chains svcplan adds, linked as
// in iptables mode.
func (f *usFamily) jumps() []iptables.Jump {
	const (
		portals   = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
		nodePorts = "handle service NodePorts; NOTE: this must be the last rule in the chain"
	)
	nat := func(chain string, match []string, comment, target string) iptables.Jump {
		return iptables.Jump{Table: iptables.TableNAT, Chain: chain, Match: match, Comment: comment, Target: target}
	}
	filter := func(chain string, match []string, comment, target string) iptables.Jump {
		return iptables.Jump{Table: iptables.TableFilter, Chain: chain, Match: match, Comment: comment, Target: target}
	}
	newState := []string{"-m", "conntrack", "--ctstate", "NEW"}
	j := []iptables.Jump{
		filter("INPUT", nil, "Ensure that non-local NodePort traffic can flow", chainNodePortNonLocal),
		filter("INPUT", newState, "kubernetes load balancer firewall", chainProxyFirewall),
		filter("INPUT", newState, "kubernetes externally-visible service portals", chainExternalServices),
		filter("FORWARD", newState, "kubernetes load balancer firewall", chainProxyFirewall),
		filter("FORWARD", newState, "kubernetes service portals", chainServices),
		filter("FORWARD", newState, "kubernetes externally-visible service portals", chainExternalServices),
		filter("OUTPUT", newState, "kubernetes load balancer firewall", chainProxyFirewall),
		filter("OUTPUT", newState, "kubernetes service portals", chainServices),
		nat("PREROUTING", nil, portals, chainPortalsContainer),
	}
	dispatch := f.nodePortDispatch()
	for _, m := range dispatch {
		j = append(j, nat("PREROUTING", m, nodePorts, chainNodePortContainer))
	}
	j = append(j, nat("OUTPUT", nil, portals, chainPortalsHost))
	for _, m := range dispatch {
		j = append(j, nat("OUTPUT", m, nodePorts, chainNodePortHost))
	}
	return j
}

// nodePortDispatch returns the matches of the jumps to the NodePort
// chains: the destination is a local address (not ::1, where NodePorts
// do not work), or, when Config.NodePortAddresses has prefixes of the
// family and none is /0, one of the node addresses inside them, as in
// iptables mode.
func (f *usFamily) nodePortDispatch() [][]string {
	matchAll := true
	for _, p := range f.st.Config.NodePortAddresses {
		if ofFamily(p.Addr(), f.ipv6) {
			if p.Bits() == 0 {
				matchAll = true
				break
			}
			matchAll = false
		}
	}
	if matchAll {
		if f.ipv6 {
			return [][]string{{"-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "::1/128"}}
		}
		return [][]string{{"-m", "addrtype", "--dst-type", "LOCAL"}}
	}
	var out [][]string
	for _, ip := range f.st.NodePortIPs(f.ipv6) {
		if f.ipv6 && ip.IsLoopback() {
			continue
		}
		out = append(out, []string{"-d", netip.PrefixFrom(ip, ip.BitLen()).String()})
	}
	return out
}
