package proxy

import (
	"bytes"
	"net/netip"
	"slices"
)

// Target is one endpoint address and port that a service port may send a
// packet to.
type Target struct {
	// AddrPort is the endpoint's address and port.
	AddrPort netip.AddrPort
	// Local means the endpoint runs on this node.
	Local bool
}

// String returns the target as kube-proxy prints an endpoint, "ip:port" or
// "[ip6]:port".
func (t Target) String() string { return t.AddrPort.String() }

// PortEndpoints is the endpoint choice for one service port in one family,
// with kube-proxy's semantics.
type PortEndpoints struct {
	// Cluster are the endpoints for traffic under the Cluster policy: ready
	// endpoints (narrowed by topology hints when every ready endpoint has
	// them and one matches this node), or, when none is ready, the serving
	// and terminating ones. Nil when the service never uses the Cluster
	// policy.
	Cluster []Target
	// Local are the endpoints for traffic under the Local policy: the local
	// ready endpoints, or the local serving and terminating ones when none
	// is ready. Nil when the service never uses the Local policy.
	Local []Target
	// All is the union of Cluster and Local, sorted: every endpoint this
	// node may send to.
	All []Target
	// HasAny reports whether the service port has a usable endpoint
	// anywhere in the cluster; without one, traffic is rejected rather than
	// dropped.
	HasAny bool
}

// UsesCluster reports whether traffic to port of svc ever uses the
// Cluster policy. A port reachable from outside always does, even under
// the Local external policy: traffic from pods and from the node itself
// short-circuits to the Cluster endpoints.
func UsesCluster(svc *Service, port *ServicePort) bool {
	return !svc.InternalLocal() || externallyAccessible(svc, port)
}

// UsesLocal reports whether traffic to port of svc ever uses the Local
// policy.
func UsesLocal(svc *Service, port *ServicePort) bool {
	return svc.InternalLocal() || (externallyAccessible(svc, port) && svc.ExternalLocal())
}

func externallyAccessible(svc *Service, port *ServicePort) bool {
	return port.NodePort != 0 || len(svc.ExternalIPs) > 0 || len(svc.LoadBalancerIPs) > 0
}

type candidate struct {
	ep     *Endpoint
	target Target
	// key is the target as kube-proxy sorts it, its "ip:port" text.
	key  [48]byte
	klen uint8
}

func (c *candidate) sortKey() []byte { return c.key[:c.klen] }

// Selector chooses endpoints like SelectEndpoints, reusing its scratch
// space between calls; compilers keep one per goroutine. The zero value is
// ready to use. A Selector is not safe for concurrent use.
type Selector struct {
	cands               []candidate
	all, cluster, local []Target
}

// SelectEndpoints returns the endpoints of port of svc in one family
// (IPv6 if ipv6) as seen from the node of st. Endpoints that lack the
// port, or whose address is of the other family, are left out; an address
// listed twice counts once (local if either copy is). The returned slices
// may share storage; callers must not modify them.
func SelectEndpoints(st *State, svc *Service, port *ServicePort, ipv6 bool) PortEndpoints {
	var s Selector
	return s.Select(st, svc, port, ipv6)
}

// Select is SelectEndpoints using the selector's scratch space: the
// slices it returns are valid only until the next call on s.
func (s *Selector) Select(st *State, svc *Service, port *ServicePort, ipv6 bool) PortEndpoints {
	cands := s.candidates(st, svc, port, ipv6)
	var pe PortEndpoints
	if len(cands) == 0 {
		return pe
	}
	all := s.all[:0]
	for i := range cands {
		all = append(all, cands[i].target)
	}
	s.all = all
	node := st.Node.Name
	usesCluster, usesLocal := UsesCluster(svc, port), UsesLocal(svc, port)
	if usesCluster {
		mode := topologyMode(cands, node, st.Node.Zone)
		pe.Cluster = filter(cands, all, &s.cluster, func(c *candidate) bool {
			return c.ep.Ready && availableForTopology(c.ep, mode, node, st.Node.Zone)
		})
		if len(pe.Cluster) == 0 {
			pe.Cluster = filter(cands, all, &s.cluster, servingTerminating)
		}
		pe.HasAny = len(pe.Cluster) > 0
	}
	if usesLocal {
		var localReady, localST bool
		for i := range cands {
			c := &cands[i]
			switch {
			case c.ep.Ready:
				pe.HasAny = true
				localReady = localReady || c.target.Local
			case servingTerminating(c):
				pe.HasAny = true
				localST = localST || c.target.Local
			}
		}
		switch {
		case localReady:
			pe.Local = filter(cands, all, &s.local, func(c *candidate) bool { return c.target.Local && c.ep.Ready })
		case localST:
			pe.Local = filter(cands, all, &s.local, func(c *candidate) bool { return c.target.Local && servingTerminating(c) })
		default:
			pe.Local = []Target{}
		}
	}
	pe.All = union(pe.Cluster, pe.Local)
	return pe
}

func servingTerminating(c *candidate) bool { return c.ep.IsServing() && c.ep.Terminating }

// candidates returns the endpoints of one family having port, deduplicated
// and sorted as kube-proxy sorts them (by their "ip:port" string).
func (s *Selector) candidates(st *State, svc *Service, port *ServicePort, ipv6 bool) []candidate {
	out := s.cands[:0]
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		if !ep.Addr.IsValid() || ep.Addr.Is6() != ipv6 || (!ipv6 && !ep.Addr.Is4()) {
			continue
		}
		pn, ok := ep.PortNumber(port.Name)
		if !ok || pn <= 0 || pn > 65535 {
			continue
		}
		out = append(out, candidate{ep: ep, target: Target{
			AddrPort: netip.AddrPortFrom(ep.Addr, uint16(pn)),
			Local:    ep.IsLocal(st.Node.Name),
		}})
		c := &out[len(out)-1]
		c.klen = uint8(len(c.target.AddrPort.AppendTo(c.key[:0])))
	}
	s.cands = out
	if !slices.IsSortedFunc(out, compareCandidates) {
		slices.SortStableFunc(out, compareCandidates)
	}
	// Deduplicate, preferring a local copy.
	dedup := out[:0]
	for i := range out {
		c := out[i]
		if n := len(dedup); n > 0 && dedup[n-1].target.AddrPort == c.target.AddrPort {
			if c.target.Local && !dedup[n-1].target.Local {
				dedup[n-1] = c
			}
			continue
		}
		dedup = append(dedup, c)
	}
	return dedup
}

func compareCandidates(a, b candidate) int { return bytes.Compare(a.sortKey(), b.sortKey()) }

// compareTargetStrings orders endpoints by their "ip:port" text, as
// kube-proxy does, so that rule order matches its output.
func compareTargetStrings(a, b netip.AddrPort) int {
	var ba, bb [64]byte
	sa := a.AppendTo(ba[:0])
	sb := b.AppendTo(bb[:0])
	return slices.Compare(sa, sb)
}

// filter returns the targets of the candidates keep accepts; all holds the
// targets of every candidate and is returned itself when all are kept,
// otherwise the result is built in *buf.
func filter(cands []candidate, all []Target, buf *[]Target, keep func(*candidate) bool) []Target {
	n := 0
	for i := range cands {
		if keep(&cands[i]) {
			n++
		}
	}
	if n == len(cands) {
		return all
	}
	out := (*buf)[:0]
	for i := range cands {
		if keep(&cands[i]) {
			out = append(out, cands[i].target)
		}
	}
	*buf = out
	if out == nil {
		out = []Target{}
	}
	return out
}

func union(a, b []Target) []Target {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]Target, 0, len(a)+len(b))
	out = append(out, a...)
	for _, t := range b {
		if !slices.ContainsFunc(out, func(u Target) bool { return u.AddrPort == t.AddrPort }) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(x, y Target) int { return compareTargetStrings(x.AddrPort, y.AddrPort) })
	return out
}

const (
	topologyNone     = ""
	topologySameZone = "PreferSameZone"
	topologySameNode = "PreferSameNode"
)

// topologyMode decides whether hints narrow the cluster endpoints: node
// hints when every ready endpoint has one and one names this node, else
// zone hints when every ready endpoint has one and one names this zone.
func topologyMode(cands []candidate, node, zone string) string {
	ready, allNode, forNode, allZone, forZone := false, true, false, true, false
	for i := range cands {
		c := &cands[i]
		if !c.ep.Ready {
			continue
		}
		ready = true
		if len(c.ep.NodeHints) == 0 {
			allNode = false
		} else if node != "" && slices.Contains(c.ep.NodeHints, node) {
			forNode = true
		}
		if len(c.ep.ZoneHints) == 0 {
			allZone = false
		} else if zone != "" && slices.Contains(c.ep.ZoneHints, zone) {
			forZone = true
		}
	}
	switch {
	case !ready:
		return topologyNone
	case allNode && forNode:
		return topologySameNode
	case allZone && forZone:
		return topologySameZone
	}
	return topologyNone
}

func availableForTopology(ep *Endpoint, mode, node, zone string) bool {
	switch mode {
	case topologySameNode:
		return slices.Contains(ep.NodeHints, node)
	case topologySameZone:
		return slices.Contains(ep.ZoneHints, zone)
	}
	return true
}
