package scenario_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/proxy"
)

// ipvsVariants returns the scenarios IPVS mode runs in place of those it
// skips (ipvsMode.Skips) and its own: NodePorts but for localhost, the
// Local policy and load balancer source ranges as kube-proxy's IPVS mode
// does them, and the graceful-termination drain.
func ipvsVariants(m *ipvsMode) []scenario.Scenario {
	return []scenario.Scenario{
		{Name: "IPVSNodePortNotLocalhost", Setup: setupNFTNodePort, Check: checkNFTNodePort},
		{Name: "IPVSExternalTrafficPolicyLocal", Setup: setupIPVSLocalPolicy, Check: checkIPVSLocalPolicy},
		{Name: "IPVSLoadBalancerSourceRanges", Setup: setupIPVSLoadBalancer, Check: checkIPVSLoadBalancer},
		{Name: "IPVSGracefulTermination", Setup: setupIPVSDrain, Check: func(t *testing.T, e *scenario.Env) { checkIPVSDrain(t, e, m) }},
	}
}

// NodePorts and cluster IPs of IPVSExternalTrafficPolicyLocal.
const (
	ipvsLocalNodePort      = 30070
	ipvsRemoteOnlyNodePort = 30071
)

var (
	ipvsLocalVIP      = netip.MustParseAddr("10.96.0.70")
	ipvsRemoteOnlyVIP = netip.MustParseAddr("10.96.0.71")
)

func setupIPVSLocalPolicy(t *testing.T, e *scenario.Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", nftBackendPort)
	r := e.AddBackend(t, "r", netnstest.Remote, "tcp", nftBackendPort)
	e.AddPod(t, "client", netnstest.Local)
	svc := func(name string, vip netip.Addr, np int, pods ...netnstest.Pod) proxy.Service {
		return proxy.Service{
			Namespace: scenario.Namespace, Name: name, Type: proxy.ServiceTypeNodePort, ClusterIPs: []netip.Addr{vip},
			Ports:                 []proxy.ServicePort{{Port: nftServicePort, TargetPort: nftBackendPort, NodePort: np}},
			Endpoints:             scenario.Endpoints(netnstest.IPv4, nftBackendPort, pods...),
			ExternalTrafficPolicy: proxy.TrafficPolicyLocal,
		}
	}
	st := e.BaseState()
	st.Services = []proxy.Service{
		svc("local", ipvsLocalVIP, ipvsLocalNodePort, a, r),
		svc("remote-only", ipvsRemoteOnlyVIP, ipvsRemoteOnlyNodePort, r),
	}
	return st
}

// checkIPVSLocalPolicy: a Local-policy NodePort reached from outside goes
// only to local endpoints, keeping the client's source address; where
// there is no local endpoint, kube-proxy's IPVS mode gives the NodePort
// virtual server every endpoint instead (kubernetes#93456, PR 97081), so
// the client reaches the remote one, still unmasqueraded (the model, like
// iptables mode, drops it: that one connection is not checked against
// it). The node itself and pods reach what the virtual server holds,
// which the model allows; the cluster IP is not affected.
func checkIPVSLocalPolicy(t *testing.T, e *scenario.Env) {
	v4 := netnstest.IPv4
	local := scenario.Backends(v4, nftBackendPort, e.Pod(t, "a"))
	remote := scenario.Backends(v4, nftBackendPort, e.Pod(t, "r"))
	node := e.Topo.NodeIP(v4)
	e.ExpectN(t, 6, e.Client(v4), "tcp", netip.AddrPortFrom(node, ipvsLocalNodePort), scenario.Reach(false, local...))
	e.Expect(t, e.Client(v4), "tcp", netip.AddrPortFrom(ipvsRemoteOnlyVIP, nftServicePort), scenario.Reach(true, remote...))
	e.Expect(t, e.Node(v4), "tcp", netip.AddrPortFrom(node, ipvsLocalNodePort), scenario.Reach(true, local...))
	e.Expect(t, e.Node(v4), "tcp", netip.AddrPortFrom(node, ipvsRemoteOnlyNodePort), scenario.Reach(true, remote...))
	pod := e.Pod(t, "client")
	e.Expect(t, scenario.FromPod(pod, v4), "tcp", netip.AddrPortFrom(node, ipvsRemoteOnlyNodePort), scenario.Reach(false, remote...))
	r := e.Topo.Client().Dial(t.Context(), "tcp", netip.AddrPortFrom(node, ipvsRemoteOnlyNodePort), netnstest.From(e.Topo.ClientIP(v4)))
	if !r.OK() || r.Backend != remote[0] || r.Peer.Addr() != e.Topo.ClientIP(v4) {
		t.Errorf("tcp from the client to a Local-policy NodePort with only a remote endpoint = %v (peer %s), "+
			"want %s seeing the client's own %s, as kube-proxy's IPVS mode forwards it", r, r.Peer, remote[0], e.Topo.ClientIP(v4))
	}
}

// Addresses of IPVSLoadBalancerSourceRanges.
var (
	ipvsLBIP        = netip.MustParseAddr("192.0.2.10")
	ipvsLBVIP       = netip.MustParseAddr("10.96.0.40")
	ipvsLBAllowed   = netip.MustParseAddr("203.0.113.5")
	ipvsLBForbidden = netip.MustParseAddr("198.18.0.5")
)

// ipvsLBNodePort is the NodePort of IPVSLoadBalancerSourceRanges.
const ipvsLBNodePort = 30040

func setupIPVSLoadBalancer(t *testing.T, e *scenario.Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", nftBackendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", nftBackendPort)
	e.Topo.Client().Route(t, netip.PrefixFrom(ipvsLBIP, 32), e.Topo.NodeIP(netnstest.IPv4))
	e.Topo.AddClientAddr(t, ipvsLBAllowed)
	e.Topo.AddClientAddr(t, ipvsLBForbidden)
	st := e.BaseState()
	st.Services = []proxy.Service{{
		Namespace: scenario.Namespace, Name: "lb", Type: proxy.ServiceTypeLoadBalancer, ClusterIPs: []netip.Addr{ipvsLBVIP},
		Ports:                    []proxy.ServicePort{{Port: nftServicePort, TargetPort: nftBackendPort, NodePort: ipvsLBNodePort}},
		Endpoints:                scenario.Endpoints(netnstest.IPv4, nftBackendPort, a, b),
		LoadBalancerIPs:          []netip.Addr{ipvsLBIP},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	}}
	return st
}

// checkIPVSLoadBalancer: the load balancer IP lets in sources inside its
// source ranges and drops the others, the node's own connections from
// the LB IP (a node process's default source for it) included; its
// NodePort and cluster IP are not limited by the ranges. A node process
// bound to the node's address does reach the LB IP in kube-proxy's IPVS
// mode, whose KUBE-IPVS-OUT-FILTER rule matches the LB IP as the source
// only; that one connection, which the model (like iptables mode) drops,
// is not checked against it.
func checkIPVSLoadBalancer(t *testing.T, e *scenario.Env) {
	v4 := netnstest.IPv4
	backends := scenario.Backends(v4, nftBackendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	allowed, forbidden := e.ClientFrom(ipvsLBAllowed), e.ClientFrom(ipvsLBForbidden)
	lb := netip.AddrPortFrom(ipvsLBIP, nftServicePort)
	e.Expect(t, allowed, "tcp", lb, scenario.Reach(true, backends...))
	e.Expect(t, forbidden, "tcp", lb, scenario.TimedOut())
	e.Expect(t, e.Client(v4), "tcp", lb, scenario.TimedOut())
	e.Expect(t, e.NodeFrom(ipvsLBIP), "tcp", lb, scenario.TimedOut())
	e.Expect(t, forbidden, "tcp", netip.AddrPortFrom(e.Topo.NodeIP(v4), ipvsLBNodePort), scenario.Reach(true, backends...))
	e.Expect(t, forbidden, "tcp", netip.AddrPortFrom(ipvsLBVIP, nftServicePort), scenario.Reach(true, backends...))
	node := e.Topo.NodeIP(v4)
	r := e.Topo.Node().Dial(t.Context(), "tcp", lb, netnstest.From(node))
	if !r.OK() || !slices.Contains(backends, r.Backend) {
		t.Errorf("tcp from the node's own %s to the LB IP %s = %v, want one of %v, as kube-proxy's IPVS mode lets it through",
			node, lb, r, backends)
	}
}
