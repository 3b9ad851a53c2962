package translate

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// servicePort adds one service port: KUBE-LOOP-BACK members for its local
// endpoints, its cluster IP, external IPs, load balancer IPs and NodePorts
// with their set members and virtual servers, and its health check port.
func (f *ipvsFamily) servicePort(svc *proxy.Service, port *proxy.ServicePort, cip netip.Addr) {
	pe := f.sel.Select(f.st, svc, port, f.ipv6)
	proto := ipset.Protocol(strings.ToLower(string(port.ProtocolOrDefault())))
	vproto := ipvs.Protocol(proto)
	p := uint16(port.Port)
	for _, t := range pe.All {
		if t.Local {
			a := t.AddrPort.Addr()
			f.add(setLoopBack, ipset.Entry{IP: a, Protocol: proto, Port: t.AddrPort.Port(), IP2: a})
		}
	}
	internal := f.realServers(svc, port, &pe, svc.InternalLocal())
	external := internal
	if svc.ExternalLocal() != svc.InternalLocal() {
		external = f.realServers(svc, port, &pe, svc.ExternalLocal())
	}
	f.add(setClusterIP, ipset.Entry{IP: cip, Protocol: proto, Port: p})
	f.server(svc, vproto, netip.AddrPortFrom(cip, p), internal, true)
	for _, ip := range svc.ExternalIPs {
		if ip.Is6() != f.ipv6 {
			continue
		}
		e := ipset.Entry{IP: ip, Protocol: proto, Port: p}
		if svc.ExternalLocal() {
			f.add(setExternalIPLocal, e)
		} else {
			f.add(setExternalIP, e)
		}
		f.server(svc, vproto, netip.AddrPortFrom(ip, p), external, !slices.Contains(f.st.Node.IPs, ip))
	}
	for _, ip := range svc.LoadBalancerIPs {
		if ip.Is6() != f.ipv6 {
			continue
		}
		f.loadBalancer(svc, ip, proto, p)
		f.server(svc, vproto, netip.AddrPortFrom(ip, p), external, !slices.Contains(f.st.Node.IPs, ip))
	}
	if port.NodePort != 0 && len(f.nodeIPs) > 0 {
		f.nodePort(svc, proto, uint16(port.NodePort))
		for _, ip := range f.nodeIPs {
			f.server(svc, vproto, netip.AddrPortFrom(ip, uint16(port.NodePort)), external, false)
		}
	}
	if svc.HealthCheckNodePort != 0 {
		f.add(setHealthCheckNodePort, ipset.Entry{Port: uint16(svc.HealthCheckNodePort)})
	}
}

func (f *ipvsFamily) add(set int, e ipset.Entry) { f.entries[set] = append(f.entries[set], e) }

// loadBalancer adds the set members of one load balancer IP and port.
func (f *ipvsFamily) loadBalancer(svc *proxy.Service, ip netip.Addr, proto ipset.Protocol, p uint16) {
	e := ipset.Entry{IP: ip, Protocol: proto, Port: p}
	f.add(setLoadBalancer, e)
	if svc.ExternalLocal() {
		f.add(setLoadBalancerLocal, e)
	}
	var ranges []netip.Prefix
	for _, r := range svc.LoadBalancerSourceRanges {
		if r.Addr().Is6() == f.ipv6 {
			ranges = append(ranges, r)
		}
	}
	if len(ranges) == 0 {
		return
	}
	f.add(setLoadBalancerFW, e)
	nodeIP, hasNodeIP := f.st.PrimaryNodeIP(f.ipv6)
	allowFromNode := false
	for _, r := range ranges {
		f.add(setLoadBalancerSourceCIDR, ipset.Entry{IP: ip, Protocol: proto, Port: p, Net: r.Masked()})
		allowFromNode = allowFromNode || (hasNodeIP && r.Contains(nodeIP))
	}
	if allowFromNode {
		f.add(setLoadBalancerSourceIP, ipset.Entry{IP: ip, Protocol: proto, Port: p, IP2: ip})
	} else {
		f.noNodeAccess = append(f.noNodeAccess, e)
	}
}

// nodePort adds the set members of one NodePort: a port in the bitmap set
// of its protocol, or for SCTP an address and port per node address.
func (f *ipvsFamily) nodePort(svc *proxy.Service, proto ipset.Protocol, np uint16) {
	all, local := setNodePortTCP, setNodePortLocalTCP
	switch proto {
	case ipset.UDP:
		all, local = setNodePortUDP, setNodePortLocalUDP
	case ipset.SCTP:
		all, local = setNodePortSCTP, setNodePortLocalSCTP
	}
	var es []ipset.Entry
	if proto == ipset.SCTP {
		for _, ip := range f.nodeIPs {
			es = append(es, ipset.Entry{IP: ip, Protocol: proto, Port: np})
		}
	} else {
		es = []ipset.Entry{{Port: np}}
	}
	for _, e := range es {
		f.add(all, e)
		if svc.ExternalLocal() {
			f.add(local, e)
		}
	}
}

// realServers returns the real servers of a virtual server, as
// kube-proxy's syncEndpoint chooses them: with onlyLocal, the local
// endpoints, or when there are none the cluster ones (so that pods on the
// node still reach the service); otherwise the cluster endpoints. They
// have weight 1; serving endpoints that are terminating and not chosen
// follow with weight 0, so that IPVS keeps their open connections but
// sends them no new ones (kube-proxy's graceful termination).
func (f *ipvsFamily) realServers(svc *proxy.Service, port *proxy.ServicePort, pe *proxy.PortEndpoints, onlyLocal bool) []ipvs.RealServer {
	targets := pe.Cluster
	if onlyLocal && len(pe.Local) > 0 {
		targets = pe.Local
	}
	onlyLocal = onlyLocal && len(pe.Local) > 0
	rs := make([]ipvs.RealServer, 0, len(targets))
	for _, t := range targets {
		rs = append(rs, ipvs.RealServer{Addr: t.AddrPort, Weight: 1})
	}
	if hasTerminating(svc) {
		rs = f.appendDraining(rs, svc, port, onlyLocal)
	}
	if !slices.IsSortedFunc(rs, compareRealServers) {
		slices.SortFunc(rs, compareRealServers)
	}
	return rs
}

// appendDraining appends, with weight 0, the serving terminating
// endpoints (local ones only, with onlyLocal) that rs lacks.
func (f *ipvsFamily) appendDraining(rs []ipvs.RealServer, svc *proxy.Service, port *proxy.ServicePort, onlyLocal bool) []ipvs.RealServer {
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		if !ep.Terminating || !ep.IsServing() || ep.Addr.Is6() != f.ipv6 || (onlyLocal && !ep.IsLocal(f.st.Node.Name)) {
			continue
		}
		pn, ok := ep.PortNumber(port.Name)
		if !ok {
			continue
		}
		ap := netip.AddrPortFrom(ep.Addr, uint16(pn))
		if !slices.ContainsFunc(rs, func(r ipvs.RealServer) bool { return r.Addr == ap }) {
			rs = append(rs, ipvs.RealServer{Addr: ap, Weight: 0})
		}
	}
	return rs
}

func compareRealServers(a, b ipvs.RealServer) int { return a.Addr.Compare(b.Addr) }

func hasTerminating(svc *proxy.Service) bool {
	for i := range svc.Endpoints {
		if svc.Endpoints[i].Terminating {
			return true
		}
	}
	return false
}

// server adds a virtual server at addr (bound to the dummy interface when
// bind) with the given real servers.
func (f *ipvsFamily) server(svc *proxy.Service, proto ipvs.Protocol, addr netip.AddrPort, rs []ipvs.RealServer, bind bool) {
	v := ipvs.VirtualServer{Protocol: proto, Addr: addr, Scheduler: f.scheduler, RealServers: rs}
	if v.Scheduler == "" {
		v.Scheduler = ipvs.RoundRobin
	}
	if t := svc.AffinityTimeout(); t > 0 {
		v.Timeout = time.Duration(t) * time.Second
	}
	f.servers = append(f.servers, v)
	if bind {
		f.bound = append(f.bound, addr.Addr())
	}
}

// appendSets appends the family's seventeen sets to p, members sorted;
// KUBE-IPVS-IPS holds the addresses bound to the dummy interface.
func (f *ipvsFamily) appendSets(p *ipset.Plan) {
	family := ipset.IPv4
	if f.ipv6 {
		family = ipset.IPv6
	}
	f.entries[setIPVSIPs] = make([]ipset.Entry, 0, len(f.bound))
	for _, a := range f.bound {
		f.entries[setIPVSIPs] = append(f.entries[setIPVSIPs], ipset.Entry{IP: a})
	}
	for i, info := range ipvsSets {
		s := ipset.Set{Name: IPVSSetName(info.name, f.ipv6), Type: info.typ, Comment: info.comment,
			Entries: ipset.SortEntries(f.entries[i])}
		if info.typ == ipset.TypeBitmapPort {
			s.PortRange = ipset.PortRange{First: 0, Last: 65535}
		} else {
			s.Family = family
		}
		f.entries[i] = s.Entries
		p.Sets = append(p.Sets, s)
	}
}

// empty reports whether the family's set i has no members.
func (f *ipvsFamily) empty(i int) bool { return len(f.entries[i]) == 0 }
