package translate

import (
	"net/netip"

	"github.com/svcplan/svcplan/proxy"
)

// The states of the golden tests, one feature each. Addresses follow
// kube-proxy's proxier_test.go where it has the same case, so the chain
// names can be compared with its expected output.

func affinityState() *proxy.State {
	a := clusterIP("ns5", "svc5", "172.30.0.45", ep("10.180.0.3", "p80", 80))
	a.SessionAffinity = proxy.SessionAffinityClientIP
	b := clusterIP("ns6", "svc6", "172.30.0.46", ep("10.180.0.5", "p80", 80), ep("10.180.0.4", "p80", 80))
	b.SessionAffinity = proxy.SessionAffinityClientIP
	b.AffinityTimeoutSeconds = 300
	return baseState(a, b)
}

func externalIPState() *proxy.State {
	s := withType(clusterIP("ns4", "svc4", "172.30.0.44",
		ep("10.180.0.4", "p80", 80), ep("10.180.0.5", "p80", 80, local)), proxy.ServiceTypeNodePort, 0)
	s.ExternalIPs = addrs("192.168.99.33")
	c := clusterIP("ns7", "svc7", "172.30.0.47", ep("10.180.0.7", "p80", 80))
	c.ExternalIPs = addrs("192.168.99.44", "192.168.99.45")
	return baseState(s, c)
}

func loadBalancerState() *proxy.State {
	s := withType(clusterIP("ns5", "svc5", "172.30.0.45", ep("10.180.0.3", "p80", 80)), proxy.ServiceTypeLoadBalancer, 30002)
	s.LoadBalancerIPs = addrs("5.6.7.8")
	s.LoadBalancerSourceRanges = prefixes("203.0.113.0/25")
	s.SessionAffinity = proxy.SessionAffinityClientIP
	// The node's own address is in the source ranges: the node may reach
	// the load balancer IP, which loops back with itself as the source.
	n := withType(clusterIP("ns8", "svc8", "172.30.0.48", ep("10.180.0.8", "p80", 80)), proxy.ServiceTypeLoadBalancer, 30008)
	n.LoadBalancerIPs = addrs("5.6.7.9", "5.6.7.10")
	n.LoadBalancerSourceRanges = prefixes("192.168.0.0/24", "198.51.100.0/24")
	// No source ranges: straight to KUBE-EXT-.
	o := withType(clusterIP("ns9", "svc9", "172.30.0.49", ep("10.180.0.9", "p80", 80)), proxy.ServiceTypeLoadBalancer, 30009)
	o.LoadBalancerIPs = addrs("5.6.7.11")
	return baseState(s, n, o)
}

func localPolicyState() *proxy.State {
	// External Local with a local and a remote endpoint.
	e := withType(clusterIP("ns2", "svc2", "172.30.0.42",
		ep("10.180.0.2", "p80", 80, remote), ep("10.180.0.12", "p80", 80, local)), proxy.ServiceTypeLoadBalancer, 30001)
	e.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	e.LoadBalancerIPs = addrs("1.2.3.4")
	e.ExternalIPs = addrs("192.168.99.22")
	// Internal Local with a local endpoint.
	i := clusterIP("ns3", "svc3", "172.30.0.43",
		ep("10.180.0.3", "p80", 80, remote), ep("10.180.0.13", "p80", 80, local))
	i.InternalTrafficPolicy = proxy.TrafficPolicyLocal
	// Internal Local without local endpoints: cluster IP traffic dropped.
	d := clusterIP("ns4", "svc4", "172.30.0.44", ep("10.180.0.4", "p80", 80, remote))
	d.InternalTrafficPolicy = proxy.TrafficPolicyLocal
	// Both policies Local on a NodePort: cluster endpoints still serve the
	// short circuit of pod and node traffic.
	b := withType(clusterIP("ns5", "svc5", "172.30.0.45",
		ep("10.180.0.5", "p80", 80, remote), ep("10.180.0.15", "p80", 80, local)), proxy.ServiceTypeNodePort, 30005)
	b.InternalTrafficPolicy = proxy.TrafficPolicyLocal
	b.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	return baseState(e, i, d, b)
}

func noEndpointsState() *proxy.State {
	// No endpoints at all: REJECT everywhere.
	r := withType(clusterIP("ns1", "svc1", "172.30.0.41"), proxy.ServiceTypeLoadBalancer, 30001)
	r.ExternalIPs = addrs("192.168.99.11")
	r.LoadBalancerIPs = addrs("1.2.3.4")
	// Endpoints, but none ready or serving.
	n := clusterIP("ns2", "svc2", "172.30.0.42", ep("10.180.0.2", "p80", 80, notReady))
	// External Local without local endpoints: external traffic dropped,
	// pod and node traffic still served.
	l := withType(clusterIP("ns3", "svc3", "172.30.0.43", ep("10.180.0.3", "p80", 80, remote)), proxy.ServiceTypeLoadBalancer, 30003)
	l.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	l.ExternalIPs = addrs("192.168.99.33")
	l.LoadBalancerIPs = addrs("1.2.3.5")
	return baseState(r, n, l)
}

func terminatingState() *proxy.State {
	// Only serving-terminating endpoints: they are used.
	a := clusterIP("ns1", "svc1", "172.30.0.41",
		ep("10.180.0.1", "p80", 80, terminating), ep("10.180.0.2", "p80", 80, terminating), ep("10.180.0.3", "p80", 80, notReady))
	// A ready endpoint wins over terminating ones.
	b := clusterIP("ns2", "svc2", "172.30.0.42",
		ep("10.180.0.4", "p80", 80, terminating), ep("10.180.0.5", "p80", 80))
	// External Local: local terminating endpoints are used when no local
	// endpoint is ready.
	c := withType(clusterIP("ns3", "svc3", "172.30.0.43",
		ep("10.180.0.6", "p80", 80, remote), ep("10.180.0.7", "p80", 80, local, terminating)), proxy.ServiceTypeNodePort, 30003)
	c.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	return baseState(a, b, c)
}

func topologyState() *proxy.State {
	st := baseState(
		clusterIP("ns1", "svc1", "172.30.0.41",
			ep("10.180.0.1", "p80", 80, zoneHints("zone-a")),
			ep("10.180.0.2", "p80", 80, zoneHints("zone-b")),
			ep("10.180.0.3", "p80", 80, zoneHints("zone-a", "zone-b"))),
		// Not every endpoint has a hint: hints are ignored.
		clusterIP("ns2", "svc2", "172.30.0.42",
			ep("10.180.0.4", "p80", 80, zoneHints("zone-a")),
			ep("10.180.0.5", "p80", 80)),
	)
	st.Node.Zone = "zone-a"
	return st
}

func masqueradeAllState() *proxy.State {
	st := baseState(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)))
	st.Config.MasqueradeAll = true
	bit := 10
	st.Config.MasqueradeBit = &bit
	return st
}

func noClusterCIDRState() *proxy.State {
	e := withType(clusterIP("ns2", "svc2", "172.30.0.42", ep("10.180.0.2", "p80", 80, local)), proxy.ServiceTypeNodePort, 30001)
	e.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	st := baseState(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)), e)
	st.Config.ClusterCIDRs = nil
	return st
}

func nodePortAddressesState() *proxy.State {
	st := baseState(withType(clusterIP("ns3", "svc3", "172.30.0.43", ep("10.180.0.3", "p80", 80)), proxy.ServiceTypeNodePort, 30003))
	st.Node.IPs = addrs("192.168.0.2", "10.1.1.1", "192.168.0.3", "127.0.0.1", "fd00::2")
	st.Config.NodePortAddresses = prefixes("192.168.0.0/24", "127.0.0.0/8")
	return st
}

func dualStackState() *proxy.State {
	d := withType(clusterIP("ns1", "svc1", "172.30.0.41",
		ep("10.180.0.1", "p80", 80), ep("fd00:10:180::1", "p80", 80, local), ep("fd00:10:180::2", "p80", 80)),
		proxy.ServiceTypeLoadBalancer, 30001)
	d.ClusterIPs = addrs("172.30.0.41", "fd00:172:30::41")
	d.ExternalIPs = addrs("192.168.99.11", "2001:db8::11")
	d.LoadBalancerIPs = addrs("1.2.3.4", "2001:db8::1:4")
	d.LoadBalancerSourceRanges = prefixes("203.0.113.0/25", "2001:db8:1::/48")
	d.SessionAffinity = proxy.SessionAffinityClientIP
	six := clusterIP("ns2", "svc2", "fd00:172:30::42", ep("fd00:10:180::3", "p80", 80))
	four := clusterIP("ns3", "svc3", "172.30.0.43", ep("10.180.0.3", "p80", 80))
	st := baseState(d, six, four)
	st.Node.IPs = addrs("192.168.0.2", "fd00::2")
	st.Config.ClusterCIDRs = prefixes("10.0.0.0/8", "fd00:10::/32")
	return st
}

func healthCheckState() *proxy.State {
	s := withType(clusterIP("ns2", "svc2", "172.30.0.42", ep("10.180.0.2", "p80", 80, local)), proxy.ServiceTypeLoadBalancer, 30001)
	s.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	s.LoadBalancerIPs = addrs("1.2.3.4")
	s.HealthCheckNodePort = 30000
	return baseState(s)
}

func unnamedPortState() *proxy.State {
	s := clusterIP("ns1", "svc1", "172.30.1.1", ep("10.0.1.1", "", 80), ep("10.0.1.2", "", 80))
	s.Ports[0].Name = ""
	s.Ports[0].TargetPort = 80
	return baseState(s)
}

func protocolsState() *proxy.State {
	s := proxy.Service{
		Namespace:  "kube-system",
		Name:       "dns",
		Type:       proxy.ServiceTypeNodePort,
		ClusterIPs: addrs("172.30.0.10"),
		Ports: []proxy.ServicePort{
			{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53, NodePort: 30053},
			{Name: "dns-tcp", Protocol: proxy.ProtocolTCP, Port: 53},
			{Name: "sig", Protocol: proxy.ProtocolSCTP, Port: 9999},
		},
		Endpoints: []proxy.Endpoint{{
			Addr:  netip.MustParseAddr("10.180.0.10"),
			Ports: []proxy.EndpointPort{{Name: "dns", Port: 53}, {Name: "dns-tcp", Port: 53}, {Name: "sig", Port: 9999}},
			Ready: true,
		}},
	}
	return baseState(s)
}
