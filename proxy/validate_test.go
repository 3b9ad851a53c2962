package proxy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func valAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func valPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// validState returns a State that uses every feature of the model and is
// valid. Its services are, by index: 0 ns/web (LoadBalancer, dual-stack), 1
// ns/api (NodePort, one unnamed port), 2 kube-system/kube-dns (ClusterIP) and
// 3 ns/headless.
func validState() State {
	bit := 15
	return State{
		Node: Node{
			Name: "node-1.example.com",
			IPs:  []netip.Addr{valAddr("192.168.1.10"), valAddr("fd00:1::10")},
			Zone: "us-East_1a",
		},
		Config: Config{
			ClusterCIDRs:      []netip.Prefix{valPrefix("10.244.0.0/16"), valPrefix("fd00:244::/56")},
			MasqueradeBit:     &bit,
			NodePortAddresses: []netip.Prefix{valPrefix("192.168.1.0/24"), valPrefix("fd00:1::/64")},
		},
		Services: []Service{validWebService(), {
			Namespace:             "ns",
			Name:                  "api",
			Type:                  ServiceTypeNodePort,
			ClusterIPs:            []netip.Addr{valAddr("10.96.0.11")},
			Ports:                 []ServicePort{{Port: 8080, NodePort: 31080}},
			ExternalIPs:           []netip.Addr{valAddr("203.0.113.10")},
			ExternalTrafficPolicy: TrafficPolicyCluster,
			Endpoints:             []Endpoint{{Addr: valAddr("10.244.3.7"), Ports: []EndpointPort{{Port: 8080}}, Ready: true}},
		}, {
			Namespace:       "kube-system",
			Name:            "kube-dns",
			ClusterIPs:      []netip.Addr{valAddr("10.96.0.53")},
			SessionAffinity: SessionAffinityNone,
			Ports: []ServicePort{
				{Name: "dns", Protocol: ProtocolUDP, Port: 53, TargetPort: 53},
				{Name: "dns-tcp", Protocol: ProtocolTCP, Port: 53},
			},
			Endpoints: []Endpoint{
				{Addr: valAddr("10.244.1.9"), Ports: []EndpointPort{{Name: "dns", Port: 53}, {Name: "dns-tcp", Port: 53}}, Ready: true},
				// An IPv6 endpoint of an IPv4-only service is ignored.
				{Addr: valAddr("fd00:244::9"), Ports: []EndpointPort{{Name: "dns", Port: 53}}, Ready: true},
			},
		}, {
			Namespace: "ns",
			Name:      "headless",
			Ports:     []ServicePort{{Name: "http", Port: 80}},
		}},
	}
}

func validWebService() Service {
	allPorts := func() []EndpointPort {
		return []EndpointPort{{Name: "http", Port: 8080}, {Name: "https", Port: 8443}, {Name: "dns", Port: 53}, {Name: "sctp", Port: 9999}}
	}
	return Service{
		Namespace:  "ns",
		Name:       "web",
		Type:       ServiceTypeLoadBalancer,
		ClusterIPs: []netip.Addr{valAddr("10.96.0.10"), valAddr("fd00:96::10")},
		Ports: []ServicePort{
			{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPort: 8080, NodePort: 30080},
			{Name: "https", Port: 443, TargetPortName: "https-tls", NodePort: 30443},
			// Same port and node port as http, other protocol.
			{Name: "dns", Protocol: ProtocolUDP, Port: 80, NodePort: 30080},
			{Name: "sctp", Protocol: ProtocolSCTP, Port: 9999, NodePort: 30099},
		},
		ExternalIPs:              []netip.Addr{valAddr("203.0.113.10"), valAddr("2001:db8::10")},
		LoadBalancerIPs:          []netip.Addr{valAddr("198.51.100.10"), valAddr("2001:db8:1::10")},
		LoadBalancerSourceRanges: []netip.Prefix{valPrefix("203.0.113.0/24"), valPrefix("0.0.0.0/0"), valPrefix("2001:db8::/32")},
		SessionAffinity:          SessionAffinityClientIP,
		AffinityTimeoutSeconds:   600,
		ExternalTrafficPolicy:    TrafficPolicyLocal,
		InternalTrafficPolicy:    TrafficPolicyLocal,
		HealthCheckNodePort:      30999,
		Endpoints: []Endpoint{{
			Addr: valAddr("10.244.1.5"), Ports: allPorts(), Ready: true, Serving: true,
			NodeName: "node-1.example.com", Zone: "us-East_1a",
			ZoneHints: []string{"us-East_1a"}, NodeHints: []string{"node-1.example.com"},
		}, {
			Addr: valAddr("10.244.2.6"), Ports: []EndpointPort{{Name: "http", Port: 8080}},
			Serving: true, Terminating: true, NodeName: "node-2", Zone: "zone-b",
		}, {
			Addr: valAddr("fd00:244::5"), Ports: allPorts(), Ready: true,
		}},
	}
}

// validateFieldErrors returns the FieldErrors joined in err, failing t if err holds
// anything else.
func validateFieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	var out []*FieldError
	for _, e := range list {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("Validate() returned %T %v, want *FieldError", e, e)
		}
		out = append(out, fe)
	}
	return out
}

// badCase is a change that makes validState invalid with one error.
type badCase struct {
	name    string
	mut     func(s *State)
	want    string // path of the one error
	wantErr error
}

func valWeb(s *State) *Service              { return &s.Services[0] }
func valAPI(s *State) *Service              { return &s.Services[1] }
func valDNS(s *State) *Service              { return &s.Services[2] }
func valHeadless(s *State) *Service         { return &s.Services[3] }
func valEndpoint(s *State, i int) *Endpoint { return &valWeb(s).Endpoints[i] }

// badIdentityCases returns bad cases of the service identity.
func badIdentityCases() []badCase {
	return []badCase{
		{"namespace empty", func(s *State) { valHeadless(s).Namespace = "" }, "services[3].namespace", ErrRequired},
		{"namespace uppercase", func(s *State) { valHeadless(s).Namespace = "Prod" }, "services[3].namespace", ErrInvalid},
		{"namespace with space", func(s *State) { valHeadless(s).Namespace = "my ns" }, "services[3].namespace", ErrInvalid},
		{"namespace with double quote", func(s *State) { valHeadless(s).Namespace = `ns"` }, "services[3].namespace", ErrInvalid},
		{"namespace with newline", func(s *State) { valHeadless(s).Namespace = "ns\n-A KUBE-SERVICES -j ACCEPT" }, "services[3].namespace", ErrInvalid},
		{"namespace with tab", func(s *State) { valHeadless(s).Namespace = "ns\tx" }, "services[3].namespace", ErrInvalid},
		{"namespace 64 chars", func(s *State) { valHeadless(s).Namespace = strings.Repeat("a", 64) }, "services[3].namespace", ErrInvalid},
		{"namespace leading dash", func(s *State) { valHeadless(s).Namespace = "-ns" }, "services[3].namespace", ErrInvalid},
		{"namespace with slash", func(s *State) { valHeadless(s).Namespace = "a/b" }, "services[3].namespace", ErrInvalid},
		{"name empty", func(s *State) { valHeadless(s).Name = "" }, "services[3].name", ErrRequired},
		{"name with space", func(s *State) { valHeadless(s).Name = "web app" }, "services[3].name", ErrInvalid},
		{"name with single quote", func(s *State) { valHeadless(s).Name = "web'" }, "services[3].name", ErrInvalid},
		{"name with double quote", func(s *State) { valHeadless(s).Name = `"web"` }, "services[3].name", ErrInvalid},
		{"name with newline", func(s *State) { valHeadless(s).Name = "web\nCOMMIT" }, "services[3].name", ErrInvalid},
		{"name with tab", func(s *State) { valHeadless(s).Name = "web\t" }, "services[3].name", ErrInvalid},
		{"name with slash", func(s *State) { valHeadless(s).Name = "web/x" }, "services[3].name", ErrInvalid},
		{"name uppercase", func(s *State) { valHeadless(s).Name = "Web" }, "services[3].name", ErrInvalid},
		{"name 64 chars", func(s *State) { valHeadless(s).Name = strings.Repeat("w", 64) }, "services[3].name", ErrInvalid},
		{"name trailing dash", func(s *State) { valHeadless(s).Name = "web-" }, "services[3].name", ErrInvalid},
		{"name with dot", func(s *State) { valHeadless(s).Name = "web.v1" }, "services[3].name", ErrInvalid},
		{"name with non-ASCII letter", func(s *State) { valHeadless(s).Name = "wéb" }, "services[3].name", ErrInvalid},
		{"name with NUL", func(s *State) { valHeadless(s).Name = "web\x00" }, "services[3].name", ErrInvalid},
		{"duplicate service", func(s *State) { s.Services = append(s.Services, Service{Namespace: "ns", Name: "web"}) }, "services[4]", ErrDuplicate},
		{"unknown type", func(s *State) { valHeadless(s).Type = "ExternalName" }, "services[ns/headless].type", ErrInvalid},
	}
}

// badPortCases returns bad cases of service ports, node ports and health checks.
func badPortCases() []badCase {
	return []badCase{
		{"port name empty with two ports", func(s *State) { valHeadless(s).Ports = append(valHeadless(s).Ports, ServicePort{Port: 81}) }, "services[ns/headless].ports[1].name", ErrRequired},
		{"port name uppercase", func(s *State) { valHeadless(s).Ports[0].Name = "HTTP" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name 16 chars", func(s *State) { valHeadless(s).Ports[0].Name = "abcdefghijklmnop" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name double dash", func(s *State) { valHeadless(s).Ports[0].Name = "h--p" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name without letter", func(s *State) { valHeadless(s).Ports[0].Name = "8080" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name with space", func(s *State) { valHeadless(s).Ports[0].Name = "my port" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name with newline", func(s *State) { valHeadless(s).Ports[0].Name = "http\n" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"port name leading dash", func(s *State) { valHeadless(s).Ports[0].Name = "-http" }, "services[ns/headless].ports[0].name", ErrInvalid},
		{"duplicate port name", func(s *State) {
			valHeadless(s).Ports = append(valHeadless(s).Ports, ServicePort{Name: "http", Port: 81})
		}, "services[ns/headless].ports[1].name", ErrDuplicate},
		{"duplicate port and defaulted protocol", func(s *State) {
			valHeadless(s).Ports = append(valHeadless(s).Ports, ServicePort{Name: "alt", Protocol: ProtocolTCP, Port: 80})
		}, "services[ns/headless].ports[alt].port", ErrDuplicate},
		{"unknown protocol", func(s *State) { valHeadless(s).Ports[0].Protocol = "tcp" }, "services[ns/headless].ports[http].protocol", ErrInvalid},
		{"port zero", func(s *State) { valHeadless(s).Ports[0].Port = 0 }, "services[ns/headless].ports[http].port", ErrOutOfRange},
		{"port 65536", func(s *State) { valHeadless(s).Ports[0].Port = 65536 }, "services[ns/headless].ports[http].port", ErrOutOfRange},
		{"port negative", func(s *State) { valHeadless(s).Ports[0].Port = -80 }, "services[ns/headless].ports[http].port", ErrOutOfRange},
		{"target port 70000", func(s *State) { valHeadless(s).Ports[0].TargetPort = 70000 }, "services[ns/headless].ports[http].targetPort", ErrOutOfRange},
		{"target port negative", func(s *State) { valHeadless(s).Ports[0].TargetPort = -1 }, "services[ns/headless].ports[http].targetPort", ErrOutOfRange},
		{"target port name invalid", func(s *State) { valHeadless(s).Ports[0].TargetPortName = "Web Port" }, "services[ns/headless].ports[http].targetPortName", ErrInvalid},
		{"target port name and number", func(s *State) { valWeb(s).Ports[1].TargetPort = 8443 }, "services[ns/web].ports[https].targetPortName", ErrForbidden},
		{"node port on ClusterIP service", func(s *State) { valHeadless(s).Ports[0].NodePort = 30100 }, "services[ns/headless].ports[http].nodePort", ErrForbidden},
		{"node port out of default range", func(s *State) { valWeb(s).Ports[0].NodePort = 99999 }, "services[ns/web].ports[http].nodePort", ErrOutOfRange},
		{"node port out of configured range", func(s *State) { s.Config.NodePortRange = PortRange{Min: 30000, Max: 31000} }, "services[ns/api].ports[0].nodePort", ErrOutOfRange},
		{"node port shared across services", func(s *State) { valAPI(s).Ports[0].NodePort = 30080 }, "services[ns/api].ports[0].nodePort", ErrDuplicate},
		{"node port shared within service", func(s *State) { valWeb(s).Ports[1].NodePort = 30080 }, "services[ns/web].ports[https].nodePort", ErrDuplicate},
		{"health check port with Cluster policy", func(s *State) { valWeb(s).ExternalTrafficPolicy = TrafficPolicyCluster }, "services[ns/web].healthCheckNodePort", ErrForbidden},
		{"health check port on NodePort service", func(s *State) {
			valAPI(s).ExternalTrafficPolicy = TrafficPolicyLocal
			valAPI(s).HealthCheckNodePort = 31999
		}, "services[ns/api].healthCheckNodePort", ErrForbidden},
		{"health check port 70000", func(s *State) { valWeb(s).HealthCheckNodePort = 70000 }, "services[ns/web].healthCheckNodePort", ErrOutOfRange},
		{"health check port negative", func(s *State) { valWeb(s).HealthCheckNodePort = -1 }, "services[ns/web].healthCheckNodePort", ErrOutOfRange},
		{"health check port is a node port", func(s *State) { valWeb(s).HealthCheckNodePort = 30443 }, "services[ns/web].healthCheckNodePort", ErrDuplicate},
	}
}

// badServiceFieldCases returns bad cases of service addresses, affinity and traffic policies.
func badServiceFieldCases() []badCase {
	return []badCase{
		{"cluster IP zero", func(s *State) { valWeb(s).ClusterIPs[1] = netip.Addr{} }, "services[ns/web].clusterIPs[1]", ErrInvalid},
		{"cluster IP IPv4-mapped", func(s *State) { valDNS(s).ClusterIPs[0] = valAddr("::ffff:10.96.0.53") }, "services[kube-system/kube-dns].clusterIPs[0]", ErrInvalid},
		{"cluster IP unspecified", func(s *State) { valWeb(s).ClusterIPs[1] = valAddr("::") }, "services[ns/web].clusterIPs[1]", ErrInvalid},
		{"cluster IP with zone", func(s *State) { valWeb(s).ClusterIPs[1] = valAddr("fe80::1").WithZone("eth0 -j ACCEPT") }, "services[ns/web].clusterIPs[1]", ErrInvalid},
		{"two IPv4 cluster IPs", func(s *State) { valDNS(s).ClusterIPs = append(valDNS(s).ClusterIPs, valAddr("10.96.0.54")) }, "services[kube-system/kube-dns].clusterIPs[1]", ErrDuplicate},
		{"cluster IP shared across services", func(s *State) { valAPI(s).ClusterIPs[0] = valAddr("10.96.0.10") }, "services[ns/api].clusterIPs[0]", ErrDuplicate},
		{"external IP zero", func(s *State) { valWeb(s).ExternalIPs[0] = netip.Addr{} }, "services[ns/web].externalIPs[0]", ErrInvalid},
		{"external IP unspecified", func(s *State) { valWeb(s).ExternalIPs[0] = valAddr("0.0.0.0") }, "services[ns/web].externalIPs[0]", ErrInvalid},
		{"external IP repeated", func(s *State) { valWeb(s).ExternalIPs = append(valWeb(s).ExternalIPs, valAddr("203.0.113.10")) }, "services[ns/web].externalIPs[2]", ErrDuplicate},
		{"load balancer IPs on NodePort service", func(s *State) { valAPI(s).LoadBalancerIPs = []netip.Addr{valAddr("198.51.100.20")} }, "services[ns/api].loadBalancerIPs", ErrForbidden},
		{"load balancer IP IPv4-mapped", func(s *State) { valWeb(s).LoadBalancerIPs[1] = valAddr("::ffff:198.51.100.11") }, "services[ns/web].loadBalancerIPs[1]", ErrInvalid},
		{"load balancer IP unspecified", func(s *State) { valWeb(s).LoadBalancerIPs[0] = valAddr("0.0.0.0") }, "services[ns/web].loadBalancerIPs[0]", ErrInvalid},
		{"source range zero", func(s *State) { valWeb(s).LoadBalancerSourceRanges[0] = netip.Prefix{} }, "services[ns/web].loadBalancerSourceRanges[0]", ErrInvalid},
		{"source range not masked", func(s *State) { valWeb(s).LoadBalancerSourceRanges[0] = valPrefix("10.0.0.1/8") }, "services[ns/web].loadBalancerSourceRanges[0]", ErrInvalid},
		{"source range IPv4-mapped", func(s *State) { valWeb(s).LoadBalancerSourceRanges[0] = valPrefix("::ffff:10.0.0.0/104") }, "services[ns/web].loadBalancerSourceRanges[0]", ErrInvalid},
		{"source ranges on NodePort service", func(s *State) {
			valAPI(s).LoadBalancerSourceRanges = []netip.Prefix{valPrefix("10.0.0.0/8")}
		}, "services[ns/api].loadBalancerSourceRanges", ErrForbidden},
		{"unknown session affinity", func(s *State) { valWeb(s).SessionAffinity = "clientip" }, "services[ns/web].sessionAffinity", ErrInvalid},
		{"affinity timeout negative", func(s *State) { valWeb(s).AffinityTimeoutSeconds = -1 }, "services[ns/web].affinityTimeoutSeconds", ErrOutOfRange},
		{"affinity timeout over a day", func(s *State) { valWeb(s).AffinityTimeoutSeconds = 86401 }, "services[ns/web].affinityTimeoutSeconds", ErrOutOfRange},
		{"affinity timeout without ClientIP", func(s *State) { valDNS(s).AffinityTimeoutSeconds = 60 }, "services[kube-system/kube-dns].affinityTimeoutSeconds", ErrForbidden},
		{"unknown external traffic policy", func(s *State) { valAPI(s).ExternalTrafficPolicy = "local" }, "services[ns/api].externalTrafficPolicy", ErrInvalid},
		{"unknown internal traffic policy", func(s *State) { valAPI(s).InternalTrafficPolicy = "Topology" }, "services[ns/api].internalTrafficPolicy", ErrInvalid},
	}
}

// badEndpointCases returns bad cases of endpoints.
func badEndpointCases() []badCase {
	return []badCase{
		{"endpoint address zero", func(s *State) { valEndpoint(s, 1).Addr = netip.Addr{} }, "services[ns/web].endpoints[1].addr", ErrInvalid},
		{"endpoint address unspecified", func(s *State) { valEndpoint(s, 1).Addr = valAddr("0.0.0.0") }, "services[ns/web].endpoints[1].addr", ErrInvalid},
		{"endpoint address with zone", func(s *State) { valEndpoint(s, 2).Addr = valAddr("fe80::5").WithZone("x\"\n") }, "services[ns/web].endpoints[2].addr", ErrInvalid},
		{"endpoint address IPv4-mapped", func(s *State) { valEndpoint(s, 1).Addr = valAddr("::ffff:10.244.2.6") }, "services[ns/web].endpoints[1].addr", ErrInvalid},
		{"endpoint port of no service port", func(s *State) {
			valEndpoint(s, 1).Ports = append(valEndpoint(s, 1).Ports, EndpointPort{Name: "metrics", Port: 9090})
		}, "services[ns/web].endpoints[10.244.2.6].ports[metrics].name", ErrInvalid},
		{"endpoint port name with newline", func(s *State) {
			valEndpoint(s, 1).Ports = append(valEndpoint(s, 1).Ports, EndpointPort{Name: "http\n-j ACCEPT", Port: 1})
		}, "services[ns/web].endpoints[10.244.2.6].ports[1].name", ErrInvalid},
		{"endpoint port zero", func(s *State) { valEndpoint(s, 1).Ports[0].Port = 0 }, "services[ns/web].endpoints[10.244.2.6].ports[http].port", ErrOutOfRange},
		{"endpoint port 65536", func(s *State) { valEndpoint(s, 1).Ports[0].Port = 65536 }, "services[ns/web].endpoints[10.244.2.6].ports[http].port", ErrOutOfRange},
		{"endpoint port name repeated", func(s *State) {
			valEndpoint(s, 1).Ports = append(valEndpoint(s, 1).Ports, EndpointPort{Name: "http", Port: 8081})
		}, "services[ns/web].endpoints[10.244.2.6].ports[1].name", ErrDuplicate},
		{"endpoint repeated", func(s *State) {
			valWeb(s).Endpoints = append(valWeb(s).Endpoints, Endpoint{Addr: valAddr("10.244.2.6"), Ports: []EndpointPort{{Name: "http", Port: 8080}}})
		}, "services[ns/web].endpoints[3].ports[http]", ErrDuplicate},
		{"endpoint node name uppercase", func(s *State) { valEndpoint(s, 1).NodeName = "Node-2" }, "services[ns/web].endpoints[10.244.2.6].nodeName", ErrInvalid},
		{"endpoint node name with space", func(s *State) { valEndpoint(s, 1).NodeName = "node 2" }, "services[ns/web].endpoints[10.244.2.6].nodeName", ErrInvalid},
		{"endpoint zone with space", func(s *State) { valEndpoint(s, 1).Zone = "zone b" }, "services[ns/web].endpoints[10.244.2.6].zone", ErrInvalid},
		{"endpoint zone with newline", func(s *State) { valEndpoint(s, 1).Zone = "zone\nb" }, "services[ns/web].endpoints[10.244.2.6].zone", ErrInvalid},
		{"endpoint zone 64 chars", func(s *State) { valEndpoint(s, 1).Zone = strings.Repeat("Z", 64) }, "services[ns/web].endpoints[10.244.2.6].zone", ErrInvalid},
		{"endpoint zone hint with quote", func(s *State) { valEndpoint(s, 0).ZoneHints[0] = `us-east"` }, "services[ns/web].endpoints[10.244.1.5].zoneHints[0]", ErrInvalid},
		{"endpoint zone hint empty", func(s *State) { valEndpoint(s, 0).ZoneHints[0] = "" }, "services[ns/web].endpoints[10.244.1.5].zoneHints[0]", ErrRequired},
		{"endpoint node hint with space", func(s *State) { valEndpoint(s, 0).NodeHints[0] = "node 1" }, "services[ns/web].endpoints[10.244.1.5].nodeHints[0]", ErrInvalid},
		{"endpoint node hint empty", func(s *State) { valEndpoint(s, 0).NodeHints[0] = "" }, "services[ns/web].endpoints[10.244.1.5].nodeHints[0]", ErrRequired},
	}
}

// badNodeConfigCases returns bad cases of the node and the config.
func badNodeConfigCases() []badCase {
	return []badCase{
		{"node name with space", func(s *State) { s.Node.Name = "node 1" }, "node.name", ErrInvalid},
		{"node name uppercase", func(s *State) { s.Node.Name = "Node1" }, "node.name", ErrInvalid},
		{"node name with empty label", func(s *State) { s.Node.Name = "node..example" }, "node.name", ErrInvalid},
		{"node name 254 chars", func(s *State) { s.Node.Name = strings.Repeat("a.", 126) + "ab" }, "node.name", ErrInvalid},
		{"node IP zero", func(s *State) { s.Node.IPs[0] = netip.Addr{} }, "node.ips[0]", ErrInvalid},
		{"node IP unspecified", func(s *State) { s.Node.IPs[1] = valAddr("::") }, "node.ips[1]", ErrInvalid},
		{"node IP repeated", func(s *State) { s.Node.IPs = append(s.Node.IPs, valAddr("192.168.1.10")) }, "node.ips[2]", ErrDuplicate},
		{"node IP with zone", func(s *State) { s.Node.IPs[1] = valAddr("fe80::10%eth0") }, "node.ips[1]", ErrInvalid},
		{"node zone with quote", func(s *State) { s.Node.Zone = "zone'a" }, "node.zone", ErrInvalid},
		{"cluster CIDR zero", func(s *State) { s.Config.ClusterCIDRs[0] = netip.Prefix{} }, "config.clusterCIDRs[0]", ErrInvalid},
		{"two IPv4 cluster CIDRs", func(s *State) {
			s.Config.ClusterCIDRs = append(s.Config.ClusterCIDRs, valPrefix("10.245.0.0/16"))
		}, "config.clusterCIDRs[2]", ErrDuplicate},
		{"cluster CIDR not masked", func(s *State) { s.Config.ClusterCIDRs[0] = valPrefix("10.244.0.1/16") }, "config.clusterCIDRs[0]", ErrInvalid},
		{"masquerade bit 32", func(s *State) { b := 32; s.Config.MasqueradeBit = &b }, "config.masqueradeBit", ErrOutOfRange},
		{"masquerade bit negative", func(s *State) { b := -1; s.Config.MasqueradeBit = &b }, "config.masqueradeBit", ErrOutOfRange},
		{"node port address zero", func(s *State) { s.Config.NodePortAddresses[0] = netip.Prefix{} }, "config.nodePortAddresses[0]", ErrInvalid},
		{"node port address not masked", func(s *State) { s.Config.NodePortAddresses[1] = valPrefix("fd00:1::1/64") }, "config.nodePortAddresses[1]", ErrInvalid},
		{"node port range reversed", func(s *State) { s.Config.NodePortRange = PortRange{Min: 32767, Max: 30000} }, "config.nodePortRange", ErrInvalid},
		{"node port range above 65535", func(s *State) { s.Config.NodePortRange = PortRange{Min: 30000, Max: 70000} }, "config.nodePortRange", ErrOutOfRange},
		{"node port range from zero", func(s *State) { s.Config.NodePortRange = PortRange{Max: 32767} }, "config.nodePortRange", ErrOutOfRange},
	}
}

func TestValidateBad(t *testing.T) {
	var tests []badCase
	for _, cases := range [][]badCase{badIdentityCases(), badPortCases(), badServiceFieldCases(), badEndpointCases(), badNodeConfigCases()} {
		tests = append(tests, cases...)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validState()
			tt.mut(&s)
			err := s.Validate()
			errs := validateFieldErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("Validate() = %v, want one error at %s", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want+": ") || errs[0].Path != tt.want {
				t.Errorf("Validate() = %v, want path %s", err, tt.want)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Validate() = %v, want errors.Is %v", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Validate() = %q, want no raw newline", err)
			}
		})
	}
}

func TestValidateGood(t *testing.T) {
	tests := []struct {
		name string
		mut  func(s *State)
	}{
		{"rich", func(s *State) {}},
		{"custom node port range", func(s *State) { s.Config.NodePortRange = PortRange{Min: 30000, Max: 31999} }},
		{"full node port range", func(s *State) { s.Config.NodePortRange = PortRange{Min: 1, Max: 65535} }},
		{"masquerade bit 0", func(s *State) { b := 0; s.Config.MasqueradeBit = &b }},
		{"masquerade bit 31", func(s *State) { b := 31; s.Config.MasqueradeBit = &b }},
		{"no node name and no node IPs", func(s *State) { s.Node = Node{} }},
		{"endpoint address again with another port number", func(s *State) {
			s.Services[0].Endpoints = append(s.Services[0].Endpoints, Endpoint{Addr: valAddr("10.244.2.6"), Ports: []EndpointPort{{Name: "http", Port: 8081}}})
		}},
		{"endpoint address again with another port name", func(s *State) {
			s.Services[0].Endpoints = append(s.Services[0].Endpoints, Endpoint{Addr: valAddr("10.244.2.6"), Ports: []EndpointPort{{Name: "https", Port: 8443}}})
		}},
		{"endpoint of a family without cluster IP", func(s *State) {
			s.Services[0].ClusterIPs = s.Services[0].ClusterIPs[:1]
		}},
		{"longest names", func(s *State) {
			s.Services[3].Namespace = strings.Repeat("n", 63)
			s.Services[3].Name = "1" + strings.Repeat("a", 61) + "9"
			s.Services[3].Ports[0].Name = "a" + strings.Repeat("-b", 7)
			s.Node.Name = strings.Repeat("a.", 125) + "abc"
		}},
		{"bare service", func(s *State) { s.Services = append(s.Services, Service{Namespace: "a", Name: "b"}) }},
		{"affinity timeout at the maximum", func(s *State) { s.Services[0].AffinityTimeoutSeconds = MaxAffinityTimeoutSeconds }},
		{"external IP of another service's cluster IP family", func(s *State) {
			s.Services[2].ExternalIPs = []netip.Addr{valAddr("2001:db8::53")}
		}},
		{"load balancer without node ports", func(s *State) {
			for i := range s.Services[0].Ports {
				s.Services[0].Ports[i].NodePort = 0
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validState()
			tt.mut(&s)
			if err := s.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
	if err := (&State{}).Validate(); err != nil {
		t.Errorf("zero State: Validate() = %v, want nil", err)
	}
	if err := (*State)(nil).Validate(); err != nil {
		t.Errorf("nil State: Validate() = %v, want nil", err)
	}
}

func TestValidateMessages(t *testing.T) {
	tests := []struct {
		name string
		mut  func(s *State)
		want string
	}{
		{"node port", func(s *State) { s.Services[0].Ports[0].NodePort = 99999 },
			"services[ns/web].ports[http].nodePort: 99999 out of range 30000-32767"},
		{"endpoint port", func(s *State) { s.Services[0].Endpoints[0].Ports[0].Port = 0 },
			"services[ns/web].endpoints[10.244.1.5].ports[http].port: 0 out of range 1-65535"},
		{"source range", func(s *State) { s.Services[0].LoadBalancerSourceRanges[0] = valPrefix("10.0.0.1/8") },
			"services[ns/web].loadBalancerSourceRanges[0]: invalid prefix 10.0.0.1/8: not a network address; did you mean 10.0.0.0/8"},
		{"name with newline", func(s *State) { s.Services[3].Name = "a\nb" },
			`services[3].name: invalid DNS-1123 label "a\nb": character '\n' not allowed; use lowercase letters, digits and '-'`},
		{"mapped address", func(s *State) { s.Node.IPs[0] = valAddr("::ffff:192.168.1.10") },
			"node.ips[0]: invalid address ::ffff:192.168.1.10: IPv4-mapped IPv6; use 192.168.1.10"},
		{"shared cluster IP", func(s *State) { s.Services[1].ClusterIPs[0] = valAddr("10.96.0.10") },
			"services[ns/api].clusterIPs[0]: duplicate cluster IP 10.96.0.10 (also services[ns/web].clusterIPs[0])"},
		{"shared node port", func(s *State) { s.Services[1].Ports[0].NodePort = 30080 },
			"services[ns/api].ports[0].nodePort: duplicate TCP node port 30080 (also services[ns/web].ports[http].nodePort)"},
		{"zoned endpoint", func(s *State) { s.Services[0].Endpoints[2].Addr = valAddr("fe80::5").WithZone("x\n") },
			`services[ns/web].endpoints[2].addr: invalid address "fe80::5%x\n": has an IPv6 zone`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validState()
			tt.mut(&s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("Validate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s := validState()
	s.Node.IPs[0] = netip.Addr{}
	s.Services[0].Ports[0].NodePort = 99999
	s.Services[3].Name = "Bad Name"
	errs := validateFieldErrors(t, s.Validate())
	var got []string
	for _, e := range errs {
		got = append(got, e.Path)
	}
	want := []string{"node.ips[0]", "services[ns/web].ports[http].nodePort", "services[3].name"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate() paths mismatch (-want +got):\n%s", diff)
	}
}

func TestFieldError(t *testing.T) {
	err := error(&FieldError{Path: "node.ips[0]", Err: ErrInvalid})
	if got, want := err.Error(), "node.ips[0]: invalid"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrDuplicate) {
		t.Errorf("errors.Is(%v) wrong: want ErrInvalid only", err)
	}
	var fe *FieldError
	if !errors.As(errors.Join(errors.New("other"), err), &fe) || fe.Path != "node.ips[0]" {
		t.Errorf("errors.As found %v, want the FieldError", fe)
	}
}
