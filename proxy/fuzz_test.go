package proxy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// fuzzAddrs reads a comma-separated list of addresses leniently: a part that
// does not parse becomes the zero Addr, so the fuzzer reaches that case too.
func fuzzAddrs(s string) []netip.Addr {
	if s == "" {
		return nil
	}
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		a, _ := netip.ParseAddr(part)
		out = append(out, a)
	}
	return out
}

// fuzzPrefixes reads a comma-separated list of prefixes leniently, like
// fuzzAddrs; "a/n" with a host address is kept unmasked.
func fuzzPrefixes(s string) []netip.Prefix {
	if s == "" {
		return nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		p, _ := netip.ParsePrefix(part)
		out = append(out, p)
	}
	return out
}

// onlyLabelChars reports whether s holds nothing but [a-z0-9-].
func onlyLabelChars(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return !isLower(c) && !isDigit(c) && c != '-' })
}

// onlySafeChars reports whether s holds nothing but letters, digits, '-', '_'
// and '.', the characters of label values and DNS subdomains.
func onlySafeChars(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return !isAlnum(c) && !strings.ContainsRune("-_.", c) })
}

// fuzzInput holds the fuzzed values that fuzzState builds a State from.
type fuzzInput struct {
	ns, name, portName, port2Name, proto, typ string
	port, targetPort, nodePort, epPort        int
	clusterIPs, epAddrs, ranges               string
	nodeName, zone, policy, affinity          string
	timeout                                   int
}

// fuzzState builds a State of two services from in. Each value feeds several
// fields, so that a valid input exercises most of the model.
func fuzzState(in fuzzInput) State {
	ports := []ServicePort{{Name: in.portName, Protocol: Protocol(in.proto), Port: in.port, TargetPort: in.targetPort, NodePort: in.nodePort}}
	if in.port2Name != "" {
		ports = append(ports, ServicePort{Name: in.port2Name, Port: in.port + 1, TargetPortName: in.port2Name, NodePort: in.nodePort + 2})
	}
	var eps []Endpoint
	for _, a := range fuzzAddrs(in.epAddrs) {
		e := Endpoint{
			Addr:     a,
			Ports:    []EndpointPort{{Name: in.portName, Port: in.epPort}, {Name: in.port2Name, Port: in.epPort}},
			Ready:    true,
			NodeName: in.nodeName,
			Zone:     in.zone,
		}
		if in.zone != "" {
			e.ZoneHints = []string{in.zone}
		}
		if in.nodeName != "" {
			e.NodeHints = []string{in.nodeName}
		}
		eps = append(eps, e)
	}
	svc := Service{
		Namespace:                in.ns,
		Name:                     in.name,
		Type:                     ServiceType(in.typ),
		ClusterIPs:               fuzzAddrs(in.clusterIPs),
		Ports:                    ports,
		ExternalIPs:              fuzzAddrs(in.epAddrs),
		LoadBalancerIPs:          fuzzAddrs(in.clusterIPs),
		LoadBalancerSourceRanges: fuzzPrefixes(in.ranges),
		SessionAffinity:          SessionAffinity(in.affinity),
		AffinityTimeoutSeconds:   in.timeout,
		ExternalTrafficPolicy:    TrafficPolicy(in.policy),
		InternalTrafficPolicy:    TrafficPolicy(in.policy),
		HealthCheckNodePort:      in.nodePort + 1,
		Endpoints:                eps,
	}
	// A second, ClusterIP-only service in the same namespace.
	other := svc
	other.Name = in.port2Name
	other.Type, other.ClusterIPs, other.LoadBalancerIPs, other.LoadBalancerSourceRanges = "", nil, nil, nil
	other.HealthCheckNodePort = 0
	other.Ports = nil
	for _, p := range ports {
		p.NodePort = 0
		other.Ports = append(other.Ports, p)
	}
	bit := in.epPort
	return State{
		Node: Node{Name: in.nodeName, IPs: fuzzAddrs(in.epAddrs), Zone: in.zone},
		Config: Config{
			ClusterCIDRs:      fuzzPrefixes(in.ranges),
			MasqueradeBit:     &bit,
			NodePortAddresses: fuzzPrefixes(in.ranges),
			NodePortRange:     PortRange{Min: in.targetPort, Max: in.nodePort + 2},
		},
		Services: []Service{svc, other},
	}
}

// validFuzzSeed is a seed that builds a valid State.
var validFuzzSeed = fuzzInput{
	ns: "ns", name: "web", portName: "http", port2Name: "dns", proto: "TCP", typ: "LoadBalancer",
	port: 80, targetPort: 8080, nodePort: 30080, epPort: 14,
	clusterIPs: "10.96.0.10,fd00::10", epAddrs: "10.244.1.5,fd00:244::5", ranges: "10.0.0.0/8,fd00::/8",
	nodeName: "node-1.example", zone: "zone_A", policy: "Local", affinity: "ClientIP", timeout: 600,
}

func TestFuzzStateSeedIsValid(t *testing.T) {
	s := fuzzState(validFuzzSeed)
	if err := s.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
}

func FuzzValidate(f *testing.F) {
	add := func(in fuzzInput) {
		f.Add(in.ns, in.name, in.portName, in.port2Name, in.proto, in.typ,
			in.port, in.targetPort, in.nodePort, in.epPort,
			in.clusterIPs, in.epAddrs, in.ranges, in.nodeName, in.zone, in.policy, in.affinity, in.timeout)
	}
	add(validFuzzSeed)
	add(fuzzInput{ns: "ns", name: "web", port: 80, clusterIPs: "10.96.0.10", epAddrs: "10.244.1.5", epPort: 1})
	add(fuzzInput{ns: "Ns", name: "web app", portName: "HTTP", port2Name: "x\ny", proto: "tcp", typ: "ExternalName",
		targetPort: -1, nodePort: 99999, epPort: 70000, clusterIPs: "::ffff:1.2.3.4,0.0.0.0,fe80::1%eth0",
		epAddrs: "::", ranges: "10.0.0.1/8", nodeName: "Node 1", zone: `z"`, policy: "local", affinity: "x", timeout: -5})
	add(fuzzInput{ns: "a", name: "b", portName: "p", port2Name: "p", proto: "UDP", typ: "NodePort",
		port: 65535, targetPort: 65535, nodePort: 32767, epPort: 31, clusterIPs: "10.0.0.1,10.0.0.2",
		epAddrs: "fe80::1%a b", ranges: "::ffff:0.0.0.0/96", nodeName: "n.", zone: "Z_z", policy: "Cluster", timeout: 86401})
	f.Fuzz(func(t *testing.T, ns, name, portName, port2Name, proto, typ string,
		port, targetPort, nodePort, epPort int,
		clusterIPs, epAddrs, ranges, nodeName, zone, policy, affinity string, timeout int) {
		s := fuzzState(fuzzInput{ns, name, portName, port2Name, proto, typ,
			port, targetPort, nodePort, epPort, clusterIPs, epAddrs, ranges, nodeName, zone, policy, affinity, timeout})
		err := s.Validate()
		if err != nil {
			checkOnlyFieldErrors(t, err)
			return
		}
		checkValidIsSafe(t, &s)
	})
}

// checkOnlyFieldErrors checks that err joins only FieldErrors, one per line, so
// that no input text broke a message apart.
func checkOnlyFieldErrors(t *testing.T, err error) {
	t.Helper()
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var fe *FieldError
		if !errors.As(e, &fe) || fe.Path == "" {
			t.Fatalf("Validate() returned %T %q, want *FieldError with a path", e, e)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(list) {
		t.Fatalf("Validate() message has %d lines for %d errors: %q", n, len(list), err)
	}
}

// checkValidIsSafe checks the injection guarantee of a State that passed Validate.
func checkValidIsSafe(t *testing.T, s *State) {
	t.Helper()
	if !onlySafeChars(s.Node.Name) || !onlySafeChars(s.Node.Zone) {
		t.Fatalf("Validate() = nil for node %q zone %q", s.Node.Name, s.Node.Zone)
	}
	for _, svc := range s.Services {
		if !onlyLabelChars(svc.Namespace) || !onlyLabelChars(svc.Name) {
			t.Fatalf("Validate() = nil for service %q/%q", svc.Namespace, svc.Name)
		}
		for _, p := range svc.Ports {
			if !onlyLabelChars(p.Name) || !onlyLabelChars(p.TargetPortName) {
				t.Fatalf("Validate() = nil for port name %q target %q", p.Name, p.TargetPortName)
			}
		}
		for _, e := range svc.Endpoints {
			if e.Addr.Zone() != "" {
				t.Fatalf("Validate() = nil for zoned address %q", e.Addr)
			}
			if !onlySafeChars(e.NodeName) || !onlySafeChars(e.Zone) {
				t.Fatalf("Validate() = nil for endpoint node %q zone %q", e.NodeName, e.Zone)
			}
			for _, p := range e.Ports {
				if !onlyLabelChars(p.Name) {
					t.Fatalf("Validate() = nil for endpoint port name %q", p.Name)
				}
			}
		}
	}
}
