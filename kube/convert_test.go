package kube

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/proxy"
)

// cmpNet compares netip values, whose fields are unexported, by value.
func cmpNet() cmp.Options {
	return cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	}
}

func mustRead(t *testing.T, stream string) *Objects {
	t.Helper()
	objs, _, err := Read(strings.NewReader(stream))
	if err != nil {
		t.Fatalf("Read() error = %v", err)
	}
	return objs
}

// nonNodeWarnings are the warnings that are not about Node objects.
func nonNodeWarnings(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		if w.Kind != kindNode {
			out = append(out, w.String())
		}
	}
	return out
}

func warnStrings(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// svc returns a Service document in namespace ns; body holds its spec and
// status at the top level.
func svc(name, body string) string {
	return "---\napiVersion: v1\nkind: Service\nmetadata: {name: " + name + ", namespace: ns}\n" + body + "\n"
}

// slice returns an EndpointSlice document for service service in namespace
// ns; body holds its addressType, endpoints and ports.
func slice(name, service, body string) string {
	return "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " + name +
		", namespace: ns, labels: {kubernetes.io/service-name: " + service + "}}\n" + body + "\n"
}

func TestStateForServices(t *testing.T) {
	tests := []struct {
		name      string
		stream    string
		want      []proxy.Service
		wantWarns []string
	}{
		{
			name: "cluster IP with a named target port",
			stream: svc("web", `spec:
  type: ClusterIP
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: http}]
  sessionAffinity: None`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "web", Type: proxy.ServiceTypeClusterIP,
				ClusterIPs:      addrs("10.96.0.20"),
				Ports:           []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, TargetPortName: "http"}},
				SessionAffinity: proxy.SessionAffinityNone,
			}},
		},
		{
			name:   "spec.clusterIP alone, no type, no target port",
			stream: svc("web", `spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "web", ClusterIPs: addrs("10.96.0.20"),
				Ports: []proxy.ServicePort{{Port: 80}},
			}},
		},
		{
			name: "node port with local policies and affinity",
			stream: svc("np", `spec:
  type: NodePort
  clusterIPs: [10.96.0.30]
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "np", Type: proxy.ServiceTypeNodePort,
				ClusterIPs:             addrs("10.96.0.30"),
				Ports:                  []proxy.ServicePort{{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53, TargetPort: 5353, NodePort: 30053}},
				ExternalTrafficPolicy:  proxy.TrafficPolicyLocal,
				InternalTrafficPolicy:  proxy.TrafficPolicyLocal,
				SessionAffinity:        proxy.SessionAffinityClientIP,
				AffinityTimeoutSeconds: 600,
			}},
		},
		{
			name: "load balancer: VIP ingress kept, Proxy ingress and hostname left out",
			stream: svc("lb", `spec:
  type: LoadBalancer
  clusterIPs: [10.96.0.40]
  ports: [{port: 443, nodePort: 30443}]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  loadBalancerSourceRanges: [" 203.0.113.0/24 ", "2001:db8::/32"]
status:
  loadBalancer:
    ingress:
    - {ip: 192.0.2.10}
    - {ip: 192.0.2.11, ipMode: Proxy}
    - {ip: "2001:db8::10", ipMode: VIP}
    - {hostname: lb.example.com}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "lb", Type: proxy.ServiceTypeLoadBalancer,
				ClusterIPs:               addrs("10.96.0.40"),
				Ports:                    []proxy.ServicePort{{Port: 443, NodePort: 30443}},
				LoadBalancerIPs:          addrs("192.0.2.10", "2001:db8::10"),
				LoadBalancerSourceRanges: prefixes("203.0.113.0/24", "2001:db8::/32"),
				ExternalTrafficPolicy:    proxy.TrafficPolicyLocal,
				HealthCheckNodePort:      32000,
			}},
			wantWarns: []string{`document 1 (line 2): Service ns/lb: status.loadBalancer.ingress[3]: hostname "lb.example.com" has no IP; left out`},
		},
		{
			name: "source ranges from the annotation when the field is empty",
			stream: "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: ns\n  annotations:\n" +
				"    service.beta.kubernetes.io/load-balancer-source-ranges: \" 198.51.100.0/24 ,10.1.2.3/8\"\n" +
				"spec: {type: LoadBalancer, clusterIP: 10.96.0.41, ports: [{port: 80}]}\n",
			want: []proxy.Service{{
				Namespace: "ns", Name: "lb", Type: proxy.ServiceTypeLoadBalancer,
				ClusterIPs:               addrs("10.96.0.41"),
				Ports:                    []proxy.ServicePort{{Port: 80}},
				LoadBalancerSourceRanges: prefixes("198.51.100.0/24", "10.0.0.0/8"),
			}},
		},
		{
			name:   "the field wins over the annotation",
			stream: "---\napiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: ns, annotations: {service.beta.kubernetes.io/load-balancer-source-ranges: 10.0.0.0/8}}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.41, ports: [{port: 80}], loadBalancerSourceRanges: [192.0.2.0/24]}\n",
			want: []proxy.Service{{
				Namespace: "ns", Name: "lb", Type: proxy.ServiceTypeLoadBalancer,
				ClusterIPs:               addrs("10.96.0.41"),
				Ports:                    []proxy.ServicePort{{Port: 80}},
				LoadBalancerSourceRanges: prefixes("192.0.2.0/24"),
			}},
		},
		{
			name: "ingress of a service that is not a LoadBalancer",
			stream: svc("c", `spec: {clusterIP: 10.96.0.42, ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}`),
			want: []proxy.Service{{Namespace: "ns", Name: "c", ClusterIPs: addrs("10.96.0.42"), Ports: []proxy.ServicePort{{Port: 80}}}},
			wantWarns: []string{
				"document 1 (line 2): Service ns/c: status.loadBalancer.ingress ignored: type is not LoadBalancer",
			},
		},
		{
			name:   "external IPs",
			stream: svc("ext", `spec: {clusterIP: 10.96.0.43, ports: [{port: 80}], externalIPs: [198.51.100.7, "2001:db8::7"]}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "ext", ClusterIPs: addrs("10.96.0.43"), Ports: []proxy.ServicePort{{Port: 80}},
				ExternalIPs: addrs("198.51.100.7", "2001:db8::7"),
			}},
		},
		{
			name: "dual-stack",
			stream: svc("dual", `spec:
  clusterIP: fd00:96::50
  clusterIPs: ["fd00:96::50", 10.96.0.50]
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80}]`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "dual", ClusterIPs: addrs("fd00:96::50", "10.96.0.50"),
				Ports: []proxy.ServicePort{{Name: "http", Port: 80}},
			}},
		},
		{
			name: "unparseable addresses are left out with a warning each",
			stream: svc("bad", `spec:
  type: LoadBalancer
  clusterIPs: [10.96.0.44, "fd00::zz"]
  ports: [{port: 80}]
  externalIPs: [198.51.100.300, "fe80::1%eth0", 010.001.002.003]
  loadBalancerSourceRanges: [10.0.0.0/33, 192.0.2.0]
status: {loadBalancer: {ingress: [{ip: not-an-ip}]}}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "bad", Type: proxy.ServiceTypeLoadBalancer,
				ClusterIPs: addrs("10.96.0.44"), Ports: []proxy.ServicePort{{Port: 80}},
				ExternalIPs: addrs("10.1.2.3"),
			}},
			wantWarns: []string{
				`document 1 (line 2): Service ns/bad: spec.clusterIPs[1]: "fd00::zz" is not an IP address; left out`,
				`document 1 (line 2): Service ns/bad: spec.externalIPs[0]: "198.51.100.300" is not an IP address; left out`,
				`document 1 (line 2): Service ns/bad: spec.externalIPs[1]: "fe80::1%eth0" is not an IP address; left out`,
				`document 1 (line 2): Service ns/bad: status.loadBalancer.ingress[0].ip: "not-an-ip" is not an IP address; left out`,
				`document 1 (line 2): Service ns/bad: spec.loadBalancerSourceRanges[0]: "10.0.0.0/33" is not a CIDR: prefix length 33 is too long; left out`,
				`document 1 (line 2): Service ns/bad: spec.loadBalancerSourceRanges[1]: "192.0.2.0" is not a CIDR; left out`,
			},
		},
		{
			name:      "ExternalName is skipped with a warning",
			stream:    svc("ext", `spec: {type: ExternalName, externalName: db.example.com}`),
			wantWarns: []string{"document 1 (line 2): Service ns/ext: type ExternalName has no proxy rules; skipped"},
		},
		{
			name: "a service for another proxy is skipped with a warning",
			stream: "---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: ns, labels: {service.kubernetes.io/service-proxy-name: cilium}}\n" +
				"spec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}\n",
			wantWarns: []string{`document 1 (line 2): Service ns/other: label service.kubernetes.io/service-proxy-name="cilium" hands it to another proxy; skipped`},
		},
		{
			name:   "headless is skipped quietly",
			stream: svc("db", `spec: {clusterIP: None, clusterIPs: [None], ports: [{port: 5432}]}`) + svc("db2", `spec: {clusterIP: None}`),
		},
		{
			name:      "no cluster IP",
			stream:    svc("nox", `spec: {ports: [{port: 80}]}`) + svc("bad", `spec: {clusterIP: 10.96.0.500}`),
			wantWarns: []string{"document 1 (line 2): Service ns/nox: no spec.clusterIP; skipped", `document 2 (line 7): Service ns/bad: spec.clusterIP: "10.96.0.500" is not an IP address; skipped`},
		},
		{
			name:   "values outside the closed sets pass through for Validate",
			stream: svc("odd", `spec: {type: Weird, clusterIP: 10.96.0.45, ports: [{port: 80, protocol: ICMP}], sessionAffinity: Sometimes, externalTrafficPolicy: Global}`),
			want: []proxy.Service{{
				Namespace: "ns", Name: "odd", Type: "Weird", ClusterIPs: addrs("10.96.0.45"),
				Ports:           []proxy.ServicePort{{Port: 80, Protocol: "ICMP"}},
				SessionAffinity: "Sometimes", ExternalTrafficPolicy: "Global",
			}},
		},
		{
			name:      "a service twice: the last one is used",
			stream:    svc("w", `spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}`) + svc("w", `spec: {clusterIP: 10.96.0.2, ports: [{port: 81}]}`),
			want:      []proxy.Service{{Namespace: "ns", Name: "w", ClusterIPs: addrs("10.96.0.2"), Ports: []proxy.ServicePort{{Port: 81}}}},
			wantWarns: []string{"document 2 (line 7): Service ns/w: appears more than once; the last one is used"},
		},
		{
			name: "sorted by namespace and name",
			stream: svc("b", `spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}`) + svc("a", `spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}`) +
				"---\napiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: aaa}\nspec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}\n",
			want: []proxy.Service{
				{Namespace: "aaa", Name: "z", ClusterIPs: addrs("10.96.0.3"), Ports: []proxy.ServicePort{{Port: 80}}},
				{Namespace: "ns", Name: "a", ClusterIPs: addrs("10.96.0.1"), Ports: []proxy.ServicePort{{Port: 80}}},
				{Namespace: "ns", Name: "b", ClusterIPs: addrs("10.96.0.2"), Ports: []proxy.ServicePort{{Port: 80}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, warns, err := StateFor(mustRead(t, tt.stream), "node-a")
			if err != nil {
				t.Fatalf("StateFor() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, st.Services, cmpNet()); diff != "" {
				t.Errorf("StateFor().Services mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarns, nonNodeWarnings(warns)); diff != "" {
				t.Errorf("StateFor() warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStateForEndpoints(t *testing.T) {
	base := svc("web", `spec: {clusterIPs: [10.96.0.20, "fd00:96::20"], ports: [{name: http, port: 80}, {name: metrics, port: 9090}]}`)
	tests := []struct {
		name      string
		stream    string
		want      []proxy.Endpoint
		wantWarns []string
	}{
		{
			name: "conditions, node, zone and hints",
			stream: base + slice("web-1", "web", `addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  nodeName: node-a
  zone: zone-a
  hints: {forZones: [{name: zone-a}, {name: zone-b}], forNodes: [{name: node-a}]}
- addresses: [10.244.2.6]
  conditions: {ready: false}
- addresses: [10.244.2.7, 10.244.2.99]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.244.2.8]
  conditions: {ready: true, serving: false}
ports: [{name: http, port: 8080, protocol: TCP}, {name: metrics, port: 9090}]`),
			want: []proxy.Endpoint{
				{Addr: netip.MustParseAddr("10.244.1.5"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
					Ready: true, Serving: true, NodeName: "node-a", Zone: "zone-a", ZoneHints: []string{"zone-a", "zone-b"}, NodeHints: []string{"node-a"}},
				{Addr: netip.MustParseAddr("10.244.2.6"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}}},
				{Addr: netip.MustParseAddr("10.244.2.7"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
					Serving: true, Terminating: true},
				{Addr: netip.MustParseAddr("10.244.2.8"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
					Ready: true},
			},
		},
		{
			name: "an unnamed port, a port without a number",
			stream: svc("one", `spec: {clusterIP: 10.96.0.21, ports: [{port: 80}]}`) + slice("one-1", "one", `addressType: IPv4
endpoints: [{addresses: [10.244.1.9]}]
ports: [{port: 8080}, {name: nil}, {name: zero, port: 0}]`),
			want: []proxy.Endpoint{{Addr: netip.MustParseAddr("10.244.1.9"), Ports: []proxy.EndpointPort{{Port: 8080}}, Ready: true, Serving: true}},
			wantWarns: []string{
				"document 2 (line 7): EndpointSlice ns/one-1: ports[1]: no port number; left out",
				"document 2 (line 7): EndpointSlice ns/one-1: ports[2]: no port number; left out",
			},
		},
		{
			name: "two slices of both families merge, sorted by address",
			stream: base + slice("web-b", "web", `addressType: IPv6
endpoints: [{addresses: ["fd00:244::5"]}]
ports: [{name: http, port: 8080}]`) + slice("web-a", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.2.1]}, {addresses: [10.244.1.1]}]
ports: [{name: http, port: 8080}]`),
			want: []proxy.Endpoint{
				{Addr: netip.MustParseAddr("10.244.1.1"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, Serving: true},
				{Addr: netip.MustParseAddr("10.244.2.1"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, Serving: true},
				{Addr: netip.MustParseAddr("fd00:244::5"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, Serving: true},
			},
		},
		{
			name: "one address in two slices: the local one wins, ports merge",
			stream: base + slice("web-1", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: node-b, conditions: {ready: false}}]
ports: [{name: http, port: 8080}, {name: metrics, port: 9191}]`) + slice("web-2", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: node-a}]
ports: [{name: metrics, port: 9090}]`),
			want: []proxy.Endpoint{{
				Addr: netip.MustParseAddr("10.244.1.5"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
				Ready: true, Serving: true, NodeName: "node-a",
			}},
			wantWarns: []string{`document 3 (line 14): EndpointSlice ns/web-2: endpoint 10.244.1.5: port "metrics" is 9090 in one slice and 9191 in another; 9090 is used`},
		},
		{
			name: "one address in two slices, neither local: the first slice by name wins",
			stream: base + slice("web-2", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: node-c}]
ports: [{name: http, port: 8080}]`) + slice("web-1", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: node-b}]
ports: [{name: http, port: 8080}]`),
			want: []proxy.Endpoint{{
				Addr: netip.MustParseAddr("10.244.1.5"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}},
				Ready: true, Serving: true, NodeName: "node-b",
			}},
		},
		{
			name: "FQDN slices, bad addresses and empty endpoints are skipped with warnings",
			stream: base + slice("web-fqdn", "web", `addressType: FQDN
endpoints: [{addresses: [db.example.com]}]`) + slice("web-x", "web", `addressType: Unix`) + slice("web-4", "web", `addressType: IPv4
endpoints: [{addresses: []}, {addresses: [10.244.1.300]}, {addresses: ["fd00::1"]}]
ports: [{name: http, port: 8080}]`),
			want: []proxy.Endpoint{{Addr: netip.MustParseAddr("fd00::1"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, Serving: true}},
			wantWarns: []string{
				"document 4 (line 18): EndpointSlice ns/web-4: endpoints[0]: no addresses; skipped",
				`document 4 (line 18): EndpointSlice ns/web-4: endpoints[1].addresses[0]: "10.244.1.300" is not an IP address; skipped`,
				"document 4 (line 18): EndpointSlice ns/web-4: endpoints[2].addresses[0]: fd00::1 is not of addressType IPv4",
				"document 2 (line 7): EndpointSlice ns/web-fqdn: addressType FQDN is not proxied; skipped",
				`document 3 (line 13): EndpointSlice ns/web-x: addressType "Unix" is not IPv4 or IPv6; skipped`,
			},
		},
		{
			name: "slices without their service",
			stream: base + slice("gone-1", "gone", `addressType: IPv4`) +
				"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: nolabel, namespace: ns}\naddressType: IPv4\n" +
				"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: other, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n",
			wantWarns: []string{
				"document 2 (line 7): EndpointSlice ns/gone-1: Service ns/gone not found; skipped",
				"document 3 (line 12): EndpointSlice ns/nolabel: no kubernetes.io/service-name label; skipped",
				"document 4 (line 17): EndpointSlice other/web-1: Service other/web not found; skipped",
			},
		},
		{
			name: "slices of a headless service are ignored quietly",
			stream: base + svc("db", `spec: {clusterIP: None}`) + slice("db-1", "db", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}]`),
		},
		{
			name: "a slice twice: the last one is used",
			stream: base + slice("web-1", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}]`) + slice("web-1", "web", `addressType: IPv4
endpoints: [{addresses: [10.244.1.6]}]`),
			want:      []proxy.Endpoint{{Addr: netip.MustParseAddr("10.244.1.6"), Ready: true, Serving: true}},
			wantWarns: []string{"document 3 (line 13): EndpointSlice ns/web-1: appears more than once; the last one is used"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, warns, err := StateFor(mustRead(t, tt.stream), "node-a")
			if err != nil {
				t.Fatalf("StateFor() error = %v", err)
			}
			var got []proxy.Endpoint
			for _, s := range st.Services {
				if s.Name == "web" || s.Name == "one" {
					got = s.Endpoints
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpNet()); diff != "" {
				t.Errorf("StateFor() endpoints mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarns, nonNodeWarnings(warns)); diff != "" {
				t.Errorf("StateFor() warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func node(name, body string) string {
	return "---\napiVersion: v1\nkind: Node\nmetadata: {name: " + name + ", labels: {topology.kubernetes.io/zone: z1}}\n" + body + "\n"
}

func TestStateForNode(t *testing.T) {
	tests := []struct {
		name      string
		stream    string
		node      string
		want      proxy.Node
		wantWarns []string
		wantErr   error
	}{
		{
			name: "internal addresses of both families",
			stream: node("node-a", `status: {addresses: [{type: Hostname, address: node-a}, {type: InternalIP, address: 10.0.0.10},
  {type: ExternalIP, address: 192.0.2.10}, {type: InternalIP, address: "fd00::10"}, {type: InternalIP, address: 10.0.0.10}]}`) +
				node("node-b", `status: {addresses: [{type: InternalIP, address: 10.0.0.11}]}`),
			node: "node-a",
			want: proxy.Node{Name: "node-a", IPs: addrs("10.0.0.10", "fd00::10"), Zone: "z1"},
		},
		{
			name:   "external addresses for a family without internal ones",
			stream: node("nx", `status: {addresses: [{type: ExternalIP, address: "2001:db8::1"}, {type: InternalIP, address: 10.0.0.10}, {type: ExternalIP, address: 192.0.2.1}, {type: InternalIP, address: bogus}]}`),
			node:   "nx",
			want:   proxy.Node{Name: "nx", IPs: addrs("10.0.0.10", "2001:db8::1"), Zone: "z1"},
			wantWarns: []string{
				`document 1 (line 2): Node nx: status.addresses[3]: "bogus" is not an IP address; left out`,
			},
		},
		{
			name:      "no Node object",
			stream:    node("other", ``),
			node:      "node-a",
			want:      proxy.Node{Name: "node-a"},
			wantWarns: []string{"Node node-a: no Node object: the node has no known address or zone"},
		},
		{
			name:   "the name from hostnameOverride",
			stream: node("node-a", ``) + "---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: ' Node-A '\n",
			want:   proxy.Node{Name: "node-a", Zone: "z1"},
		},
		{
			name:    "no name at all",
			stream:  node("node-a", ``),
			wantErr: ErrNoNodeName,
		},
		{
			name:      "a Node twice: the last one is used",
			stream:    node("nd", `status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}`) + node("nd", `status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}`),
			node:      "nd",
			want:      proxy.Node{Name: "nd", IPs: addrs("10.0.0.2"), Zone: "z1"},
			wantWarns: []string{"document 2 (line 7): Node nd: appears more than once; the last one is used"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, warns, err := StateFor(mustRead(t, tt.stream), tt.node)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("StateFor() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, st.Node, cmpNet()); diff != "" {
				t.Errorf("StateFor().Node mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarns, warnStrings(warns)); diff != "" {
				t.Errorf("StateFor() warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStateForNilObjects(t *testing.T) {
	st, warns, err := StateFor(nil, "n")
	if err != nil {
		t.Fatalf("StateFor(nil) error = %v", err)
	}
	if st.Node.Name != "n" || len(st.Services) != 0 || len(warns) != 1 {
		t.Errorf("StateFor(nil) = %+v, %v; want just the node name and one warning", st, warns)
	}
}
