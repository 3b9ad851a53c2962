package userspace_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
	"github.com/svcplan/svcplan/userspace"
)

const kernelNode = "node"

// TestKernelUserspaceMode runs the whole userspace mode in a network
// namespace topology: the portal rules compiled by translate, restored
// with iptables-restore in the node namespace, and the proxy listening
// and dialing there; the client namespace, the node itself and a pod
// reach the pods through cluster IPs and a NodePort.
func TestKernelUserspaceMode(t *testing.T) {
	netnstest.Require(t, "ip", "iptables-restore", "ip6tables-restore")
	tp := netnstest.New(t)
	pods := []netnstest.Pod{tp.AddPod(t, netnstest.Local), tp.AddPod(t, netnstest.Local), tp.AddPod(t, netnstest.Remote)}
	backends := map[netnstest.Family][]netip.AddrPort{}
	for _, f := range tp.Families() {
		for _, p := range pods {
			ap := netip.AddrPortFrom(p.Addr(f), 8080)
			tp.Serve(t, "tcp", ap)
			tp.Serve(t, "udp", ap)
			backends[f] = append(backends[f], ap)
		}
	}
	plan, err := translate.Compile(kernelState(tp, pods), translate.ModeUserspace,
		translate.WithUserspacePortRange(proxy.PortRange{Min: 20000, Max: 20099}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan.IPTables {
		restorePlan(t, tp.Node(), p)
	}
	px := userspace.NewProxy(userspace.WithNetNS("/run/netns/" + tp.Node().Name()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := px.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := px.Apply(t.Context(), plan.Userspace); err != nil {
		t.Fatalf("Apply:\n%s\n%v", plan.Userspace, err)
	}
	t.Run("traffic", func(t *testing.T) { kernelTraffic(t, tp, pods, backends) })
	t.Run("affinity", func(t *testing.T) {
		replies := dialN(t, tp.Client(), "tcp", netip.MustParseAddrPort("10.96.0.12:80"), 20, nil)
		if spread := netnstest.Spread(t, replies); len(spread) != 1 {
			t.Errorf("ClientIP affinity: spread %v, want one backend", spread)
		}
	})
	t.Run("no endpoints", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			r := tp.Client().Dial(t.Context(), network, netip.MustParseAddrPort("10.96.0.13:80"), netnstest.Timeout(time.Second))
			if !r.Refused() {
				t.Errorf("%s to a service without endpoints: %v, want refused", network, r)
			}
		}
	})
	t.Run("update", func(t *testing.T) {
		// The remote pod goes away. With the previous ports the portal
		// rules stay the same: only the proxy's backends change.
		next, err := translate.Compile(kernelState(tp, pods[:2]), translate.ModeUserspace,
			translate.WithUserspacePortRange(proxy.PortRange{Min: 20000, Max: 20099}),
			translate.WithUserspacePorts(plan.Userspace.Ports()))
		if err != nil {
			t.Fatal(err)
		}
		for i := range next.IPTables {
			if a, b := plan.IPTables[i].String(), next.IPTables[i].String(); a != b {
				t.Errorf("portal rules changed with stable ports:\n%s\nthen\n%s", a, b)
			}
		}
		if err := px.Apply(t.Context(), next.Userspace); err != nil {
			t.Fatal(err)
		}
		replies := dialN(t, tp.Client(), "tcp", netip.MustParseAddrPort("10.96.0.10:80"), 20, nil)
		counts := netnstest.Counts(netnstest.Spread(t, replies), backends[netnstest.IPv4][:2]...)
		if counts[0]+counts[1] != 20 || counts[0] != counts[1] {
			t.Errorf("after removing the remote pod, spread over the local ones = %v, want 10 each", counts)
		}
	})
	t.Run("stats", func(t *testing.T) {
		var accepted uint64
		for _, s := range px.Stats() {
			accepted += s.Accepted
		}
		if accepted == 0 {
			t.Errorf("Stats() = %+v, want connections counted", px.Stats())
		}
	})
}

// kernelTraffic checks each path into the proxy: every reply comes from
// a backend, carries the payload back intact, and the backends share the
// connections evenly.
func kernelTraffic(t *testing.T, tp *netnstest.Topology, pods []netnstest.Pod, backends map[netnstest.Family][]netip.AddrPort) {
	v4, v6 := netnstest.IPv4, netnstest.IPv6
	web4 := netip.MustParseAddrPort("10.96.0.10:80")
	web6 := netip.MustParseAddrPort("[fd00:96::10]:80")
	dns4 := netip.MustParseAddrPort("10.96.0.11:53")
	tests := []struct {
		name    string
		from    *netnstest.NS
		network string
		dst     netip.AddrPort
		family  netnstest.Family
	}{
		{"cluster IP from the client", tp.Client(), "tcp", web4, v4},
		{"cluster IP from the node", tp.Node(), "tcp", web4, v4},
		{"cluster IP from a pod", pods[0].NS, "tcp", web4, v4},
		{"NodePort from the client", tp.Client(), "tcp", netip.AddrPortFrom(tp.NodeIP(v4), 30080), v4},
		{"NodePort from the node", tp.Node(), "tcp", netip.AddrPortFrom(tp.NodeIP(v4), 30080), v4},
		{"UDP cluster IP from the client", tp.Client(), "udp", dns4, v4},
		{"UDP cluster IP from the node", tp.Node(), "udp", dns4, v4},
		{"IPv6 cluster IP from the client", tp.Client(), "tcp", web6, v6},
		{"IPv6 cluster IP from the node", tp.Node(), "tcp", web6, v6},
		{"IPv6 NodePort from the client", tp.Client(), "tcp", netip.AddrPortFrom(tp.NodeIP(v6), 30080), v6},
		{"IPv6 UDP cluster IP from the client", tp.Client(), "udp", netip.MustParseAddrPort("[fd00:96::11]:53"), v6},
		{"IPv6 UDP cluster IP from the node", tp.Node(), "udp", netip.MustParseAddrPort("[fd00:96::11]:53"), v6},
	}
	payload := bytes.Repeat([]byte("svcplan userspace "), 20000)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(backends[tc.family]) == 0 {
				t.Skipf("the topology has no %s", tc.family)
			}
			p := payload
			if tc.network == "udp" {
				p = payload[:1000]
			}
			replies := dialN(t, tc.from, tc.network, tc.dst, 30, p)
			counts := netnstest.Counts(netnstest.Spread(t, replies), backends[tc.family]...)
			if stat, ok := netnstest.ChiSquareUniform(counts); !ok {
				t.Errorf("spread over %v = %v (chi-square %.1f), want even", backends[tc.family], counts, stat)
			}
		})
	}
}

// dialN dials dst n times from ns, each with its own source port (UDP:
// its own session), and checks the echo of payload.
func dialN(t *testing.T, ns *netnstest.NS, network string, dst netip.AddrPort, n int, payload []byte) []netnstest.Reply {
	t.Helper()
	var replies []netnstest.Reply
	for range n {
		var opts []netnstest.DialOption
		if payload != nil {
			opts = append(opts, netnstest.Payload(payload))
		}
		r := ns.Dial(t.Context(), network, dst, opts...)
		if r.OK() && payload != nil && !bytes.Equal(r.Echo, payload) {
			t.Errorf("%s %s: echo of %d bytes differs from the %d sent", network, dst, len(r.Echo), len(payload))
		}
		replies = append(replies, r)
	}
	return replies
}

// kernelState is the cluster of the kernel test: a dual-stack web service
// with a NodePort, a UDP service, a service with ClientIP affinity and
// one without endpoints.
func kernelState(tp *netnstest.Topology, pods []netnstest.Pod) *proxy.State {
	endpoints := func(port string) []proxy.Endpoint {
		var eps []proxy.Endpoint
		for _, p := range pods {
			node := "other"
			if p.Site == netnstest.Local {
				node = kernelNode
			}
			for _, f := range tp.Families() {
				eps = append(eps, proxy.Endpoint{Addr: p.Addr(f), Ready: true, NodeName: node,
					Ports: []proxy.EndpointPort{{Name: port, Port: 8080}}})
			}
		}
		return eps
	}
	svc := func(name string, ips []string, port proxy.ServicePort) proxy.Service {
		s := proxy.Service{Namespace: "default", Name: name, Ports: []proxy.ServicePort{port}, Endpoints: endpoints(port.Name)}
		for _, ip := range ips {
			s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(ip))
		}
		return s
	}
	http := proxy.ServicePort{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80}
	web := svc("web", []string{"10.96.0.10", "fd00:96::10"}, proxy.ServicePort{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, NodePort: 30080})
	web.Type = proxy.ServiceTypeNodePort
	dns := svc("dns", []string{"10.96.0.11", "fd00:96::11"}, proxy.ServicePort{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53})
	sticky := svc("sticky", []string{"10.96.0.12"}, http)
	sticky.SessionAffinity = proxy.SessionAffinityClientIP
	empty := svc("empty", []string{"10.96.0.13"}, http)
	empty.Endpoints = nil
	emptyUDP := proxy.ServicePort{Name: "udp", Protocol: proxy.ProtocolUDP, Port: 80}
	empty.Ports = []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80}, emptyUDP}
	st := &proxy.State{
		Node: proxy.Node{Name: kernelNode},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{
			netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/32"),
		}},
		Services: []proxy.Service{web, dns, sticky, empty},
	}
	for _, f := range tp.Families() {
		st.Node.IPs = append(st.Node.IPs, tp.NodeIP(f))
	}
	return st
}

// restorePlan loads p into ns with iptables-restore --noflush.
func restorePlan(t *testing.T, ns *netnstest.NS, p *iptables.Plan) {
	t.Helper()
	tool := "iptables-restore"
	if p.FamilyOrDefault() == iptables.IPv6 {
		tool = "ip6tables-restore"
	}
	cmd := ns.Command(t.Context(), tool, "--noflush")
	cmd.Stdin = bytes.NewBufferString(p.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v: %s\ninput:\n%s", tool, ns, err, out, p)
	}
}
