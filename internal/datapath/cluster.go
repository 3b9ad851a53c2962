package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/proxy"
)

// The addresses of the synthetic cluster, as IPv4 numbers.
const (
	// serviceBase is the cluster IP of service 0 (10.96.0.1); service i
	// has the i-th address after it.
	serviceBase = 10<<24 | 96<<16 | 1
	// fakeBase is the first address of the endpoints that nobody holds
	// (10.128.0.1).
	fakeBase = 10<<24 | 128<<16 | 1
)

// MaxServices is the most services a [Cluster] may have: their cluster IPs
// are taken from 10.96.0.0/16.
const MaxServices = 1<<16 - 2

// maxFakeEndpoints bounds the unreal endpoints, taken from 10.128.0.0/10.
const maxFakeEndpoints = 1<<22 - 2

// ServicePort is the port every service of a [Cluster] listens on.
const ServicePort = 80

// Namespace is the namespace of every service of a [Cluster].
const Namespace = "bench"

// Cluster describes the synthetic cluster of a datapath benchmark:
// Services ClusterIP services of one TCP port, each with Endpoints
// endpoints, the last of which (in name order, which is the order the
// plans list services in) is the measured one.
type Cluster struct {
	// Services is the number of services, 1..MaxServices.
	Services int
	// Endpoints is the number of endpoints of every service but the
	// measured one; zero means one. Their addresses (in 10.128.0.0/10) are
	// held by nobody, so only the rules see them.
	Endpoints int
	// Node is the node the rules are for; its IPs should hold the node's
	// address.
	Node proxy.Node
	// ClusterCIDR is the pod network; the zero Prefix means none.
	ClusterCIDR netip.Prefix
	// Backend is the only endpoint of the measured service: the address
	// and port of a real server, in a pod on Node.
	Backend netip.AddrPort
}

// ServiceName returns the name of service i, such as "svc-00042". Names
// sort in index order, so the last service is listed last.
func ServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// ServiceIP returns the cluster IP of service i (10.96.0.1 onwards).
func ServiceIP(i int) netip.Addr { return nth(serviceBase, i) }

// Target returns the cluster IP and port of the measured service, the last
// one.
func (c Cluster) Target() netip.AddrPort {
	return netip.AddrPortFrom(ServiceIP(c.Services-1), ServicePort)
}

// State returns the cluster as a proxy.State, or an error naming what is
// out of range.
func (c Cluster) State() (*proxy.State, error) {
	eps := max(c.Endpoints, 1)
	var errs []error
	if c.Services < 1 || c.Services > MaxServices {
		errs = append(errs, fmt.Errorf("services: %d out of range 1..%d", c.Services, MaxServices))
	}
	if c.Endpoints < 0 || (c.Services-1)*eps > maxFakeEndpoints {
		errs = append(errs, fmt.Errorf("endpoints: %d per service out of range", c.Endpoints))
	}
	if !c.Backend.IsValid() || !c.Backend.Addr().Is4() || c.Backend.Port() == 0 {
		errs = append(errs, fmt.Errorf("backend: %s is not an IPv4 address and port", c.Backend))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("datapath cluster: %w", err)
	}
	st := &proxy.State{Node: c.Node, Services: make([]proxy.Service, c.Services)}
	if c.ClusterCIDR.IsValid() {
		st.Config.ClusterCIDRs = []netip.Prefix{c.ClusterCIDR}
	}
	port := []proxy.EndpointPort{{Name: "http", Port: int(c.Backend.Port())}}
	fake := 0
	for i := range st.Services {
		svc := &st.Services[i]
		svc.Namespace, svc.Name = Namespace, ServiceName(i)
		svc.ClusterIPs = []netip.Addr{ServiceIP(i)}
		svc.Ports = []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: ServicePort, TargetPort: int(c.Backend.Port())}}
		if i == c.Services-1 {
			svc.Endpoints = []proxy.Endpoint{{Addr: c.Backend.Addr(), Ports: port, Ready: true, Serving: true, NodeName: c.Node.Name}}
			continue
		}
		svc.Endpoints = make([]proxy.Endpoint, eps)
		for j := range svc.Endpoints {
			svc.Endpoints[j] = proxy.Endpoint{Addr: nth(fakeBase, fake), Ports: port, Ready: true, Serving: true, NodeName: "elsewhere"}
			fake++
		}
	}
	return st, nil
}

// nth returns the IPv4 address n places after base.
func nth(base uint32, n int) netip.Addr {
	v := base + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
