package translate

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// The ipsets of kube-proxy's IPVS mode, in the order it creates them.
// IPv6 sets are named with "KUBE-6-" instead of "KUBE-", cut to 31 bytes.
const (
	setLoopBack = iota
	setClusterIP
	setExternalIP
	setExternalIPLocal
	setLoadBalancer
	setLoadBalancerFW
	setLoadBalancerLocal
	setLoadBalancerSourceIP
	setLoadBalancerSourceCIDR
	setNodePortTCP
	setNodePortLocalTCP
	setNodePortUDP
	setNodePortLocalUDP
	setNodePortSCTP
	setNodePortLocalSCTP
	setHealthCheckNodePort
	setIPVSIPs
	numIPVSSets
)

type ipvsSetInfo struct {
	name    string
	typ     ipset.Type
	comment string
}

var ipvsSets = [numIPVSSets]ipvsSetInfo{
	{"KUBE-LOOP-BACK", ipset.TypeHashIPPortIP, "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"},
	{"KUBE-CLUSTER-IP", ipset.TypeHashIPPort, "Kubernetes service cluster ip + port for masquerade purpose"},
	{"KUBE-EXTERNAL-IP", ipset.TypeHashIPPort, "Kubernetes service external ip + port for masquerade and filter purpose"},
	{"KUBE-EXTERNAL-IP-LOCAL", ipset.TypeHashIPPort, "Kubernetes service external ip + port with externalTrafficPolicy=local"},
	{"KUBE-LOAD-BALANCER", ipset.TypeHashIPPort, "Kubernetes service lb portal"},
	{"KUBE-LOAD-BALANCER-FW", ipset.TypeHashIPPort, "Kubernetes service load balancer ip + port for load balancer with sourceRange"},
	{"KUBE-LOAD-BALANCER-LOCAL", ipset.TypeHashIPPort, "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"},
	{"KUBE-LOAD-BALANCER-SOURCE-IP", ipset.TypeHashIPPortIP, "Kubernetes service load balancer ip + port + source IP for packet filter purpose"},
	{"KUBE-LOAD-BALANCER-SOURCE-CIDR", ipset.TypeHashIPPortNet, "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"},
	{"KUBE-NODE-PORT-TCP", ipset.TypeBitmapPort, "Kubernetes nodeport TCP port for masquerade purpose"},
	{"KUBE-NODE-PORT-LOCAL-TCP", ipset.TypeBitmapPort, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"},
	{"KUBE-NODE-PORT-UDP", ipset.TypeBitmapPort, "Kubernetes nodeport UDP port for masquerade purpose"},
	{"KUBE-NODE-PORT-LOCAL-UDP", ipset.TypeBitmapPort, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"},
	{"KUBE-NODE-PORT-SCTP-HASH", ipset.TypeHashIPPort, "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"},
	{"KUBE-NODE-PORT-LOCAL-SCTP-HASH", ipset.TypeHashIPPort, "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"},
	{"KUBE-HEALTH-CHECK-NODE-PORT", ipset.TypeBitmapPort, "Kubernetes health check node port"},
	{"KUBE-IPVS-IPS", ipset.TypeHashIP, "Addresses on the ipvs interface"},
}

// IPVSSetName returns the name of one of kube-proxy's IPVS-mode ipsets in
// a family: base ("KUBE-CLUSTER-IP") for IPv4; for IPv6 the "KUBE-" prefix
// becomes "KUBE-6-" and the name is cut to [ipset.MaxNameLen] bytes
// ("KUBE-6-LOAD-BALANCER-SOURCE-CID"), as kube-proxy names them.
func IPVSSetName(base string, ipv6 bool) string {
	if !ipv6 {
		return base
	}
	name := strings.Replace(base, "KUBE-", "KUBE-6-", 1)
	if len(name) > ipset.MaxNameLen {
		name = name[:ipset.MaxNameLen]
	}
	return name
}

// ipvsFamily collects one family's part of the IPVS-mode plan.
type ipvsFamily struct {
	st        *proxy.State
	ipv6      bool
	scheduler ipvs.Scheduler
	// parallelism is how many goroutines compile services (see
	// WithParallelism).
	parallelism int
	sel         proxy.Selector
	entries     [numIPVSSets][]ipset.Entry
	servers     []ipvs.VirtualServer
	bound       []netip.Addr
	nodeIPs     []netip.Addr
	// noNodeAccess are the load balancer IP:ports with source ranges that
	// do not admit the node itself; the node is kept from them by a rule
	// each in filter KUBE-IPVS-OUT-FILTER.
	noNodeAccess []ipset.Entry
}

// compileIPVS compiles st into kube-proxy's IPVS layout: the ipsets and
// virtual servers of both families, and the fixed iptables plan of each.
func compileIPVS(st *proxy.State, o *options) (*ipset.Plan, *ipvs.Plan, []*iptables.Plan, error) {
	v4, v6 := families(st)
	sets := &ipset.Plan{}
	vp := &ipvs.Plan{Interface: ipvs.DefaultInterface}
	var rules []*iptables.Plan
	for _, ipv6 := range []bool{false, true} {
		if (ipv6 && !v6) || (!ipv6 && !v4) {
			continue
		}
		f := &ipvsFamily{st: st, ipv6: ipv6, scheduler: o.ipvs.scheduler, parallelism: o.parallelism, nodeIPs: ipvsNodeIPs(st, ipv6)}
		f.services()
		f.appendSets(sets)
		vp.VirtualServers = append(vp.VirtualServers, f.servers...)
		vp.Addresses = append(vp.Addresses, f.bound...)
		p, err := f.rules()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", familyName(ipv6), err)
		}
		rules = append(rules, p)
	}
	// A stable sort keeps, of two virtual servers with one address, the
	// one of the first service, which Compact then keeps.
	vp.VirtualServers = sortServersStable(vp.VirtualServers)
	slices.SortFunc(vp.Addresses, netip.Addr.Compare)
	vp.VirtualServers = slices.CompactFunc(vp.VirtualServers, func(a, b ipvs.VirtualServer) bool {
		return a.Protocol == b.Protocol && a.Addr == b.Addr
	})
	vp.Addresses = slices.Compact(vp.Addresses)
	if err := vp.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if err := sets.Validate(); err != nil {
		return nil, nil, nil, err
	}
	return sets, vp, rules, nil
}

// ipvsNodeIPs returns the node addresses NodePort virtual servers listen
// on: those of the family that serve NodePorts, without loopback and
// link-local addresses, which kube-proxy's IPVS mode never uses.
func ipvsNodeIPs(st *proxy.State, ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range st.NodePortIPs(ipv6) {
		if !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

func (f *ipvsFamily) familyAddr(as []netip.Addr) (netip.Addr, bool) {
	for _, a := range as {
		if a.Is6() == f.ipv6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// services adds every service port's set members and virtual servers, in
// service order so that, where two services claim one address and port,
// the first keeps it (as the first matching rule does in iptables mode).
func (f *ipvsFamily) services() {
	svcs := make([]*proxy.Service, len(f.st.Services))
	for i := range f.st.Services {
		svcs[i] = &f.st.Services[i]
	}
	// Names are unique in a valid State, so an unstable sort gives the
	// stable order; input from kube.StateFor is sorted already.
	byName := func(a, b *proxy.Service) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	}
	if !slices.IsSortedFunc(svcs, byName) {
		slices.SortFunc(svcs, byName)
	}
	// Parts of the service list compile at once, each into its own
	// ipvsFamily; they are joined in order, so the plan does not depend on
	// the parallelism.
	n := f.parallelism
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	n = max(1, min(n, len(svcs)/256))
	parts := make([]*ipvsFamily, n)
	var wg sync.WaitGroup
	for i := range parts {
		part := &ipvsFamily{st: f.st, ipv6: f.ipv6, scheduler: f.scheduler, nodeIPs: f.nodeIPs}
		parts[i] = part
		chunk := svcs[i*len(svcs)/n : (i+1)*len(svcs)/n]
		wg.Go(func() { part.compileServices(chunk) })
	}
	wg.Wait()
	for _, part := range parts {
		f.servers = append(f.servers, part.servers...)
		f.bound = append(f.bound, part.bound...)
		f.noNodeAccess = append(f.noNodeAccess, part.noNodeAccess...)
		for i := range f.entries {
			f.entries[i] = append(f.entries[i], part.entries[i]...)
		}
	}
}

// compileServices adds the service ports of svcs.
func (f *ipvsFamily) compileServices(svcs []*proxy.Service) {
	ports := 0
	for _, svc := range svcs {
		ports += len(svc.Ports)
	}
	f.servers = make([]ipvs.VirtualServer, 0, ports)
	f.bound = make([]netip.Addr, 0, ports)
	f.entries[setClusterIP] = make([]ipset.Entry, 0, ports)
	for _, svc := range svcs {
		cip, ok := f.familyAddr(svc.ClusterIPs)
		if !ok {
			continue
		}
		for j := range svc.Ports {
			f.servicePort(svc, &svc.Ports[j], cip)
		}
	}
}
