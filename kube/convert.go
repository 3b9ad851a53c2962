package kube

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplan/svcplan/proxy"
)

// ErrNoNodeName is returned by StateFor when neither its node argument nor
// the KubeProxyConfiguration's hostnameOverride names the node.
var ErrNoNodeName = errors.New("no node name")

// StateFor builds the proxy.State that the node named node sees from objs.
// An empty node means the ProxyConfig's hostnameOverride. The node's
// addresses are the InternalIP addresses of its Node object (per family,
// the ExternalIP addresses when it has no InternalIP of that family) and
// its zone is the topology.kubernetes.io/zone label; without a Node object
// the State has just the name, and a Warning says so.
//
// The Config comes from objs.ProxyConfig (see ProxyConfig.Apply), then the
// options. Services of type ExternalName, headless services and services
// labelled [LabelServiceProxyName] are left out, as kube-proxy leaves them, and so are load balancer ingress
// addresses whose ipMode is Proxy. EndpointSlices are attached to the
// service their kubernetes.io/service-name label names; endpoints of all the
// service's slices are merged by address. Services are sorted by namespace
// and name, endpoints by address.
//
// StateFor drops nothing silently: an address that does not parse, a slice
// without a service, or an object that appears twice gives a Warning naming
// the object and the field, and the rest is converted. Whether the result
// makes sense is for proxy.State.Validate to say. The error is
// ErrNoNodeName, or a ProxyConfig that Apply refuses.
func StateFor(objs *Objects, node string, opts ...Option) (proxy.State, []Warning, error) {
	if objs == nil {
		objs = &Objects{}
	}
	var o stateOptions
	for _, opt := range opts {
		opt(&o)
	}
	pc := objs.ProxyConfig
	if node == "" && pc != nil {
		node = pc.NodeName()
	}
	if node == "" {
		return proxy.State{}, nil, ErrNoNodeName
	}
	c := converter{objs: objs}
	nodeObj := c.findNode(node)
	st := proxy.State{Node: c.node(node, nodeObj)}
	if pc != nil {
		if err := pc.Apply(&st.Config, nodeObj); err != nil {
			return proxy.State{}, c.warns, fmt.Errorf("applying KubeProxyConfiguration: %w", err)
		}
	}
	for _, f := range o.config {
		f(&st.Config)
	}
	if pc != nil && st.Config.ClusterCIDRs == nil {
		c.checkDetectLocal(pc, nodeObj)
	}
	st.Services = c.services(node)
	return st, c.warns, nil
}

// converter collects the warnings of one StateFor.
type converter struct {
	objs  *Objects
	warns []Warning
}

func (c *converter) warn(kind, name, format string, args ...any) {
	o := c.objs.origins[objectKey(kind, name)]
	c.warns = append(c.warns, Warning{Doc: o.doc, Line: o.line, Kind: kind, Name: name, Msg: fmt.Sprintf(format, args...)})
}

// checkDetectLocal warns when the KubeProxyConfiguration asks for local
// traffic detection that the State does not have.
func (c *converter) checkDetectLocal(pc *ProxyConfig, node *corev1.Node) {
	const what = "traffic from pods is not told apart from other traffic"
	switch pc.DetectLocalMode {
	case detectLocalNodeCIDR:
		if node == nil {
			c.warn(kindKubeProxyConfig, "", "detectLocalMode NodeCIDR needs the Node object: %s", what)
		} else {
			c.warn(kindKubeProxyConfig, "", "detectLocalMode NodeCIDR: Node %s has no spec.podCIDRs: %s", node.Name, what)
		}
	case detectLocalBridgeInterface, detectLocalInterfaceNamePrefix:
		c.warn(kindKubeProxyConfig, "", "detectLocalMode %s is not supported: %s", pc.DetectLocalMode, what)
	}
}

// findNode returns the Node object named name (the last one, if several
// are), or nil.
func (c *converter) findNode(name string) *corev1.Node {
	var found *corev1.Node
	for i := range c.objs.Nodes {
		n := &c.objs.Nodes[i]
		if n.Name != name {
			continue
		}
		if found != nil {
			c.warn(kindNode, name, "appears more than once; the last one is used")
		}
		found = n
	}
	return found
}

// node converts the Node object of the node named name, which may be nil.
func (c *converter) node(name string, n *corev1.Node) proxy.Node {
	out := proxy.Node{Name: name}
	if n == nil {
		c.warn(kindNode, name, "no Node object: the node has no known address or zone")
		return out
	}
	out.Zone = n.Labels[corev1.LabelTopologyZone]
	ips, bad := nodeAddrs(n)
	for _, i := range bad {
		c.warn(kindNode, name, "status.addresses[%d]: %q is not an IP address; left out", i, n.Status.Addresses[i].Address)
	}
	out.IPs = ips
	return out
}

// nodeAddrs returns a Node's addresses as svcplan uses them: its InternalIP
// addresses and, for a family without any, its ExternalIP addresses, in the
// Node's order; and the indexes of the addresses that do not parse.
func nodeAddrs(n *corev1.Node) (ips []netip.Addr, bad []int) {
	var internal, external []netip.Addr
	for i, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		ip, err := parseAddr(a.Address)
		if err != nil {
			bad = append(bad, i)
			continue
		}
		if a.Type == corev1.NodeInternalIP {
			internal = append(internal, ip)
		} else {
			external = append(external, ip)
		}
	}
	ips = internal
	for _, family6 := range []bool{false, true} {
		if slices.ContainsFunc(internal, func(a netip.Addr) bool { return a.Is6() == family6 }) {
			continue
		}
		for _, a := range external {
			if a.Is6() == family6 {
				ips = append(ips, a)
			}
		}
	}
	var out []netip.Addr
	for _, a := range ips {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, bad
}

// primaryIPs returns a Node's primary addresses as kube-proxy picks them:
// the first address of each family, InternalIP before ExternalIP.
func primaryIPs(n *corev1.Node) []netip.Addr {
	if n == nil {
		return nil
	}
	ips, _ := nodeAddrs(n)
	var out []netip.Addr
	for _, family6 := range []bool{false, true} {
		if i := slices.IndexFunc(ips, func(a netip.Addr) bool { return a.Is6() == family6 }); i >= 0 {
			out = append(out, ips[i])
		}
	}
	return out
}

// services converts the services and attaches their endpoints.
func (c *converter) services(node string) []proxy.Service {
	byKey := map[string]*proxy.Service{}
	known := map[string]bool{}
	for _, s := range lastOf(c.objs.Services, serviceKey, c.dupWarner(kindService)) {
		key := serviceKey(s)
		known[key] = true
		if ps, ok := c.service(s); ok {
			byKey[key] = &ps
		}
	}
	sets := map[string]endpointSet{}
	slicesOf := lastOf(c.objs.EndpointSlices, sliceKey, c.dupWarner(kindEndpointSlice))
	slices.SortFunc(slicesOf, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, es := range slicesOf {
		name := sliceKey(es)
		svc := es.Labels[discoveryv1.LabelServiceName]
		key := es.Namespace + "/" + svc
		switch {
		case svc == "":
			c.warn(kindEndpointSlice, name, "no %s label; skipped", discoveryv1.LabelServiceName)
			continue
		case !known[key]:
			c.warn(kindEndpointSlice, name, "Service %s not found; skipped", key)
			continue
		case byKey[key] == nil:
			continue // a headless or ExternalName service
		}
		if sets[key] == nil {
			sets[key] = endpointSet{}
		}
		c.slice(es, sets[key], node)
	}
	var out []proxy.Service
	for key, s := range byKey {
		s.Endpoints = sets[key].sorted()
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b proxy.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func serviceKey(s *corev1.Service) string { return s.Namespace + "/" + s.Name }

func sliceKey(s *discoveryv1.EndpointSlice) string { return s.Namespace + "/" + s.Name }

func (c *converter) dupWarner(kind string) func(string) {
	return func(key string) { c.warn(kind, key, "appears more than once; the last one is used") }
}

// lastOf returns pointers to the elements of list, keeping only the last of
// those with the same key, in list order; dup is called with the key of
// each element that repeats an earlier one.
func lastOf[T any](list []T, key func(*T) string, dup func(string)) []*T {
	last := map[string]int{}
	for i := range list {
		k := key(&list[i])
		if _, seen := last[k]; seen {
			dup(k)
		}
		last[k] = i
	}
	var out []*T
	for i := range list {
		if last[key(&list[i])] == i {
			out = append(out, &list[i])
		}
	}
	return out
}

// service converts one Service; false means it has no proxy rules.
func (c *converter) service(s *corev1.Service) (proxy.Service, bool) {
	name := serviceKey(s)
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		c.warn(kindService, name, "type ExternalName has no proxy rules; skipped")
		return proxy.Service{}, false
	}
	if proxyName, ok := s.Labels[LabelServiceProxyName]; ok {
		c.warn(kindService, name, "label %s=%q hands it to another proxy; skipped", LabelServiceProxyName, proxyName)
		return proxy.Service{}, false
	}
	ips, ok := c.clusterIPs(s, name)
	if !ok {
		return proxy.Service{}, false
	}
	out := proxy.Service{
		Namespace:                s.Namespace,
		Name:                     s.Name,
		Type:                     proxy.ServiceType(s.Spec.Type),
		ClusterIPs:               ips,
		Ports:                    servicePorts(s.Spec.Ports),
		ExternalIPs:              c.addrs(name, "spec.externalIPs", s.Spec.ExternalIPs),
		LoadBalancerIPs:          c.loadBalancerIPs(s, name),
		LoadBalancerSourceRanges: c.sourceRanges(s, name),
		SessionAffinity:          proxy.SessionAffinity(s.Spec.SessionAffinity),
		ExternalTrafficPolicy:    proxy.TrafficPolicy(s.Spec.ExternalTrafficPolicy),
		HealthCheckNodePort:      int(s.Spec.HealthCheckNodePort),
	}
	if p := s.Spec.InternalTrafficPolicy; p != nil {
		out.InternalTrafficPolicy = proxy.TrafficPolicy(*p)
	}
	if a := s.Spec.SessionAffinityConfig; s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP &&
		a != nil && a.ClientIP != nil && a.ClientIP.TimeoutSeconds != nil {
		out.AffinityTimeoutSeconds = int(*a.ClientIP.TimeoutSeconds)
	}
	return out, true
}

// clusterIPs returns a service's cluster IPs; false means the service is
// headless or has no usable cluster IP.
func (c *converter) clusterIPs(s *corev1.Service, name string) ([]netip.Addr, bool) {
	var ips []netip.Addr
	switch {
	case len(s.Spec.ClusterIPs) > 0 && s.Spec.ClusterIPs[0] == corev1.ClusterIPNone,
		len(s.Spec.ClusterIPs) == 0 && s.Spec.ClusterIP == corev1.ClusterIPNone:
		return nil, false
	case len(s.Spec.ClusterIPs) > 0:
		ips = c.addrs(name, "spec.clusterIPs", s.Spec.ClusterIPs)
	case s.Spec.ClusterIP == "":
		c.warn(kindService, name, "no spec.clusterIP; skipped")
		return nil, false
	default:
		ip, err := parseAddr(s.Spec.ClusterIP)
		if err != nil {
			c.warn(kindService, name, "spec.clusterIP: %q is not an IP address; skipped", s.Spec.ClusterIP)
			return nil, false
		}
		ips = []netip.Addr{ip}
	}
	if len(ips) == 0 {
		c.warn(kindService, name, "no cluster IP parses; skipped")
		return nil, false
	}
	return ips, true
}

func servicePorts(ports []corev1.ServicePort) []proxy.ServicePort {
	var out []proxy.ServicePort
	for _, p := range ports {
		sp := proxy.ServicePort{
			Name:     p.Name,
			Protocol: proxy.Protocol(p.Protocol),
			Port:     int(p.Port),
			NodePort: int(p.NodePort),
		}
		if p.TargetPort.Type == intstr.String {
			sp.TargetPortName = p.TargetPort.StrVal
		} else {
			sp.TargetPort = int(p.TargetPort.IntVal)
		}
		out = append(out, sp)
	}
	return out
}

// addrs parses the addresses of a service's field, warning about those that
// do not parse.
func (c *converter) addrs(name, field string, list []string) []netip.Addr {
	var out []netip.Addr
	for i, s := range list {
		a, err := parseAddr(s)
		if err != nil {
			c.warn(kindService, name, "%s[%d]: %q is not an IP address; left out", field, i, s)
			continue
		}
		out = append(out, a)
	}
	return out
}

// loadBalancerIPs returns the ingress IPs of a LoadBalancer service that
// traffic reaches as a VIP (ipMode VIP or unset), as kube-proxy programs
// them.
func (c *converter) loadBalancerIPs(s *corev1.Service, name string) []netip.Addr {
	ing := s.Status.LoadBalancer.Ingress
	if len(ing) == 0 {
		return nil
	}
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		c.warn(kindService, name, "status.loadBalancer.ingress ignored: type is not LoadBalancer")
		return nil
	}
	var out []netip.Addr
	for i, in := range ing {
		switch {
		case in.IP == "" && in.Hostname != "":
			c.warn(kindService, name, "status.loadBalancer.ingress[%d]: hostname %q has no IP; left out", i, in.Hostname)
			continue
		case in.IP == "":
			continue
		case in.IPMode != nil && *in.IPMode == corev1.LoadBalancerIPModeProxy:
			continue // the load balancer proxies; traffic never arrives for the VIP
		}
		a, err := parseAddr(in.IP)
		if err != nil {
			c.warn(kindService, name, "status.loadBalancer.ingress[%d].ip: %q is not an IP address; left out", i, in.IP)
			continue
		}
		out = append(out, a)
	}
	return out
}

// sourceRanges returns spec.loadBalancerSourceRanges, or when it is empty
// the service.beta.kubernetes.io/load-balancer-source-ranges annotation,
// with surrounding spaces trimmed as kube-proxy trims them.
func (c *converter) sourceRanges(s *corev1.Service, name string) []netip.Prefix {
	list, field := s.Spec.LoadBalancerSourceRanges, "spec.loadBalancerSourceRanges"
	if len(list) == 0 {
		if v := s.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey]; strings.TrimSpace(v) != "" {
			list = strings.Split(v, ",")
			field = "metadata.annotations[" + corev1.AnnotationLoadBalancerSourceRangesKey + "]"
		}
	}
	var out []netip.Prefix
	for i, r := range list {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		p, err := parsePrefix(r)
		if err != nil {
			c.warn(kindService, name, "%s[%d]: %v; left out", field, i, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// endpointSet holds the endpoints of one service, by address.
type endpointSet map[netip.Addr]proxy.Endpoint

func (s endpointSet) sorted() []proxy.Endpoint {
	var out []proxy.Endpoint
	for _, e := range s {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b proxy.Endpoint) int { return a.Addr.Compare(b.Addr) })
	return out
}

// slice adds the endpoints of one EndpointSlice to set.
func (c *converter) slice(es *discoveryv1.EndpointSlice, set endpointSet, node string) {
	name := sliceKey(es)
	switch es.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
	case discoveryv1.AddressTypeFQDN:
		c.warn(kindEndpointSlice, name, "addressType FQDN is not proxied; skipped")
		return
	default:
		c.warn(kindEndpointSlice, name, "addressType %q is not IPv4 or IPv6; skipped", es.AddressType)
		return
	}
	var ports []proxy.EndpointPort
	for i, p := range es.Ports {
		if p.Port == nil || *p.Port == 0 {
			c.warn(kindEndpointSlice, name, "ports[%d]: no port number; left out", i)
			continue
		}
		ports = append(ports, proxy.EndpointPort{Name: deref(p.Name), Port: int(*p.Port)})
	}
	sortPorts(ports)
	for i := range es.Endpoints {
		if ep, ok := c.endpoint(es, i, ports); ok {
			c.add(set, ep, node, name)
		}
	}
}

// endpoint converts endpoint i of es; false means it has no usable address.
func (c *converter) endpoint(es *discoveryv1.EndpointSlice, i int, ports []proxy.EndpointPort) (proxy.Endpoint, bool) {
	name := sliceKey(es)
	e := &es.Endpoints[i]
	if len(e.Addresses) == 0 {
		c.warn(kindEndpointSlice, name, "endpoints[%d]: no addresses; skipped", i)
		return proxy.Endpoint{}, false
	}
	a, err := parseAddr(e.Addresses[0])
	if err != nil {
		c.warn(kindEndpointSlice, name, "endpoints[%d].addresses[0]: %q is not an IP address; skipped", i, e.Addresses[0])
		return proxy.Endpoint{}, false
	}
	if a.Is6() != (es.AddressType == discoveryv1.AddressTypeIPv6) {
		c.warn(kindEndpointSlice, name, "endpoints[%d].addresses[0]: %s is not of addressType %s", i, a, es.AddressType)
	}
	ready := e.Conditions.Ready == nil || *e.Conditions.Ready
	serving := ready
	if e.Conditions.Serving != nil {
		serving = *e.Conditions.Serving
	}
	ep := proxy.Endpoint{
		Addr:        a,
		Ports:       slices.Clone(ports),
		Ready:       ready,
		Serving:     serving,
		Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
		NodeName:    deref(e.NodeName),
		Zone:        deref(e.Zone),
	}
	if h := e.Hints; h != nil {
		for _, z := range h.ForZones {
			ep.ZoneHints = append(ep.ZoneHints, z.Name)
		}
		for _, n := range h.ForNodes {
			ep.NodeHints = append(ep.NodeHints, n.Name)
		}
	}
	return ep, true
}

// add adds ep to set. An address already there is merged: the endpoint
// local to node is kept (else the one seen first), with the ports of both.
func (c *converter) add(set endpointSet, ep proxy.Endpoint, node, slice string) {
	old, dup := set[ep.Addr]
	if !dup {
		set[ep.Addr] = ep
		return
	}
	keep, other := old, ep
	if ep.IsLocal(node) && !old.IsLocal(node) {
		keep, other = ep, old
	}
	for _, p := range other.Ports {
		if n, ok := keep.PortNumber(p.Name); ok {
			if n != p.Port {
				c.warn(kindEndpointSlice, slice, "endpoint %s: port %q is %d in one slice and %d in another; %d is used", ep.Addr, p.Name, n, p.Port, n)
			}
			continue
		}
		keep.Ports = append(keep.Ports, p)
	}
	sortPorts(keep.Ports)
	set[ep.Addr] = keep
}

func sortPorts(ps []proxy.EndpointPort) {
	slices.SortFunc(ps, func(a, b proxy.EndpointPort) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Port, b.Port))
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// parseAddr parses an IP address as Kubernetes does: IPv4-mapped IPv6
// addresses are IPv4, IPv4 octets may have leading zeros (read as
// decimal), and zones are refused.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if a, ok := parseLegacyIPv4(s); ok {
			return a, nil
		}
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("ParseAddr(%q): zone not allowed", s)
	}
	return a.Unmap(), nil
}

// parseLegacyIPv4 parses dotted-decimal IPv4 whose octets have leading
// zeros, which Kubernetes accepts in objects created before it refused
// them.
func parseLegacyIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return netip.Addr{}, false
		}
		n, _ := strconv.Atoi(p)
		if n > 255 {
			return netip.Addr{}, false
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// parsePrefix parses a CIDR as Kubernetes does: the address may have bits
// set past the prefix length (they are cleared), and its address is read
// as parseAddr reads one.
func parsePrefix(s string) (netip.Prefix, error) {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok || bits == "" || len(bits) > 3 || strings.Trim(bits, "0123456789") != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	a, err := parseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	n, _ := strconv.Atoi(bits)
	p := netip.PrefixFrom(a, n)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: prefix length %d is too long", s, n)
	}
	return p.Masked(), nil
}
