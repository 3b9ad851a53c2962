package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The kinds of problem [State.Validate] reports. Every [FieldError] wraps
// exactly one of them, so callers can tell kinds apart with [errors.Is].
var (
	// ErrRequired means a field that must be set is empty.
	ErrRequired = errors.New("required")
	// ErrInvalid means a value is malformed or is not one of the values
	// its field allows.
	ErrInvalid = errors.New("invalid")
	// ErrOutOfRange means a number lies outside the range its field allows.
	ErrOutOfRange = errors.New("out of range")
	// ErrDuplicate means a value that must be unique appears more than once.
	ErrDuplicate = errors.New("duplicate")
	// ErrForbidden means a field is set where it does not apply, such as a
	// NodePort on a ClusterIP service.
	ErrForbidden = errors.New("not allowed")
)

// FieldError is one problem found by [State.Validate]: the field it is in and
// what is wrong with it.
type FieldError struct {
	// Path names the field, such as "services[ns/web].ports[http].nodePort"
	// or "node.ips[0]". List elements are named by their key (ns/name,
	// port name, endpoint address) when the key is well formed and first
	// seen, and by their index otherwise.
	Path string
	// Err says what is wrong; it wraps one of ErrRequired, ErrInvalid,
	// ErrOutOfRange, ErrDuplicate or ErrForbidden. Any text that came from
	// the State is quoted, so the message holds no raw newline.
	Err error
}

// Error returns the path and the problem, "path: problem".
func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns e.Err.
func (e *FieldError) Unwrap() error { return e.Err }

// Validate reports every problem in s at once, joined with [errors.Join]; each
// is a [*FieldError] whose message begins with its field path. It returns nil
// for a valid State, including the zero State and a nil *State.
//
// Names that end up in restore input (namespaces, service names, port names)
// must be DNS-1123 labels or IANA service names, so a valid State can never
// inject text into rules. Addresses must be valid, not unspecified, without an
// IPv6 zone and not IPv4-mapped IPv6 (use the plain IPv4 address). Prefixes
// must be network addresses: 10.0.0.1/8 is rejected rather than silently
// read as 10.0.0.0/8, so callers holding Kubernetes' looser CIDR strings
// should apply [netip.Prefix.Masked] first. Endpoints whose family matches no
// cluster IP are not an error; they are ignored. The same endpoint address
// may appear in several Endpoints (as from several EndpointSlices) as long as
// no address:port repeats for one service port name.
func (s *State) Validate() error {
	if s == nil {
		return nil
	}
	if len(s.Services) >= 2*minValidateChunk && runtime.GOMAXPROCS(0) > 1 && s.validInParallel() {
		return nil
	}
	return s.validate()
}

// minValidateChunk is the fewest services worth validating on a
// goroutine of their own.
const minValidateChunk = 1024

// validInParallel reports whether s is valid, checking chunks of its
// services on several goroutines and then the values that must be unique
// across chunks. It builds no messages: when it finds any problem, the
// caller validates again serially to report every problem in order.
func (s *State) validInParallel() bool {
	n := len(s.Services)
	par := max(1, min(runtime.GOMAXPROCS(0), n/minValidateChunk))
	vs := make([]validator, par)
	seen := make([]map[[2]string]bool, par)
	var wg sync.WaitGroup
	for k := range par {
		lo, hi := n*k/par, n*(k+1)/par
		wg.Go(func() {
			v := newValidator(hi - lo)
			v.config(&s.Config)
			if k == 0 {
				v.node(&s.Node)
			}
			names := make(map[[2]string]bool, hi-lo)
			for i := lo; i < hi; i++ {
				svc := &s.Services[i]
				id := [2]string{svc.Namespace, svc.Name}
				if names[id] {
					v.errs = append(v.errs, ErrDuplicate)
				}
				names[id] = true
				v.service("services[?]", svc)
				if len(v.errs) > 0 {
					break
				}
			}
			vs[k], seen[k] = v, names
		})
	}
	wg.Wait()
	for k := range vs {
		if len(vs[k].errs) > 0 {
			return false
		}
	}
	for k := 1; k < par; k++ {
		if !mergeUnique(seen[0], seen[k]) || !mergeUnique(vs[0].clusterIPs, vs[k].clusterIPs) ||
			!mergeUnique(vs[0].nodePorts, vs[k].nodePorts) {
			return false
		}
	}
	return true
}

// mergeUnique adds the keys of from to into and reports whether none was
// there already.
func mergeUnique[K comparable, V any](into, from map[K]V) bool {
	for k, v := range from {
		if _, dup := into[k]; dup {
			return false
		}
		into[k] = v
	}
	return true
}

func newValidator(services int) validator {
	return validator{
		clusterIPs: make(map[netip.Addr]string, services),
		nodePorts:  make(map[nodePortKey]string),
		known:      make(map[string]bool),
		portNames:  make(map[string]string),
		numbers:    make(map[nodePortKey]string),
	}
}

// validate is Validate on one goroutine, reporting every problem.
func (s *State) validate() error {
	v := validator{
		clusterIPs: make(map[netip.Addr]string, len(s.Services)),
		nodePorts:  make(map[nodePortKey]string),
		known:      make(map[string]bool),
		portNames:  make(map[string]string),
		numbers:    make(map[nodePortKey]string),
	}
	v.config(&s.Config)
	v.node(&s.Node)
	seen := make(map[string]string, len(s.Services))
	for i := range s.Services {
		svc := &s.Services[i]
		path := "services[" + strconv.Itoa(i) + "]"
		if labelProblem(svc.Namespace) == "" && labelProblem(svc.Name) == "" {
			id := svc.Namespace + "/" + svc.Name
			if first, dup := seen[id]; dup {
				v.addf(path, "%w service %s (also %s)", ErrDuplicate, id, first)
			} else {
				path = "services[" + id + "]"
				seen[id] = path
			}
		}
		v.service(path, svc)
	}
	return errors.Join(v.errs...)
}

// validator collects the problems of one State and remembers what must be
// unique across services.
type validator struct {
	errs []error
	// portRange is the range NodePorts must be in: the configured one, or
	// 1-65535 when the configured one is itself invalid.
	portRange PortRange
	// clusterIPs and nodePorts map each value claimed so far to the path
	// that claimed it.
	clusterIPs map[netip.Addr]string
	nodePorts  map[nodePortKey]string
	// The rest is scratch space for one service at a time, cleared and
	// reused so that validating many services allocates little.
	known     map[string]bool
	portNames map[string]string
	numbers   map[nodePortKey]string
	claims    []endpointClaim
}

type nodePortKey struct {
	proto Protocol
	port  int
}

func (v *validator) add(path string, err error) {
	v.errs = append(v.errs, &FieldError{Path: path, Err: err})
}

func (v *validator) addf(path, format string, args ...any) {
	v.add(path, fmt.Errorf(format, args...))
}

func (v *validator) config(c *Config) {
	var family [2]string
	for i, p := range c.ClusterCIDRs {
		path := "config.clusterCIDRs[" + strconv.Itoa(i) + "]"
		if err := prefixProblem(p); err != nil {
			v.add(path, err)
			continue
		}
		f := familyIndex(p.Addr())
		if family[f] != "" {
			v.addf(path, "%w %s cluster CIDR %s: at most one per family (also %s)",
				ErrDuplicate, familyName(p.Addr()), p, family[f])
			continue
		}
		family[f] = path
	}
	if b := c.MasqueradeBit; b != nil && (*b < 0 || *b > 31) {
		v.addf("config.masqueradeBit", "%d %w 0-31", *b, ErrOutOfRange)
	}
	for i, p := range c.NodePortAddresses {
		if err := prefixProblem(p); err != nil {
			v.add("config.nodePortAddresses["+strconv.Itoa(i)+"]", err)
		}
	}
	v.portRange = c.NodePortRangeOrDefault()
	r := c.NodePortRange
	switch {
	case r == PortRange{}:
	case r.Min < 1 || r.Max > 65535:
		v.addf("config.nodePortRange", "%d-%d %w 1-65535", r.Min, r.Max, ErrOutOfRange)
		v.portRange = PortRange{Min: 1, Max: 65535}
	case r.Min > r.Max:
		v.addf("config.nodePortRange", "%w range %d-%d: min above max", ErrInvalid, r.Min, r.Max)
		v.portRange = PortRange{Min: 1, Max: 65535}
	}
}

func (v *validator) node(n *Node) {
	v.subdomain("node.name", n.Name, false)
	v.addrList("node.ips", n.IPs, "node IP")
	v.labelValue("node.zone", n.Zone)
}

func (v *validator) service(path string, s *Service) {
	// Field paths are built only where a check may report, so that a valid
	// state with many services allocates little.
	if s.Namespace == "" || labelProblem(s.Namespace) != "" {
		v.label(path+".namespace", s.Namespace)
	}
	if s.Name == "" || labelProblem(s.Name) != "" {
		v.label(path+".name", s.Name)
	}
	typ, typeOK := s.ServiceType(), true
	switch typ {
	case ServiceTypeClusterIP, ServiceTypeNodePort, ServiceTypeLoadBalancer:
	default:
		v.addf(path+".type", "%w service type %q: want ClusterIP, NodePort or LoadBalancer",
			ErrInvalid, s.Type)
		typeOK = false
	}
	v.affinity(path, s)
	if !knownPolicy(s.ExternalTrafficPolicy) {
		v.policy(path+".externalTrafficPolicy", s.ExternalTrafficPolicy)
	}
	if !knownPolicy(s.InternalTrafficPolicy) {
		v.policy(path+".internalTrafficPolicy", s.InternalTrafficPolicy)
	}
	v.serviceClusterIPs(path+".clusterIPs", s.ClusterIPs)
	if len(s.ExternalIPs) > 0 {
		v.addrList(path+".externalIPs", s.ExternalIPs, "external IP")
	}
	isLB := typ == ServiceTypeLoadBalancer
	if len(s.LoadBalancerIPs) > 0 && typeOK && !isLB {
		v.addf(path+".loadBalancerIPs", "%w on a %s service", ErrForbidden, typ)
	}
	if len(s.LoadBalancerIPs) > 0 {
		v.addrList(path+".loadBalancerIPs", s.LoadBalancerIPs, "load balancer IP")
	}
	if len(s.LoadBalancerSourceRanges) > 0 && typeOK && !isLB {
		v.addf(path+".loadBalancerSourceRanges", "%w on a %s service", ErrForbidden, typ)
	}
	for i, p := range s.LoadBalancerSourceRanges {
		if err := prefixProblem(p); err != nil {
			v.add(path+".loadBalancerSourceRanges["+strconv.Itoa(i)+"]", err)
		}
	}
	known := v.ports(path, s, typ == ServiceTypeClusterIP)
	if s.HealthCheckNodePort != 0 {
		v.healthCheck(path, s, isLB)
	}
	v.endpoints(path, s, known)
}

func (v *validator) affinity(path string, s *Service) {
	known := true
	switch s.SessionAffinity {
	case "", SessionAffinityNone, SessionAffinityClientIP:
	default:
		v.addf(path+".sessionAffinity", "%w session affinity %q: want None or ClientIP",
			ErrInvalid, s.SessionAffinity)
		known = false
	}
	t := s.AffinityTimeoutSeconds
	switch {
	case t == 0:
	case t < 0 || t > MaxAffinityTimeoutSeconds:
		v.addf(path+".affinityTimeoutSeconds", "%d %w 1-%d", t, ErrOutOfRange, MaxAffinityTimeoutSeconds)
	case known && s.SessionAffinity != SessionAffinityClientIP:
		v.addf(path+".affinityTimeoutSeconds", "%w without sessionAffinity ClientIP", ErrForbidden)
	}
}

func knownPolicy(p TrafficPolicy) bool {
	return p == "" || p == TrafficPolicyCluster || p == TrafficPolicyLocal
}

func (v *validator) policy(path string, p TrafficPolicy) {
	switch p {
	case "", TrafficPolicyCluster, TrafficPolicyLocal:
	default:
		v.addf(path, "%w traffic policy %q: want Cluster or Local", ErrInvalid, p)
	}
}

func (v *validator) healthCheck(path string, s *Service, isLB bool) {
	hc := s.HealthCheckNodePort
	path += ".healthCheckNodePort"
	switch {
	case hc == 0:
	case hc < 0 || hc > 65535:
		v.addf(path, "%d %w 1-65535", hc, ErrOutOfRange)
	case !isLB || s.ExternalTrafficPolicy != TrafficPolicyLocal:
		v.addf(path, "%w unless the service is type LoadBalancer with externalTrafficPolicy Local",
			ErrForbidden)
	default:
		v.claimNodePort(path, ProtocolTCP, hc)
	}
}

// ports checks the service's ports and returns the set of their names, for
// matching endpoint ports.
func (v *validator) ports(path string, s *Service, isClusterIP bool) map[string]bool {
	clear(v.known)
	clear(v.portNames)
	clear(v.numbers)
	known, names, numbers := v.known, v.portNames, v.numbers
	for i := range s.Ports {
		p := &s.Ports[i]
		known[p.Name] = true
		pp := path + ".ports[" + strconv.Itoa(i) + "]"
		first, dup := names[p.Name]
		switch r := portNameProblem(p.Name); {
		case p.Name == "":
			if len(s.Ports) > 1 {
				v.addf(pp+".name", "%w when the service has more than one port", ErrRequired)
			}
		case r != "":
			v.addf(pp+".name", "%w port name %q: %s", ErrInvalid, p.Name, r)
		case dup:
			v.addf(pp+".name", "%w port name %q (also %s)", ErrDuplicate, p.Name, first)
		default:
			pp = path + ".ports[" + p.Name + "]"
			names[p.Name] = pp
		}
		protoOK := true
		if !knownProtocol(p.Protocol) {
			protoOK = v.protocol(pp+".protocol", p.Protocol)
		}
		switch {
		case p.Port < 1 || p.Port > 65535:
			v.addf(pp+".port", "%d %w 1-65535", p.Port, ErrOutOfRange)
		case protoOK:
			k := nodePortKey{p.ProtocolOrDefault(), p.Port}
			if first, dup := numbers[k]; dup {
				v.addf(pp+".port", "%w port %d/%s (also %s)", ErrDuplicate, p.Port, k.proto, first)
			} else {
				numbers[k] = pp
			}
		}
		v.targetPort(pp, p)
		if p.NodePort != 0 {
			v.nodePort(pp+".nodePort", p, protoOK, isClusterIP)
		}
	}
	return known
}

func knownProtocol(p Protocol) bool {
	return p == "" || p == ProtocolTCP || p == ProtocolUDP || p == ProtocolSCTP
}

// protocol checks p and reports whether it is known.
func (v *validator) protocol(path string, p Protocol) bool {
	switch p {
	case "", ProtocolTCP, ProtocolUDP, ProtocolSCTP:
		return true
	}
	v.addf(path, "%w protocol %q: want TCP, UDP or SCTP", ErrInvalid, p)
	return false
}

func (v *validator) targetPort(path string, p *ServicePort) {
	if t := p.TargetPort; t != 0 && (t < 1 || t > 65535) {
		v.addf(path+".targetPort", "%d %w 1-65535", t, ErrOutOfRange)
	}
	if p.TargetPortName == "" {
		return
	}
	if r := portNameProblem(p.TargetPortName); r != "" {
		v.addf(path+".targetPortName", "%w port name %q: %s", ErrInvalid, p.TargetPortName, r)
	} else if p.TargetPort != 0 {
		v.addf(path+".targetPortName", "%w together with targetPort %d", ErrForbidden, p.TargetPort)
	}
}

func (v *validator) nodePort(path string, p *ServicePort, protoOK, isClusterIP bool) {
	n, r := p.NodePort, v.portRange
	switch {
	case n == 0:
	case isClusterIP:
		v.addf(path, "%d %w on a ClusterIP service", n, ErrForbidden)
	case n < r.Min || n > r.Max:
		v.addf(path, "%d %w %d-%d", n, ErrOutOfRange, r.Min, r.Max)
	case protoOK:
		v.claimNodePort(path, p.ProtocolOrDefault(), n)
	}
}

// claimNodePort records that path uses node port n for proto, reporting a
// duplicate if another field already does.
func (v *validator) claimNodePort(path string, proto Protocol, n int) {
	k := nodePortKey{proto, n}
	if first, dup := v.nodePorts[k]; dup {
		v.addf(path, "%w %s node port %d (also %s)", ErrDuplicate, proto, n, first)
		return
	}
	v.nodePorts[k] = path
}

func (v *validator) serviceClusterIPs(path string, ips []netip.Addr) {
	var family [2]string
	for i, a := range ips {
		ip := path + "[" + strconv.Itoa(i) + "]"
		if err := addrProblem(a); err != nil {
			v.add(ip, err)
			continue
		}
		f := familyIndex(a)
		if family[f] != "" {
			v.addf(ip, "%w %s cluster IP %s: at most one per family (also %s)",
				ErrDuplicate, familyName(a), a, family[f])
			continue
		}
		family[f] = ip
		if first, dup := v.clusterIPs[a]; dup {
			v.addf(ip, "%w cluster IP %s (also %s)", ErrDuplicate, a, first)
			continue
		}
		v.clusterIPs[a] = ip
	}
}

// addrList checks a list of addresses that must be valid and distinct.
func (v *validator) addrList(path string, ips []netip.Addr, what string) {
	seen := make(map[netip.Addr]string, len(ips))
	for i, a := range ips {
		ip := path + "[" + strconv.Itoa(i) + "]"
		if err := addrProblem(a); err != nil {
			v.add(ip, err)
			continue
		}
		if first, dup := seen[a]; dup {
			v.addf(ip, "%w %s %s (also %s)", ErrDuplicate, what, a, first)
			continue
		}
		seen[a] = ip
	}
}

func (v *validator) endpoints(path string, s *Service, known map[string]bool) {
	// Paths are built only when a problem is found, and duplicates are
	// found by sorting, so a valid state with many endpoints costs little.
	v.claims = v.claims[:0]
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		ep := endpointPath{svc: &path, s: s, i: i}
		addrOK := true
		if err := addrProblem(e.Addr); err != nil {
			v.add(ep.String()+".addr", err)
			addrOK = false
		}
		v.endpointPorts(ep, e, known, addrOK)
		if e.NodeName != "" && subdomainProblem(e.NodeName) != "" {
			v.subdomain(ep.String()+".nodeName", e.NodeName, false)
		}
		if e.Zone != "" && labelValueProblem(e.Zone) != "" {
			v.labelValue(ep.String()+".zone", e.Zone)
		}
		for j, z := range e.ZoneHints {
			if z == "" {
				v.add(ep.String()+".zoneHints["+strconv.Itoa(j)+"]", ErrRequired)
			} else if labelValueProblem(z) != "" {
				v.labelValue(ep.String()+".zoneHints["+strconv.Itoa(j)+"]", z)
			}
		}
		for j, n := range e.NodeHints {
			if n == "" || subdomainProblem(n) != "" {
				v.subdomain(ep.String()+".nodeHints["+strconv.Itoa(j)+"]", n, true)
			}
		}
	}
	v.duplicateEndpoints(&path, s)
}

// endpointClaim is one endpoint port of a service, for finding repeats.
type endpointClaim struct {
	addr netip.Addr
	name string
	port int
	i, j int
}

// duplicateEndpoints reports an address, port name and number used twice
// in one service, naming the first use.
func (v *validator) duplicateEndpoints(path *string, s *Service) {
	c := v.claims
	if len(c) < 2 {
		return
	}
	slices.SortFunc(c, func(a, b endpointClaim) int {
		if x := a.addr.Compare(b.addr); x != 0 {
			return x
		}
		if x := strings.Compare(a.name, b.name); x != 0 {
			return x
		}
		if a.port != b.port {
			return a.port - b.port
		}
		if a.i != b.i {
			return a.i - b.i
		}
		return a.j - b.j
	})
	for k := 1; k < len(c); k++ {
		first, dup := c[k-1], c[k]
		for k < len(c) && c[k].addr == first.addr && c[k].name == first.name && c[k].port == first.port {
			dup = c[k]
			e := &s.Endpoints[dup.i]
			fp := endpointPath{svc: path, s: s, i: first.i}
			v.addf(endpointPath{svc: path, s: s, i: dup.i}.port(e, dup.j), "%w endpoint %s for port %q (also %s)",
				ErrDuplicate, netip.AddrPortFrom(dup.addr, uint16(dup.port)), dup.name, fp.port(&s.Endpoints[first.i], first.j))
			k++
		}
	}
}

// endpointPath names an endpoint in error messages: by its address when it
// is valid and first seen in the service, else by its index.
type endpointPath struct {
	svc *string
	s   *Service
	i   int
}

func (p endpointPath) String() string {
	a := p.s.Endpoints[p.i].Addr
	if addrProblem(a) == nil && !slices.ContainsFunc(p.s.Endpoints[:p.i], func(e Endpoint) bool { return e.Addr == a }) {
		return *p.svc + ".endpoints[" + a.String() + "]"
	}
	return *p.svc + ".endpoints[" + strconv.Itoa(p.i) + "]"
}

// port names port j of the endpoint, by name when it is well formed and
// first seen in the endpoint.
func (p endpointPath) port(e *Endpoint, j int) string {
	name := e.Ports[j].Name
	if name != "" && portNameProblem(name) == "" && firstPortName(e, j) {
		return p.String() + ".ports[" + name + "]"
	}
	return p.String() + ".ports[" + strconv.Itoa(j) + "]"
}

func firstPortName(e *Endpoint, j int) bool {
	for k := range j {
		if e.Ports[k].Name == e.Ports[j].Name {
			return false
		}
	}
	return true
}

// endpointPorts checks the ports of endpoint e, named by ep, and records
// the well-formed ones in v.claims.
func (v *validator) endpointPorts(ep endpointPath, e *Endpoint, known map[string]bool, addrOK bool) {
	for j := range e.Ports {
		p := &e.Ports[j]
		dupAt := -1
		for k := range j {
			if e.Ports[k].Name == p.Name {
				dupAt = k
				break
			}
		}
		ok := false
		switch {
		case dupAt >= 0:
			v.addf(ep.port(e, j)+".name", "%w port name %q (also %s)", ErrDuplicate, p.Name, ep.port(e, dupAt))
		case !known[p.Name]:
			v.addf(ep.port(e, j)+".name", "%w port name %q: the service has no such port", ErrInvalid, p.Name)
		default:
			ok = true
		}
		if p.Port < 1 || p.Port > 65535 {
			v.addf(ep.port(e, j)+".port", "%d %w 1-65535", p.Port, ErrOutOfRange)
			continue
		}
		if ok && addrOK {
			v.claims = append(v.claims, endpointClaim{addr: e.Addr, name: p.Name, port: p.Port, i: ep.i, j: j})
		}
	}
}

// label reports s unless it is a non-empty DNS-1123 label.
func (v *validator) label(path, s string) {
	if s == "" {
		v.add(path, ErrRequired)
	} else if r := labelProblem(s); r != "" {
		v.addf(path, "%w DNS-1123 label %q: %s", ErrInvalid, s, r)
	}
}

// subdomain reports s unless it is a DNS-1123 subdomain, or empty when
// required is false.
func (v *validator) subdomain(path, s string, required bool) {
	switch {
	case s == "" && required:
		v.add(path, ErrRequired)
	case s == "":
	default:
		if r := subdomainProblem(s); r != "" {
			v.addf(path, "%w DNS-1123 subdomain %q: %s", ErrInvalid, s, r)
		}
	}
}

// labelValue reports s unless it is a Kubernetes label value (which may be
// empty).
func (v *validator) labelValue(path, s string) {
	if r := labelValueProblem(s); r != "" {
		v.addf(path, "%w label value %q: %s", ErrInvalid, s, r)
	}
}

// addrProblem returns why a is not a usable address, or nil.
func addrProblem(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%w address (the zero netip.Addr)", ErrInvalid)
	case a.Zone() != "":
		return fmt.Errorf("%w address %q: has an IPv6 zone", ErrInvalid, a.String())
	case a.Is4In6():
		return fmt.Errorf("%w address %s: IPv4-mapped IPv6; use %s", ErrInvalid, a, a.Unmap())
	case a.IsUnspecified():
		return fmt.Errorf("%w address %s: unspecified", ErrInvalid, a)
	}
	return nil
}

// prefixProblem returns why p is not a usable network prefix, or nil.
func prefixProblem(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w prefix (the zero netip.Prefix)", ErrInvalid)
	case p.Addr().Is4In6():
		if p.Bits() >= 96 {
			return fmt.Errorf("%w prefix %s: IPv4-mapped IPv6; use %s", ErrInvalid, p,
				netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked())
		}
		return fmt.Errorf("%w prefix %s: IPv4-mapped IPv6", ErrInvalid, p)
	case p != p.Masked():
		return fmt.Errorf("%w prefix %s: not a network address; did you mean %s", ErrInvalid, p, p.Masked())
	}
	return nil
}

func familyIndex(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

func familyName(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

func isLower(c rune) bool { return c >= 'a' && c <= 'z' }
func isDigit(c rune) bool { return c >= '0' && c <= '9' }
func isAlnum(c rune) bool { return isLower(c) || isDigit(c) || (c >= 'A' && c <= 'Z') }

// badChar returns a reason naming the first rune of s that ok refuses, or "".
func badChar(s string, ok func(rune) bool) string {
	for _, c := range s {
		if !ok(c) {
			return fmt.Sprintf("character %q not allowed", c)
		}
	}
	return ""
}

// labelProblem returns why s is not a DNS-1123 label (at most 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit), or "".
func labelProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 63:
		return fmt.Sprintf("%d characters, at most 63 allowed", len(s))
	}
	if r := badChar(s, func(c rune) bool { return isLower(c) || isDigit(c) || c == '-' }); r != "" {
		return r + "; use lowercase letters, digits and '-'"
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return "must start and end with a letter or digit"
	}
	return ""
}

// subdomainProblem returns why s is not a DNS-1123 subdomain (at most 253
// characters of dot-separated DNS-1123 labels), or "".
func subdomainProblem(s string) string {
	if len(s) > 253 {
		return fmt.Sprintf("%d characters, at most 253 allowed", len(s))
	}
	if !strings.Contains(s, ".") {
		return labelProblem(s)
	}
	for _, l := range strings.Split(s, ".") {
		if r := labelProblem(l); r != "" {
			return fmt.Sprintf("label %q: %s", l, r)
		}
	}
	return ""
}

// portNameProblem returns why s is not an IANA service name (at most 15
// lowercase letters, digits and '-', with at least one letter, no '-' at
// either end and no "--"), or "". The empty name is not one.
func portNameProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 15:
		return fmt.Sprintf("%d characters, at most 15 allowed", len(s))
	}
	if r := badChar(s, func(c rune) bool { return isLower(c) || isDigit(c) || c == '-' }); r != "" {
		return r + "; use lowercase letters, digits and '-'"
	}
	switch {
	case !strings.ContainsFunc(s, isLower):
		return "must contain a letter"
	case s[0] == '-' || s[len(s)-1] == '-':
		return "must start and end with a letter or digit"
	case strings.Contains(s, "--"):
		return `must not contain "--"`
	}
	return ""
}

// labelValueProblem returns why s is not a Kubernetes label value (empty, or
// at most 63 letters, digits, '-', '_' and '.', starting and ending with a
// letter or digit), or "".
func labelValueProblem(s string) string {
	switch {
	case s == "":
		return ""
	case len(s) > 63:
		return fmt.Sprintf("%d characters, at most 63 allowed", len(s))
	}
	if r := badChar(s, func(c rune) bool { return isAlnum(c) || c == '-' || c == '_' || c == '.' }); r != "" {
		return r + "; use letters, digits, '-', '_' and '.'"
	}
	if !isAlnum(rune(s[0])) || !isAlnum(rune(s[len(s)-1])) {
		return "must start and end with a letter or digit"
	}
	return ""
}
