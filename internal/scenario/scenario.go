package scenario

import (
	"net/netip"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/proxy"
)

// Scenario is one real-traffic test of a proxy mode, written once for all
// modes. Setup builds the world: it adds pods (with their servers) to the
// Env's topology and returns the State of node NodeName that the mode
// applies. Check then sends traffic and checks it, against kube-proxy's
// behaviour (the scenario's own expectations) and against proxy.Resolve
// (by [Env.Expect]); it may apply a changed State with [Env.Apply].
type Scenario struct {
	// Name names the scenario as a subtest.
	Name string
	// Setup adds pods and returns the first State.
	Setup func(t *testing.T, e *Env) proxy.State
	// Check sends traffic and checks what happens to it.
	Check func(t *testing.T, e *Env)
}

// Run runs the scenario in a fresh topology with mode m: Setup, Apply,
// Check. It skips t when m is [Unsupported] and gives a reason to skip
// the scenario.
func (sc *Scenario) Run(t *testing.T, m Mode) {
	t.Helper()
	if u, ok := m.(Unsupported); ok {
		if why := u.Skips(sc.Name); why != "" {
			t.Skipf("%s mode: %s", m.Name(), why)
		}
	}
	e := NewEnv(t, m)
	e.Apply(t, sc.Setup(t, e))
	sc.Check(t, e)
}

// Run runs every scenario of [Scenarios] with mode m, each as a parallel
// subtest of t with its own topology.
func Run(t *testing.T, m Mode) {
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			sc.Run(t, m)
		})
	}
}

// Scenarios returns the scenario table, a new slice on every call.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "ClusterIP", Setup: setupClusterIP, Check: checkClusterIP},
		{Name: "NodePort", Setup: setupNodePort, Check: checkNodePort},
		{Name: "ExternalIP", Setup: setupExternalIP, Check: checkExternalIP},
		{Name: "LoadBalancerSourceRanges", Setup: setupLoadBalancer, Check: checkLoadBalancer},
		{Name: "ClientIPAffinity", Setup: setupAffinity, Check: checkAffinity},
		{Name: "EvenBalancing", Setup: setupBalance, Check: checkBalance},
		{Name: "ExternalTrafficPolicyLocal", Setup: setupLocalPolicy, Check: checkLocalPolicy},
		{Name: "Hairpin", Setup: setupHairpin, Check: checkHairpin},
		{Name: "NoEndpoints", Setup: setupNoEndpoints, Check: checkNoEndpoints},
		{Name: "UDP", Setup: setupUDP, Check: checkUDP},
		{Name: "IPv6", Setup: setupIPv6, Check: checkIPv6},
		{Name: "EndpointChange", Setup: setupEndpointChange, Check: checkEndpointChange},
	}
}

// Ports the scenarios use.
const (
	// servicePort is the port of every service.
	servicePort = 80
	// backendPort is the TCP (and UDP) port every backend listens on.
	backendPort = 8080
)

// Namespace is the Kubernetes namespace of every scenario's services.
const Namespace = "scenario"

// service returns a ClusterIP service named name on ip:80 (TCP), targeting
// port 8080 of eps.
func service(name string, ip netip.Addr, eps []proxy.Endpoint) proxy.Service {
	return proxy.Service{
		Namespace:  Namespace,
		Name:       name,
		ClusterIPs: []netip.Addr{ip},
		Ports:      []proxy.ServicePort{{Port: servicePort, TargetPort: backendPort}},
		Endpoints:  eps,
	}
}

// nodePortService returns service(...) as type NodePort on nodePort.
func nodePortService(name string, ip netip.Addr, nodePort int, eps []proxy.Endpoint) proxy.Service {
	s := service(name, ip, eps)
	s.Type = proxy.ServiceTypeNodePort
	s.Ports[0].NodePort = nodePort
	return s
}

// at returns ip:port; ip must parse.
func at(ip string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), port)
}

// withServices returns e's base state with svcs.
func withServices(e *Env, svcs ...proxy.Service) proxy.State {
	st := e.BaseState()
	st.Services = svcs
	return st
}

const v4, v6 = netnstest.IPv4, netnstest.IPv6

func setupClusterIP(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", backendPort)
	e.AddPod(t, "client", netnstest.Local)
	return withServices(e, service("web", netip.MustParseAddr("10.96.0.10"), Endpoints(v4, backendPort, a, b)))
}

// checkClusterIP: traffic to a cluster IP lands on a pod, masqueraded iff
// its source is outside the cluster CIDR (the client and the node are,
// another pod is not).
func checkClusterIP(t *testing.T, e *Env) {
	backends := Backends(v4, backendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	dst := at("10.96.0.10", servicePort)
	for range 4 {
		e.Expect(t, e.Client(v4), "tcp", dst, Reach(true, backends...))
		e.Expect(t, e.Node(v4), "tcp", dst, Reach(true, backends...))
		e.Expect(t, FromPod(e.Pod(t, "client"), v4), "tcp", dst, Reach(false, backends...))
	}
}

func setupNodePort(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", backendPort)
	return withServices(e, nodePortService("np", netip.MustParseAddr("10.96.0.20"), 30080, Endpoints(v4, backendPort, a, b)))
}

// checkNodePort: a NodePort answers on the node's address, from outside
// and from the node itself, and on localhost from the node; under the
// Cluster policy it always masquerades.
func checkNodePort(t *testing.T, e *Env) {
	backends := Backends(v4, backendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	np := netip.AddrPortFrom(e.Topo.NodeIP(v4), 30080)
	for range 3 {
		e.Expect(t, e.Client(v4), "tcp", np, Reach(true, backends...))
	}
	e.Expect(t, e.Node(v4), "tcp", np, Reach(true, backends...))
	e.Expect(t, e.NodeFrom(netip.MustParseAddr("127.0.0.1")), "tcp", at("127.0.0.1", 30080), Reach(true, backends...))
	e.Expect(t, e.Client(v4), "tcp", at("10.96.0.20", servicePort), Reach(true, backends...))
}

// externalIP is the external IP of the ExternalIP scenario.
const externalIP = "198.51.100.7"

func setupExternalIP(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	e.AddPod(t, "client", netnstest.Local)
	e.Topo.Client().Route(t, netip.MustParsePrefix(externalIP+"/32"), e.Topo.NodeIP(v4))
	svc := service("ext", netip.MustParseAddr("10.96.0.30"), Endpoints(v4, backendPort, a))
	svc.ExternalIPs = []netip.Addr{netip.MustParseAddr(externalIP)}
	return withServices(e, svc)
}

// checkExternalIP: an external IP routed to the node reaches the service
// from outside, from the node and from a pod, always masqueraded.
func checkExternalIP(t *testing.T, e *Env) {
	backends := Backends(v4, backendPort, e.Pod(t, "a"))
	dst := at(externalIP, servicePort)
	e.Expect(t, e.Client(v4), "tcp", dst, Reach(true, backends...))
	e.Expect(t, e.Node(v4), "tcp", dst, Reach(true, backends...))
	e.Expect(t, FromPod(e.Pod(t, "client"), v4), "tcp", dst, Reach(true, backends...))
}

// Addresses of the LoadBalancerSourceRanges scenario.
const (
	lbIP        = "192.0.2.10"
	lbAllowed   = "203.0.113.5"
	lbForbidden = "198.18.0.5"
	lbNodePort  = 30040
)

func setupLoadBalancer(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", backendPort)
	e.Topo.Client().Route(t, netip.MustParsePrefix(lbIP+"/32"), e.Topo.NodeIP(v4))
	e.Topo.AddClientAddr(t, netip.MustParseAddr(lbAllowed))
	e.Topo.AddClientAddr(t, netip.MustParseAddr(lbForbidden))
	svc := nodePortService("lb", netip.MustParseAddr("10.96.0.40"), lbNodePort, Endpoints(v4, backendPort, a, b))
	svc.Type = proxy.ServiceTypeLoadBalancer
	svc.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr(lbIP)}
	svc.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	return withServices(e, svc)
}

// checkLoadBalancer: the load balancer IP lets in sources inside its
// source ranges and drops the others; its NodePort and cluster IP are not
// limited by the ranges.
func checkLoadBalancer(t *testing.T, e *Env) {
	backends := Backends(v4, backendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	allowed := e.ClientFrom(netip.MustParseAddr(lbAllowed))
	forbidden := e.ClientFrom(netip.MustParseAddr(lbForbidden))
	lb := at(lbIP, servicePort)
	e.Expect(t, allowed, "tcp", lb, Reach(true, backends...))
	e.Expect(t, forbidden, "tcp", lb, TimedOut())
	e.Expect(t, e.Client(v4), "tcp", lb, TimedOut())
	e.Expect(t, e.Node(v4), "tcp", lb, TimedOut())
	e.Expect(t, forbidden, "tcp", netip.AddrPortFrom(e.Topo.NodeIP(v4), lbNodePort), Reach(true, backends...))
	e.Expect(t, forbidden, "tcp", at("10.96.0.40", servicePort), Reach(true, backends...))
}

// threeBackends adds three local backends a, b and c.
func threeBackends(t *testing.T, e *Env) []netnstest.Pod {
	var pods []netnstest.Pod
	for _, name := range []string{"a", "b", "c"} {
		pods = append(pods, e.AddBackend(t, name, netnstest.Local, "tcp", backendPort))
	}
	return pods
}

// threeBackendAddrs returns the backends of threeBackends.
func threeBackendAddrs(t *testing.T, e *Env) []netip.AddrPort {
	return Backends(v4, backendPort, e.Pod(t, "a"), e.Pod(t, "b"), e.Pod(t, "c"))
}

func setupAffinity(t *testing.T, e *Env) proxy.State {
	svc := service("sticky", netip.MustParseAddr("10.96.0.50"), Endpoints(v4, backendPort, threeBackends(t, e)...))
	svc.SessionAffinity = proxy.SessionAffinityClientIP
	return withServices(e, svc)
}

// checkAffinity: with ClientIP affinity every connection from one client
// lands on the same backend.
func checkAffinity(t *testing.T, e *Env) {
	backends := threeBackendAddrs(t, e)
	replies := e.ExpectN(t, 30, e.Client(v4), "tcp", at("10.96.0.50", servicePort), Reach(true, backends...))
	if spread := netnstest.Spread(t, replies); len(spread) != 1 {
		t.Errorf("30 connections from one client with ClientIP affinity reached %v, want one backend", spread)
	}
}

func setupBalance(t *testing.T, e *Env) proxy.State {
	return withServices(e, service("spread", netip.MustParseAddr("10.96.0.60"), Endpoints(v4, backendPort, threeBackends(t, e)...)))
}

// checkBalance: without affinity, connections spread evenly over the
// backends.
func checkBalance(t *testing.T, e *Env) {
	backends := threeBackendAddrs(t, e)
	replies := e.ExpectN(t, 300, e.Client(v4), "tcp", at("10.96.0.60", servicePort), Reach(true, backends...))
	counts := netnstest.Counts(netnstest.Spread(t, replies), backends...)
	if stat, ok := netnstest.ChiSquareUniform(counts); !ok {
		t.Errorf("300 connections over 3 backends gave %v (chi-square %.1f), want a uniform spread (p > %v)",
			counts, stat, netnstest.BalanceAlpha)
	}
}

// NodePorts of the ExternalTrafficPolicyLocal scenario.
const (
	localNodePort      = 30070
	remoteOnlyNodePort = 30071
)

func setupLocalPolicy(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	r := e.AddBackend(t, "r", netnstest.Remote, "tcp", backendPort)
	e.AddPod(t, "client", netnstest.Local)
	both := nodePortService("local", netip.MustParseAddr("10.96.0.70"), localNodePort, Endpoints(v4, backendPort, a, r))
	both.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	remote := nodePortService("remote-only", netip.MustParseAddr("10.96.0.71"), remoteOnlyNodePort, Endpoints(v4, backendPort, r))
	remote.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	return withServices(e, both, remote)
}

// checkLocalPolicy: under externalTrafficPolicy Local a NodePort reached
// from outside goes only to local endpoints, keeping the client's source
// address, and is dropped when there is none; the node itself and pods
// still reach every endpoint, and the cluster IP is not affected.
func checkLocalPolicy(t *testing.T, e *Env) {
	local := Backends(v4, backendPort, e.Pod(t, "a"))
	remote := Backends(v4, backendPort, e.Pod(t, "r"))
	all := append(local, remote...)
	node := e.Topo.NodeIP(v4)
	e.ExpectN(t, 6, e.Client(v4), "tcp", netip.AddrPortFrom(node, localNodePort), Reach(false, local...))
	e.Expect(t, e.Client(v4), "tcp", netip.AddrPortFrom(node, remoteOnlyNodePort), TimedOut())
	e.Expect(t, e.Client(v4), "tcp", at("10.96.0.71", servicePort), Reach(true, remote...))
	e.Expect(t, e.Node(v4), "tcp", netip.AddrPortFrom(node, localNodePort), Reach(true, all...))
	e.Expect(t, e.Node(v4), "tcp", netip.AddrPortFrom(node, remoteOnlyNodePort), Reach(true, remote...))
	e.Expect(t, FromPod(e.Pod(t, "client"), v4), "tcp", netip.AddrPortFrom(node, remoteOnlyNodePort), Reach(false, remote...))
}

func setupHairpin(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	return withServices(e, service("hairpin", netip.MustParseAddr("10.96.0.80"), Endpoints(v4, backendPort, a)))
}

// checkHairpin: a pod reaching itself through its service is masqueraded,
// so that its reply goes back through the node.
func checkHairpin(t *testing.T, e *Env) {
	a := e.Pod(t, "a")
	e.Expect(t, FromPod(a, v4), "tcp", at("10.96.0.80", servicePort), Reach(true, Backends(v4, backendPort, a)...))
}

// emptyNodePort is the NodePort of the NoEndpoints scenario.
const emptyNodePort = 30090

func setupNoEndpoints(t *testing.T, e *Env) proxy.State {
	e.AddPod(t, "client", netnstest.Local)
	svc := nodePortService("empty", netip.MustParseAddr("10.96.0.90"), emptyNodePort, nil)
	svc.Ports[0].Name = "http"
	svc.Ports = append(svc.Ports, proxy.ServicePort{Name: "dns", Protocol: proxy.ProtocolUDP, Port: dnsPort, TargetPort: dnsBackend})
	return withServices(e, svc)
}

// checkNoEndpoints: a service without endpoints refuses connections at
// once, on its cluster IP and its NodePort, from everywhere.
func checkNoEndpoints(t *testing.T, e *Env) {
	dst := at("10.96.0.90", servicePort)
	e.Expect(t, e.Client(v4), "tcp", dst, Refused())
	e.Expect(t, e.Node(v4), "tcp", dst, Refused())
	e.Expect(t, FromPod(e.Pod(t, "client"), v4), "tcp", dst, Refused())
	e.Expect(t, e.Client(v4), "tcp", netip.AddrPortFrom(e.Topo.NodeIP(v4), emptyNodePort), Refused())
	e.Expect(t, e.Client(v4), "udp", at("10.96.0.90", dnsPort), Refused())
}

// Ports of the UDP scenario.
const (
	dnsPort     = 53
	dnsBackend  = 5353
	dnsNodePort = 30053
)

func setupUDP(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "udp", dnsBackend)
	b := e.AddBackend(t, "b", netnstest.Remote, "udp", dnsBackend)
	e.AddPod(t, "client", netnstest.Local)
	svc := nodePortService("dns", netip.MustParseAddr("10.96.0.100"), dnsNodePort, Endpoints(v4, dnsBackend, a, b))
	svc.Ports[0] = proxy.ServicePort{Protocol: proxy.ProtocolUDP, Port: dnsPort, TargetPort: dnsBackend, NodePort: dnsNodePort}
	return withServices(e, svc)
}

// checkUDP: a UDP datagram to the cluster IP or the NodePort reaches a
// backend and its answer comes back.
func checkUDP(t *testing.T, e *Env) {
	backends := Backends(v4, dnsBackend, e.Pod(t, "a"), e.Pod(t, "b"))
	dst := at("10.96.0.100", dnsPort)
	for range 3 {
		e.Expect(t, e.Client(v4), "udp", dst, Reach(true, backends...))
		e.Expect(t, FromPod(e.Pod(t, "client"), v4), "udp", dst, Reach(false, backends...))
	}
	e.Expect(t, e.Client(v4), "udp", netip.AddrPortFrom(e.Topo.NodeIP(v4), dnsNodePort), Reach(true, backends...))
}

// ipv6NodePort is the NodePort of the IPv6 scenario.
const ipv6NodePort = 30066

func setupIPv6(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", backendPort)
	e.AddPod(t, "client", netnstest.Local)
	return withServices(e, nodePortService("web6", netip.MustParseAddr("fd00:96::10"), ipv6NodePort, Endpoints(v6, backendPort, a, b)))
}

// checkIPv6: an IPv6 cluster IP and NodePort work as IPv4 ones do.
func checkIPv6(t *testing.T, e *Env) {
	backends := Backends(v6, backendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	dst := at("fd00:96::10", servicePort)
	for range 3 {
		e.Expect(t, e.Client(v6), "tcp", dst, Reach(true, backends...))
		e.Expect(t, FromPod(e.Pod(t, "client"), v6), "tcp", dst, Reach(false, backends...))
	}
	e.Expect(t, e.Node(v6), "tcp", dst, Reach(true, backends...))
	e.Expect(t, e.Client(v6), "tcp", netip.AddrPortFrom(e.Topo.NodeIP(v6), ipv6NodePort), Reach(true, backends...))
	// kube-proxy serves no NodePort on ::1 (IPv6 has no route_localnet):
	// nothing listens there, so the connection is refused.
	e.Expect(t, e.NodeFrom(netip.IPv6Loopback()), "tcp", netip.AddrPortFrom(netip.IPv6Loopback(), ipv6NodePort), Refused())
}

// rollingIP is the cluster IP of the EndpointChange scenario.
const rollingIP = "10.96.0.110"

func rollingState(e *Env, pods ...netnstest.Pod) proxy.State {
	return withServices(e, service("rolling", netip.MustParseAddr(rollingIP), Endpoints(v4, backendPort, pods...)))
}

func setupEndpointChange(t *testing.T, e *Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", backendPort)
	e.AddBackend(t, "b", netnstest.Local, "tcp", backendPort)
	return rollingState(e, a)
}

// checkEndpointChange: replacing a service's endpoint leaves a connection
// to the old one working (conntrack keeps it) while new connections go to
// the new endpoint only.
func checkEndpointChange(t *testing.T, e *Env) {
	a, b := e.Pod(t, "a"), e.Pod(t, "b")
	dst := at(rollingIP, servicePort)
	conn := e.Open(t, e.Client(v4), dst)
	if want := Backends(v4, backendPort, a)[0]; conn.Reply.Backend != want {
		t.Fatalf("connection before the change landed on %s, want %s", conn.Reply.Backend, want)
	}
	e.Apply(t, rollingState(e, b))
	if err := conn.Echo([]byte("still there?\n")); err != nil {
		t.Errorf("connection opened before the endpoint change: %v", err)
	}
	e.ExpectN(t, 5, e.Client(v4), "tcp", dst, Reach(true, Backends(v4, backendPort, b)...))
	if err := conn.Echo([]byte("and now?\n")); err != nil {
		t.Errorf("connection opened before the endpoint change, after new connections: %v", err)
	}
}
