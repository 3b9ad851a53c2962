package translate

import (
	"net/netip"
	"slices"

	"github.com/svcplan/svcplan/proxy"
)

// This file holds what the Compiler keeps of the last State it compiled:
// copies of its services, compared field by field with the next State's,
// and the values that must stay unique across services.

// serviceEqual reports whether a and b compile to the same rules: every
// field equal, nil and empty lists alike.
func serviceEqual(a, b *proxy.Service) bool {
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Type != b.Type ||
		a.SessionAffinity != b.SessionAffinity || a.AffinityTimeoutSeconds != b.AffinityTimeoutSeconds ||
		a.ExternalTrafficPolicy != b.ExternalTrafficPolicy || a.InternalTrafficPolicy != b.InternalTrafficPolicy ||
		a.HealthCheckNodePort != b.HealthCheckNodePort {
		return false
	}
	if !slices.Equal(a.ClusterIPs, b.ClusterIPs) || !slices.Equal(a.Ports, b.Ports) ||
		!slices.Equal(a.ExternalIPs, b.ExternalIPs) || !slices.Equal(a.LoadBalancerIPs, b.LoadBalancerIPs) ||
		!slices.Equal(a.LoadBalancerSourceRanges, b.LoadBalancerSourceRanges) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for i := range a.Endpoints {
		if !endpointEqual(&a.Endpoints[i], &b.Endpoints[i]) {
			return false
		}
	}
	return true
}

// endpointEqual reports whether a and b are the same endpoint.
func endpointEqual(a, b *proxy.Endpoint) bool {
	return a.Addr == b.Addr && a.Ready == b.Ready && a.Serving == b.Serving && a.Terminating == b.Terminating &&
		a.NodeName == b.NodeName && a.Zone == b.Zone && slices.Equal(a.Ports, b.Ports) &&
		slices.Equal(a.ZoneHints, b.ZoneHints) && slices.Equal(a.NodeHints, b.NodeHints)
}

// nodeEqual reports whether a and b are the same node.
func nodeEqual(a, b *proxy.Node) bool {
	return a.Name == b.Name && a.Zone == b.Zone && slices.Equal(a.IPs, b.IPs)
}

// configEqual reports whether a and b are the same settings.
func configEqual(a, b *proxy.Config) bool {
	if (a.MasqueradeBit == nil) != (b.MasqueradeBit == nil) || a.MasqueradeBit != nil && *a.MasqueradeBit != *b.MasqueradeBit {
		return false
	}
	return a.MasqueradeAll == b.MasqueradeAll && a.NodePortRange == b.NodePortRange &&
		slices.Equal(a.ClusterCIDRs, b.ClusterCIDRs) && slices.Equal(a.NodePortAddresses, b.NodePortAddresses)
}

// cloneNode returns a copy of n sharing nothing mutable with it.
func cloneNode(n *proxy.Node) proxy.Node {
	c := *n
	c.IPs = slices.Clone(n.IPs)
	return c
}

// cloneConfig returns a copy of c sharing nothing mutable with it.
func cloneConfig(c *proxy.Config) proxy.Config {
	d := *c
	d.ClusterCIDRs = slices.Clone(c.ClusterCIDRs)
	d.NodePortAddresses = slices.Clone(c.NodePortAddresses)
	if c.MasqueradeBit != nil {
		b := *c.MasqueradeBit
		d.MasqueradeBit = &b
	}
	return d
}

// cloner copies services into a few large arrays rather than one
// allocation per list. The copies are only read, so a carved slice stays
// valid even when an array grows elsewhere.
type cloner struct {
	addrs    []netip.Addr
	prefixes []netip.Prefix
	ports    []proxy.ServicePort
	eps      []proxy.Endpoint
	epPorts  []proxy.EndpointPort
	strs     []string
}

// newCloner returns a cloner sized for svcs.
func newCloner(svcs []proxy.Service) *cloner {
	var na, np, nsp, ne, nep, ns int
	for i := range svcs {
		s := &svcs[i]
		na += len(s.ClusterIPs) + len(s.ExternalIPs) + len(s.LoadBalancerIPs)
		np += len(s.LoadBalancerSourceRanges)
		nsp += len(s.Ports)
		ne += len(s.Endpoints)
		for j := range s.Endpoints {
			e := &s.Endpoints[j]
			nep += len(e.Ports)
			ns += len(e.ZoneHints) + len(e.NodeHints)
		}
	}
	return &cloner{
		addrs: make([]netip.Addr, 0, na), prefixes: make([]netip.Prefix, 0, np),
		ports: make([]proxy.ServicePort, 0, nsp), eps: make([]proxy.Endpoint, 0, ne),
		epPorts: make([]proxy.EndpointPort, 0, nep), strs: make([]string, 0, ns),
	}
}

// carve appends src to *arena and returns the copy, nil when src is
// empty.
func carve[T any](arena *[]T, src []T) []T {
	if len(src) == 0 {
		return nil
	}
	n := len(*arena)
	*arena = append(*arena, src...)
	return (*arena)[n:len(*arena):len(*arena)]
}

// service returns a copy of s sharing nothing mutable with it.
func (c *cloner) service(s *proxy.Service) proxy.Service {
	d := *s
	d.ClusterIPs = carve(&c.addrs, s.ClusterIPs)
	d.ExternalIPs = carve(&c.addrs, s.ExternalIPs)
	d.LoadBalancerIPs = carve(&c.addrs, s.LoadBalancerIPs)
	d.LoadBalancerSourceRanges = carve(&c.prefixes, s.LoadBalancerSourceRanges)
	d.Ports = carve(&c.ports, s.Ports)
	d.Endpoints = carve(&c.eps, s.Endpoints)
	for i := range d.Endpoints {
		e := &d.Endpoints[i]
		e.Ports = carve(&c.epPorts, e.Ports)
		e.ZoneHints = carve(&c.strs, e.ZoneHints)
		e.NodeHints = carve(&c.strs, e.NodeHints)
	}
	return d
}

// svcKey identifies a service.
type svcKey struct{ namespace, name string }

func keyOf(s *proxy.Service) svcKey { return svcKey{s.Namespace, s.Name} }

// nodePortClaim is a node port taken for one protocol.
type nodePortClaim struct {
	proto proxy.Protocol
	port  int
}

// claimSet records which service holds each value that must be unique
// across services in a valid State: cluster IPs, and node ports
// (including health check node ports, which are TCP).
type claimSet struct {
	clusterIPs map[netip.Addr]svcKey
	nodePorts  map[nodePortClaim]svcKey
}

// newClaimSet returns the claims of the services of a valid State.
func newClaimSet(svcs []proxy.Service) claimSet {
	cs := claimSet{
		clusterIPs: make(map[netip.Addr]svcKey, len(svcs)),
		nodePorts:  make(map[nodePortClaim]svcKey),
	}
	for i := range svcs {
		cs.add(&svcs[i])
	}
	return cs
}

// each calls fn with every node port s claims.
func eachNodePort(s *proxy.Service, fn func(nodePortClaim)) {
	for j := range s.Ports {
		if p := &s.Ports[j]; p.NodePort != 0 {
			fn(nodePortClaim{p.ProtocolOrDefault(), p.NodePort})
		}
	}
	if s.HealthCheckNodePort != 0 {
		fn(nodePortClaim{proxy.ProtocolTCP, s.HealthCheckNodePort})
	}
}

// drop removes the claims of s.
func (cs *claimSet) drop(s *proxy.Service) {
	k := keyOf(s)
	for _, a := range s.ClusterIPs {
		if cs.clusterIPs[a] == k {
			delete(cs.clusterIPs, a)
		}
	}
	eachNodePort(s, func(c nodePortClaim) {
		if cs.nodePorts[c] == k {
			delete(cs.nodePorts, c)
		}
	})
}

// add records the claims of s and reports whether none was taken
// already.
func (cs *claimSet) add(s *proxy.Service) bool {
	k, ok := keyOf(s), true
	for _, a := range s.ClusterIPs {
		if _, taken := cs.clusterIPs[a]; taken {
			ok = false
		}
		cs.clusterIPs[a] = k
	}
	eachNodePort(s, func(c nodePortClaim) {
		if _, taken := cs.nodePorts[c]; taken {
			ok = false
		}
		cs.nodePorts[c] = k
	})
	return ok
}
