package proxy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func pfx(s string) netip.Prefix  { return netip.MustParsePrefix(s) }
func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, ip(x))
	}
	return out
}

func ep(addr, node string, ready bool, ports ...EndpointPort) Endpoint {
	if len(ports) == 0 {
		ports = []EndpointPort{{Name: "http", Port: 8080}}
	}
	return Endpoint{Addr: ip(addr), NodeName: node, Ready: ready, Ports: ports}
}

func testState() *State {
	return &State{
		Node:   Node{Name: "node-a", IPs: ips("10.0.0.10", "fd00::10")},
		Config: Config{ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")}},
		Services: []Service{
			{
				Namespace: "ns", Name: "web", ClusterIPs: ips("10.96.0.10"),
				Ports:     []ServicePort{{Name: "http", Port: 80}},
				Endpoints: []Endpoint{ep("10.244.1.2", "node-a", true), ep("10.244.2.2", "node-b", true)},
			},
			{
				Namespace: "ns", Name: "empty", ClusterIPs: ips("10.96.0.11"),
				Ports: []ServicePort{{Name: "http", Port: 80}},
			},
			{
				Namespace: "ns", Name: "lb", Type: ServiceTypeLoadBalancer, ClusterIPs: ips("10.96.0.12"),
				Ports:                    []ServicePort{{Name: "http", Port: 80, NodePort: 30080}},
				LoadBalancerIPs:          ips("192.0.2.10"),
				LoadBalancerSourceRanges: []netip.Prefix{pfx("203.0.113.0/24")},
				ExternalTrafficPolicy:    TrafficPolicyLocal,
				HealthCheckNodePort:      32000,
				Endpoints:                []Endpoint{ep("10.244.1.3", "node-a", true), ep("10.244.2.3", "node-b", true)},
			},
			{
				Namespace: "ns", Name: "remote", Type: ServiceTypeNodePort, ClusterIPs: ips("10.96.0.13"),
				Ports:                 []ServicePort{{Name: "http", Port: 80, NodePort: 30081}},
				ExternalIPs:           ips("198.51.100.7"),
				ExternalTrafficPolicy: TrafficPolicyLocal,
				Endpoints:             []Endpoint{ep("10.244.2.4", "node-b", true)},
			},
		},
	}
}

func fwd(svc string, masq bool, eps ...string) Answer {
	a := Answer{Verdict: VerdictForward, ServicePort: svc}
	for _, e := range eps {
		a.Choices = append(a.Choices, Choice{Endpoint: ap(e), Probability: 1 / float64(len(eps)), Masquerade: masq})
	}
	return a
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		pkt  Packet
		want Answer
	}{
		{"cluster IP from pod", Packet{Src: ip("10.244.1.9"), Dst: ap("10.96.0.10:80")},
			fwd("ns/web:http", false, "10.244.1.2:8080", "10.244.2.2:8080")},
		{"cluster IP from outside cluster CIDR is masqueraded", Packet{Src: ip("10.0.0.2"), Dst: ap("10.96.0.10:80")},
			fwd("ns/web:http", true, "10.244.1.2:8080", "10.244.2.2:8080")},
		{"wrong port passes", Packet{Src: ip("10.244.1.9"), Dst: ap("10.96.0.10:81")}, Answer{Verdict: VerdictPass}},
		{"wrong protocol passes", Packet{Src: ip("10.244.1.9"), Dst: ap("10.96.0.10:80"), Protocol: ProtocolUDP}, Answer{Verdict: VerdictPass}},
		{"no endpoints rejects", Packet{Src: ip("10.244.1.9"), Dst: ap("10.96.0.11:80")},
			Answer{Verdict: VerdictReject, ServicePort: "ns/empty:http"}},
		{"no endpoints rejects from node", Packet{Src: ip("10.0.0.10"), Dst: ap("10.96.0.11:80"), FromNode: true},
			Answer{Verdict: VerdictReject, ServicePort: "ns/empty:http"}},
		{"LB allowed source, local policy keeps source", Packet{Src: ip("203.0.113.5"), Dst: ap("192.0.2.10:80")},
			fwd("ns/lb:http", false, "10.244.1.3:8080")},
		{"LB denied source dropped", Packet{Src: ip("198.18.0.1"), Dst: ap("192.0.2.10:80")},
			Answer{Verdict: VerdictDrop, ServicePort: "ns/lb:http"}},
		{"LB from pod outside the source ranges dropped", Packet{Src: ip("10.244.1.9"), Dst: ap("192.0.2.10:80")},
			Answer{Verdict: VerdictDrop, ServicePort: "ns/lb:http"}},
		{"NodePort not subject to source ranges", Packet{Src: ip("198.18.0.1"), Dst: ap("10.0.0.10:30080")},
			fwd("ns/lb:http", false, "10.244.1.3:8080")},
		{"NodePort from node masquerades and uses all endpoints", Packet{Src: ip("10.0.0.10"), Dst: ap("10.0.0.10:30080"), FromNode: true},
			fwd("ns/lb:http", true, "10.244.1.3:8080", "10.244.2.3:8080")},
		{"NodePort on loopback from node", Packet{Src: ip("127.0.0.1"), Dst: ap("127.0.0.1:30080"), FromNode: true},
			fwd("ns/lb:http", true, "10.244.1.3:8080", "10.244.2.3:8080")},
		{"local policy without local endpoint drops NodePort", Packet{Src: ip("198.18.0.1"), Dst: ap("10.0.0.10:30081")},
			Answer{Verdict: VerdictDrop, ServicePort: "ns/remote:http"}},
		{"local policy without local endpoint drops external IP", Packet{Src: ip("198.18.0.1"), Dst: ap("198.51.100.7:80")},
			Answer{Verdict: VerdictDrop, ServicePort: "ns/remote:http"}},
		{"pod to external IP short-circuits", Packet{Src: ip("10.244.1.9"), Dst: ap("198.51.100.7:80")},
			fwd("ns/remote:http", false, "10.244.2.4:8080")},
		{"health check node port accepted", Packet{Src: ip("198.18.0.1"), Dst: ap("10.0.0.10:32000")}, Answer{Verdict: VerdictPass}},
		{"hairpin masquerades only the own endpoint", Packet{Src: ip("10.244.1.2"), Dst: ap("10.96.0.10:80")},
			Answer{Verdict: VerdictForward, ServicePort: "ns/web:http", Choices: []Choice{
				{Endpoint: ap("10.244.1.2:8080"), Probability: 0.5, Masquerade: true},
				{Endpoint: ap("10.244.2.2:8080"), Probability: 0.5},
			}}},
		{"martian localhost dropped", Packet{Src: ip("10.0.0.2"), Dst: ap("127.0.0.1:22")}, Answer{Verdict: VerdictDrop}},
		{"ipv6 source to ipv4 service passes", Packet{Src: ip("fd00::2"), Dst: ap("10.96.0.10:80")}, Answer{Verdict: VerdictPass}},
	}
	st := testState()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Resolve(st, tt.pkt)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-9), cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
				t.Errorf("Resolve(%+v) mismatch (-want +got):\n%s", tt.pkt, diff)
			}
		})
	}
}
