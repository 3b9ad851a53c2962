package proxy

import (
	"net/netip"
)

// Protocol is a transport protocol of a service port.
type Protocol string

// The protocols a service port may use.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// ServiceType is the Kubernetes service type.
type ServiceType string

// The service types svcplan programs. ExternalName services have no proxy
// rules and are not part of the model.
const (
	ServiceTypeClusterIP    ServiceType = "ClusterIP"
	ServiceTypeNodePort     ServiceType = "NodePort"
	ServiceTypeLoadBalancer ServiceType = "LoadBalancer"
)

// TrafficPolicy says which endpoints serve traffic: all of them, or only
// those on this node.
type TrafficPolicy string

// The traffic policies.
const (
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	TrafficPolicyLocal   TrafficPolicy = "Local"
)

// SessionAffinity says whether connections from one client stick to one
// endpoint.
type SessionAffinity string

// The session affinities.
const (
	SessionAffinityNone     SessionAffinity = "None"
	SessionAffinityClientIP SessionAffinity = "ClientIP"
)

// Defaults and limits that kube-proxy applies.
const (
	// DefaultMasqueradeBit is the bit of the packet mark that asks for
	// masquerade when Config.MasqueradeBit is nil (mark 0x4000).
	DefaultMasqueradeBit = 14
	// DefaultAffinityTimeoutSeconds is the ClientIP affinity timeout when
	// Service.AffinityTimeoutSeconds is zero (three hours).
	DefaultAffinityTimeoutSeconds = 10800
	// MaxAffinityTimeoutSeconds is the largest ClientIP affinity timeout
	// (one day).
	MaxAffinityTimeoutSeconds = 86400
	// DefaultNodePortMin and DefaultNodePortMax bound NodePorts when
	// Config.NodePortRange is zero.
	DefaultNodePortMin = 30000
	DefaultNodePortMax = 32767
)

// State is everything one node's proxy needs to know: the node, its proxy
// settings and the services with their endpoints. The zero State is valid
// and has no services.
type State struct {
	// Node is the node the rules are for.
	Node Node
	// Config holds the node's proxy settings.
	Config Config
	// Services are the services to program, in any order; the plan sorts
	// them. Each namespace/name appears once.
	Services []Service
}

// Node is the node the proxy runs on.
type Node struct {
	// Name is the node's name, matched against Endpoint.NodeName to find
	// local endpoints and against Endpoint.NodeHints. Empty means no
	// endpoint is local and node hints never match.
	Name string
	// IPs are the node's own addresses, IPv4 and IPv6; NodePorts are served
	// on them (see Config.NodePortAddresses). Nil means the node has no
	// known address, so no NodePort is reachable.
	IPs []netip.Addr
	// Zone is the node's topology zone, matched against Endpoint.ZoneHints.
	// Empty disables topology-aware routing.
	Zone string
}

// Config holds the proxy settings of a node, named after kube-proxy's.
type Config struct {
	// ClusterCIDRs are the pod networks, one per family at most; traffic to
	// a cluster IP from outside them is masqueraded. Nil means local
	// traffic is not detected: cluster IP traffic is masqueraded only when
	// MasqueradeAll is set.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic sent to a cluster IP. False
	// masquerades only traffic from outside ClusterCIDRs.
	MasqueradeAll bool
	// MasqueradeBit is the bit of the packet mark (0..31) used to ask for
	// masquerade. Nil means DefaultMasqueradeBit.
	MasqueradeBit *int
	// NodePortAddresses limits the node addresses NodePorts are served on
	// to those inside these prefixes. Nil means every node address.
	NodePortAddresses []netip.Prefix
	// NodePortRange is the range NodePorts must fall in. The zero value
	// means DefaultNodePortMin-DefaultNodePortMax.
	NodePortRange PortRange
}

// PortRange is an inclusive range of ports. The zero value means "unset".
type PortRange struct {
	Min, Max int
}

// Service is one Kubernetes service with its endpoints.
type Service struct {
	// Namespace and Name identify the service; both are DNS-1123 labels.
	Namespace, Name string
	// Type is the service type. Empty means ServiceTypeClusterIP.
	Type ServiceType
	// ClusterIPs are the service's cluster IPs, at most one per family.
	// Nil means a headless service: no rules are written for it.
	ClusterIPs []netip.Addr
	// Ports are the service's ports; with more than one, each has a
	// distinct non-empty name.
	Ports []ServicePort
	// ExternalIPs are addresses the service also answers on; nil means
	// none.
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are the load balancer ingress addresses (for type
	// LoadBalancer); nil means none.
	LoadBalancerIPs []netip.Addr
	// LoadBalancerSourceRanges limits which sources may reach the load
	// balancer IPs. Nil means any source. NodePorts are not limited.
	LoadBalancerSourceRanges []netip.Prefix
	// SessionAffinity is the affinity. Empty means SessionAffinityNone.
	SessionAffinity SessionAffinity
	// AffinityTimeoutSeconds is the ClientIP affinity timeout, 1..86400.
	// Zero means DefaultAffinityTimeoutSeconds.
	AffinityTimeoutSeconds int
	// ExternalTrafficPolicy applies to NodePorts, external IPs and load
	// balancer IPs. Empty means TrafficPolicyCluster.
	ExternalTrafficPolicy TrafficPolicy
	// InternalTrafficPolicy applies to cluster IPs. Empty means
	// TrafficPolicyCluster.
	InternalTrafficPolicy TrafficPolicy
	// HealthCheckNodePort is the node port answering load balancer health
	// checks under ExternalTrafficPolicy Local. Zero means none.
	HealthCheckNodePort int
	// Endpoints are the service's endpoints, from all its EndpointSlices.
	Endpoints []Endpoint
}

// ServicePort is one port of a service.
type ServicePort struct {
	// Name names the port; it may be empty only when the service has one
	// port. Endpoint ports are matched to it by name.
	Name string
	// Protocol is the transport protocol. Empty means ProtocolTCP.
	Protocol Protocol
	// Port is the port on the cluster IP, external IPs and load balancer
	// IPs, 1..65535.
	Port int
	// TargetPort is the container port by number. Zero means it is named
	// by TargetPortName, or equals Port when that is empty too. The
	// endpoint's own port (Endpoint.Ports) is what the rules use; this is
	// kept for display and for Kubernetes round trips.
	TargetPort int
	// TargetPortName is the container port by name; empty means none.
	TargetPortName string
	// NodePort is the port on every node address, for NodePort and
	// LoadBalancer services. Zero means none.
	NodePort int
}

// Endpoint is one backend address of a service.
type Endpoint struct {
	// Addr is the endpoint's address. Its family decides which cluster IP
	// it serves.
	Addr netip.Addr
	// Ports are the endpoint's ports, matched to ServicePort.Name.
	Ports []EndpointPort
	// Ready means the endpoint accepts new connections. False means not
	// ready.
	Ready bool
	// Serving means the endpoint answers even if it is terminating. False
	// means the same as Ready.
	Serving bool
	// Terminating means the endpoint is shutting down. Serving and
	// terminating endpoints are used only when no endpoint is ready.
	Terminating bool
	// NodeName is the node the endpoint runs on; empty means unknown (never
	// local).
	NodeName string
	// Zone is the endpoint's zone; empty means unknown.
	Zone string
	// ZoneHints are the zones the endpoint should serve (topology-aware
	// routing). Nil means no hint.
	ZoneHints []string
	// NodeHints are the nodes the endpoint should serve. Nil means no hint.
	NodeHints []string
}

// EndpointPort is one named port of an endpoint.
type EndpointPort struct {
	// Name matches a ServicePort.Name; empty matches the unnamed port.
	Name string
	// Port is the port number on the endpoint, 1..65535.
	Port int
}

// IsServing reports whether e can take traffic, ready or not.
func (e *Endpoint) IsServing() bool { return e.Serving || e.Ready }

// IsLocal reports whether e runs on the node named node.
func (e *Endpoint) IsLocal(node string) bool { return node != "" && e.NodeName == node }

// PortNumber returns the endpoint's port named name and whether it has one.
func (e *Endpoint) PortNumber(name string) (int, bool) {
	for _, p := range e.Ports {
		if p.Name == name {
			return p.Port, true
		}
	}
	return 0, false
}

// ServiceType returns s.Type, defaulted.
func (s *Service) ServiceType() ServiceType {
	if s.Type == "" {
		return ServiceTypeClusterIP
	}
	return s.Type
}

// AffinityTimeout returns the ClientIP affinity timeout in seconds, or 0 if
// the service has no affinity.
func (s *Service) AffinityTimeout() int {
	if s.SessionAffinity != SessionAffinityClientIP {
		return 0
	}
	if s.AffinityTimeoutSeconds == 0 {
		return DefaultAffinityTimeoutSeconds
	}
	return s.AffinityTimeoutSeconds
}

// ExternalLocal reports whether external traffic (NodePort, external IPs,
// load balancer IPs) goes only to local endpoints. kube-proxy applies it only
// to services that have external addresses (type NodePort or LoadBalancer, or
// any service with external IPs).
func (s *Service) ExternalLocal() bool {
	return s.ExternalTrafficPolicy == TrafficPolicyLocal && s.hasExternal()
}

// InternalLocal reports whether cluster IP traffic goes only to local
// endpoints.
func (s *Service) InternalLocal() bool { return s.InternalTrafficPolicy == TrafficPolicyLocal }

func (s *Service) hasExternal() bool {
	t := s.ServiceType()
	return t == ServiceTypeNodePort || t == ServiceTypeLoadBalancer || len(s.ExternalIPs) > 0
}

// ProtocolOrDefault returns p.Protocol, defaulted to TCP.
func (p *ServicePort) ProtocolOrDefault() Protocol {
	if p.Protocol == "" {
		return ProtocolTCP
	}
	return p.Protocol
}

// ServicePortName returns the kube-proxy name of a service port,
// "namespace/name:port", or "namespace/name" for an unnamed port, used in
// comments and chain-name hashes.
func ServicePortName(s *Service, p *ServicePort) string {
	if p.Name == "" {
		return s.Namespace + "/" + s.Name
	}
	return s.Namespace + "/" + s.Name + ":" + p.Name
}

// Mark returns the masquerade mark, 1 << bit.
func (c *Config) Mark() uint32 {
	return 1 << uint(c.MasqueradeBitOrDefault())
}

// MasqueradeBitOrDefault returns the masquerade bit, defaulted.
func (c *Config) MasqueradeBitOrDefault() int {
	if c.MasqueradeBit == nil {
		return DefaultMasqueradeBit
	}
	return *c.MasqueradeBit
}

// NodePortRangeOrDefault returns the NodePort range, defaulted.
func (c *Config) NodePortRangeOrDefault() PortRange {
	if c.NodePortRange == (PortRange{}) {
		return PortRange{Min: DefaultNodePortMin, Max: DefaultNodePortMax}
	}
	return c.NodePortRange
}

// ClusterCIDR returns the cluster CIDR of the family of a (IPv4 if a is
// IPv4) and whether there is one.
func (c *Config) ClusterCIDR(ipv6 bool) (netip.Prefix, bool) {
	for _, p := range c.ClusterCIDRs {
		if p.Addr().Is6() == ipv6 {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// NodePortIPs returns the node addresses of one family that serve
// NodePorts, sorted, honouring NodePortAddresses.
func (s *State) NodePortIPs(ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range s.Node.IPs {
		if a.Is6() != ipv6 || (!ipv6 && !a.Is4()) {
			continue
		}
		if len(s.Config.NodePortAddresses) > 0 && !containsAddr(s.Config.NodePortAddresses, a) {
			continue
		}
		out = append(out, a)
	}
	sortAddrs(out)
	return out
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PrimaryNodeIP returns the node's first address of one family, in the
// order of Node.IPs, and whether it has one. kube-proxy calls it the node
// IP; load balancer source ranges that contain it let the node reach the
// load balancer IPs.
func (s *State) PrimaryNodeIP(ipv6 bool) (netip.Addr, bool) {
	for _, a := range s.Node.IPs {
		if a.Is6() == ipv6 && (ipv6 || a.Is4()) {
			return a, true
		}
	}
	return netip.Addr{}, false
}
