package translate

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// The fixed chains and sets of kube-proxy's nftables layout.
const (
	nftFilterPrerouting     = "filter-prerouting"
	nftFilterInput          = "filter-input"
	nftFilterForward        = "filter-forward"
	nftFilterOutput         = "filter-output"
	nftFilterOutputPostDNAT = "filter-output-post-dnat"
	nftNATPrerouting        = "nat-prerouting"
	nftNATOutput            = "nat-output"
	nftNATPostrouting       = "nat-postrouting"

	nftServices               = "services"
	nftServiceEndpointsCheck  = "service-endpoints-check"
	nftNodePortEndpointsCheck = "nodeport-endpoints-check"
	nftRejectChain            = "reject-chain"
	nftClusterIPsCheck        = "cluster-ips-check"
	nftFirewallCheck          = "firewall-check"
	nftMasquerading           = "masquerading"
	nftMarkMasq               = "mark-for-masquerade"

	nftClusterIPsSet       = "cluster-ips"
	nftNodePortIPsSet      = "nodeport-ips"
	nftServiceIPsMap       = "service-ips"
	nftServiceNodePortsMap = "service-nodeports"
	nftNoEndpointServices  = "no-endpoint-services"
	nftNoEndpointNodePorts = "no-endpoint-nodeports"
	nftFirewallIPsMap      = "firewall-ips"
)

// The element lists a worker fills, one per fixed set or map.
const (
	elemClusterIPs = iota
	elemFirewallIPs
	elemNoEndpointNodePorts
	elemNoEndpointServices
	elemServiceIPs
	elemServiceNodePorts
	numElemLists
)

// nftFamily is what the nftables rules of every service port in one
// address family depend on. The workers share it and only read it.
type nftFamily struct {
	st   *proxy.State
	ipv6 bool
	opts *options
	fam  nftables.Family
	// ipx is "ip" or "ip6", as rules name the family's header.
	ipx string
	// mark is the masquerade mark as kube-proxy prints it ("0x00004000").
	mark string
	// cidr is the cluster CIDR of the family; valid only when hasCIDR.
	cidr    netip.Prefix
	hasCIDR bool
	// nodeIP is the node's first address of the family; it may be invalid.
	nodeIP netip.Addr
	// ports are the service ports to program, in plan order.
	ports []portRef
	// svcs are the indexes in st.Services of the services of the family,
	// in plan order.
	svcs []int32
}

// compileNFTables compiles st into one nftables plan per family, in the
// layout of kube-proxy's nftables proxier whose base chains are
// filter-prerouting, filter-input, filter-forward and filter-output at
// priority dstnat-10 and filter-output-post-dnat at dstnat+10 (the
// layout the FACTS file describes; later kube-proxy releases renamed
// them filter-prerouting-pre-dnat and filter-output-pre-dnat and moved
// the endpoint checks to priority filter). Per service port it makes the
// same decisions as kube-proxy's syncProxyRules, element for element and
// rule for rule, with three choices of its own: the dropping of traffic
// to unallocated cluster IPs is left out (the model knows no service
// CIDRs); a map key that two services share (the same external IP and
// port) keeps the first service's element, where kube-proxy keeps
// whichever it meets last; and the text replaces the whole table (see
// [nftables.Plan.WriteTo]).
func compileNFTables(st *proxy.State, o *options) ([]*nftables.Plan, error) {
	v4, v6 := families(st)
	var plans []*nftables.Plan
	if v4 {
		p, err := compileNFTFamily(st, false, o)
		if err != nil {
			return nil, fmt.Errorf("ipv4: %w", err)
		}
		plans = append(plans, p)
	}
	if v6 {
		p, err := compileNFTFamily(st, true, o)
		if err != nil {
			return nil, fmt.Errorf("ipv6: %w", err)
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// compileNFTFamily compiles the nftables plan of one family.
func compileNFTFamily(st *proxy.State, ipv6 bool, o *options) (*nftables.Plan, error) {
	return compileNFTFamilyTraced(st, ipv6, o, nil)
}

// compileNFTFamilyTraced is compileNFTFamily that, when tr is not nil,
// also records in tr where each service port's output sits in the plan.
func compileNFTFamilyTraced(st *proxy.State, ipv6 bool, o *options, tr *famTrace) (*nftables.Plan, error) {
	f := newNFTFamily(st, ipv6, o)
	fixed := f.fixedChains()
	// The workers write their chains straight into the plan's chains, each
	// in its own stretch after the fixed chains; the stretches are then
	// closed up.
	total := len(fixed)
	for i := range f.ports {
		total += f.ports[i].bound
	}
	chains := make([]nftables.Chain, total)
	copy(chains, fixed)
	workers, windows := f.workers(chains[len(fixed):])
	for _, w := range workers {
		w.marking = tr != nil
	}
	runNFTWorkers(workers)
	nchains, nsets := len(fixed), 0
	var nelems [numElemLists]int
	mayRepeat := false
	sets := f.fixedSets()
	port := 0
	for _, w := range workers {
		if w.err != nil {
			return nil, w.err
		}
		if tr != nil {
			tr.nftWorker(w, int32(nchains), int32(nsets), &nelems, port)
			port += len(w.ports)
		}
		if w.n > 0 && &chains[nchains] != &w.out[0] {
			copy(chains[nchains:], w.out[:w.n])
		}
		nchains += w.n
		nsets += len(w.affinity)
		for i := range nelems {
			nelems[i] += len(w.elems[i])
		}
		mayRepeat = mayRepeat || w.sharedKeys
	}
	p := &nftables.Plan{Table: nftables.Table{Family: f.fam, Comment: "rules for kube-proxy"}}
	clear(chains[nchains:])
	p.Chains = chains[:nchains]
	p.Sets = make([]nftables.Set, 0, len(sets)+nsets)
	for _, s := range sets {
		if s.list >= 0 && !windowed(s.list) {
			s.set.Elements = make([]nftables.Element, 0, nelems[s.list])
		}
		p.Sets = append(p.Sets, s.set)
	}
	for i, s := range sets {
		if s.list >= 0 {
			p.Sets[i].Elements = gatherElements(workers, s.list, windows[s.list], p.Sets[i].Elements)
		}
	}
	for _, w := range workers {
		p.Sets = append(p.Sets, w.affinity...)
	}
	if tr != nil {
		tr.nftPlan(p, sets, len(fixed), f.ports, f.svcs)
	}
	if mayRepeat {
		dedupSharedKeys(p, sets, tr != nil)
	}
	return p, nil
}

// dedupSharedKeys keeps the first element of each key in the maps whose
// keys services may share. With keep, the elements are copied first, so
// that the lists a trace holds stay as the workers made them.
func dedupSharedKeys(p *nftables.Plan, sets []fixedSet, keep bool) {
	for i, s := range sets {
		if s.list == elemServiceIPs || s.list == elemNoEndpointServices || s.list == elemFirewallIPs {
			es := p.Sets[i].Elements
			if keep {
				es = slices.Clone(es)
			}
			p.Sets[i].Elements = firstOfEachKey(es)
		}
	}
}

// newNFTFamily collects the service ports of one family in plan order:
// services sorted by namespace and name, ports in their order; services
// without a cluster IP of the family are left out, as kube-proxy does.
func newNFTFamily(st *proxy.State, ipv6 bool, o *options) *nftFamily {
	f := newNFTFamilyBase(st, ipv6, o)
	f.svcs = sortedServices(st, ipv6)
	nports := 0
	for _, i := range f.svcs {
		nports += len(st.Services[i].Ports)
	}
	f.ports = make([]portRef, 0, nports)
	for _, i := range f.svcs {
		f.ports = f.appendPorts(f.ports, i)
	}
	return f
}

// newNFTFamilyBase returns the family with what every service port
// depends on, and no ports.
func newNFTFamilyBase(st *proxy.State, ipv6 bool, o *options) *nftFamily {
	f := &nftFamily{st: st, ipv6: ipv6, opts: o, fam: nftables.IPv4, ipx: "ip"}
	if ipv6 {
		f.fam, f.ipx = nftables.IPv6, "ip6"
	}
	f.mark = fmt.Sprintf("%#08x", st.Config.Mark())
	f.cidr, f.hasCIDR = st.Config.ClusterCIDR(ipv6)
	f.nodeIP, _ = familyAddr(st.Node.IPs, ipv6)
	return f
}

// appendPorts appends the ports of service i of the state to ports.
func (f *nftFamily) appendPorts(ports []portRef, i int32) []portRef {
	svc := &f.st.Services[i]
	cip, _ := familyAddr(svc.ClusterIPs, f.ipv6)
	for j := range svc.Ports {
		p := &svc.Ports[j]
		ports = append(ports, portRef{svc: svc, port: p, clusterIP: cip, bound: nftChainBound(svc, p, f.ipv6), svcIdx: i})
	}
	return ports
}

// nftChainBound returns an upper bound on the number of chains port of
// svc needs: service-, local-, external-, firewall- and one per endpoint.
func nftChainBound(svc *proxy.Service, port *proxy.ServicePort, ipv6 bool) int {
	n := 1 + countEndpoints(svc, port, ipv6)
	if svc.InternalLocal() || svc.ExternalLocal() {
		n++
	}
	lb := countFamily(svc.LoadBalancerIPs, ipv6) > 0
	if port.NodePort != 0 || lb || countFamily(svc.ExternalIPs, ipv6) > 0 {
		n++
	}
	if lb && countPrefixes(svc.LoadBalancerSourceRanges, ipv6) > 0 {
		n++
	}
	return n
}

// workers cuts the service ports into shards of about equal work, one
// worker each, giving each its stretch of out and its windows of the
// windowed element lists, which it returns.
func (f *nftFamily) workers(out []nftables.Chain) ([]*nftWorker, [numElemLists][]nftables.Element) {
	total := 0
	for i := range f.ports {
		total += f.ports[i].bound
	}
	par := f.opts.parallelism
	if par <= 0 {
		par = min(runtime.GOMAXPROCS(0), total/minShardChains)
	}
	par = max(1, min(par, len(f.ports)))
	nc, ns := 0, 0
	for i := range f.ports {
		c, s := f.elemBounds(&f.ports[i])
		nc, ns = nc+c, ns+s
	}
	clusterIPs, serviceIPs := make([]nftables.Element, nc), make([]nftables.Element, ns)
	ws := make([]*nftWorker, 0, par)
	start, acc, off, offC, offS := 0, 0, 0, 0, 0
	cut := func(end int) {
		n, c, s := 0, 0, 0
		for i := start; i < end; i++ {
			pc, ps := f.elemBounds(&f.ports[i])
			n, c, s = n+f.ports[i].bound, c+pc, s+ps
		}
		w := newNFTWorker(f, f.ports[start:end], out[off:off+n:off+n])
		w.elems[elemClusterIPs] = clusterIPs[offC : offC : offC+c]
		w.elems[elemServiceIPs] = serviceIPs[offS : offS : offS+s]
		ws = append(ws, w)
		start, off, offC, offS = end, off+n, offC+c, offS+s
	}
	for i := range f.ports {
		acc += f.ports[i].bound
		if len(ws) < par-1 && acc*par >= total*(len(ws)+1) {
			cut(i + 1)
		}
	}
	cut(len(f.ports))
	var windows [numElemLists][]nftables.Element
	windows[elemClusterIPs], windows[elemServiceIPs] = clusterIPs, serviceIPs
	return ws, windows
}

func runNFTWorkers(ws []*nftWorker) {
	if len(ws) == 1 {
		ws[0].run()
		return
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(w.run)
	}
	wg.Wait()
}

// windowed reports whether the workers write the elements of list
// straight into the plan's slice, each in its own window, as they do for
// the two lists with an element for (nearly) every port.
func windowed(list int) bool { return list == elemClusterIPs || list == elemServiceIPs }

// elemBounds returns upper bounds on the elements the port at ports[i]
// adds to the windowed lists.
func (f *nftFamily) elemBounds(pr *portRef) (clusterIPs, serviceIPs int) {
	if pr.port == &pr.svc.Ports[0] {
		clusterIPs = 1
	}
	return clusterIPs, 1 + countFamily(pr.svc.ExternalIPs, f.ipv6) + countFamily(pr.svc.LoadBalancerIPs, f.ipv6)
}

// gatherElements returns the elements of list from every worker, in
// worker order. For a windowed list the workers' slices are windows of
// all, which is closed up in place; otherwise they are appended to dst.
func gatherElements(ws []*nftWorker, list int, all, dst []nftables.Element) []nftables.Element {
	if !windowed(list) {
		for _, w := range ws {
			dst = append(dst, w.elems[list]...)
		}
		return dst
	}
	n := 0
	for _, w := range ws {
		es := w.elems[list]
		if len(es) > 0 && (n >= len(all) || &all[n] != &es[0]) {
			if n+len(es) > len(all) {
				// A bound was exceeded and the worker's slice grew
				// elsewhere: start over in a new array.
				all = append(all[:n:n], es...)
				n = len(all)
				continue
			}
			copy(all[n:], es)
		}
		n += len(es)
	}
	clear(all[n:])
	return all[:n]
}

// elementKey is the key of a map element, for finding repeats.
type elementKey struct {
	addr  netip.Addr
	proto nftables.Protocol
	port  uint16
}

// firstOfEachKey keeps the first element of each key. Two services may
// share an external or load balancer IP and port; kube-proxy's iptables
// rules let the first service in order win, and a map holds one element
// per key, so the compiler keeps the first.
func firstOfEachKey(es []nftables.Element) []nftables.Element {
	seen := make(map[elementKey]bool, len(es))
	return slices.DeleteFunc(es, func(e nftables.Element) bool {
		k := elementKey{e.Addr, e.Proto, e.Port}
		if seen[k] {
			return true
		}
		seen[k] = true
		return false
	})
}

// fixedSet is one of the layout's fixed sets and the worker element list
// that fills it (-1 for none).
type fixedSet struct {
	set  nftables.Set
	list int
}

// nodePortsEverywhere reports whether NodePorts are served on every
// local address of the family (except loopback): Config.NodePortAddresses
// has no prefix of the family, or a /0 one, as kube-proxy reads it.
func (f *nftFamily) nodePortsEverywhere() bool {
	all := true
	for _, p := range f.st.Config.NodePortAddresses {
		if ofFamily(p.Addr(), f.ipv6) {
			if p.Bits() == 0 {
				return true
			}
			all = false
		}
	}
	return all
}

// fixedSets returns the fixed sets and maps in kube-proxy's order. The
// nodeport-ips set exists only when NodePort addresses are limited; it
// holds the node's addresses in them, never loopback (kube-proxy does not
// support localhost NodePorts in this mode).
func (f *nftFamily) fixedSets() []fixedSet {
	addr := f.fam.AddrType()
	svcKey := []nftables.DataType{addr, nftables.TypeInetProto, nftables.TypeInetService}
	portKey := []nftables.DataType{nftables.TypeInetProto, nftables.TypeInetService}
	vmap := func(name string, key []nftables.DataType, comment string, list int) fixedSet {
		return fixedSet{nftables.Set{Name: name, Key: key, Value: nftables.TypeVerdict, Comment: comment}, list}
	}
	out := []fixedSet{{nftables.Set{Name: nftClusterIPsSet, Key: []nftables.DataType{addr}, Comment: "Active ClusterIPs"}, elemClusterIPs}}
	if !f.nodePortsEverywhere() {
		s := nftables.Set{Name: nftNodePortIPsSet, Key: []nftables.DataType{addr}, Comment: "IPs that accept NodePort traffic"}
		for _, a := range f.st.NodePortIPs(f.ipv6) {
			if n := len(s.Elements); !a.IsLoopback() && (n == 0 || s.Elements[n-1].Addr != a) {
				s.Elements = append(s.Elements, nftables.Element{Addr: a})
			}
		}
		out = append(out, fixedSet{s, -1})
	}
	return append(out,
		vmap(nftFirewallIPsMap, svcKey, "destinations that are subject to LoadBalancerSourceRanges", elemFirewallIPs),
		vmap(nftNoEndpointNodePorts, portKey, "vmap to drop or reject packets to service nodeports with no endpoints", elemNoEndpointNodePorts),
		vmap(nftNoEndpointServices, svcKey, "vmap to drop or reject packets to services with no endpoints", elemNoEndpointServices),
		vmap(nftServiceIPsMap, svcKey, "ClusterIP, ExternalIP and LoadBalancer IP traffic", elemServiceIPs),
		vmap(nftServiceNodePortsMap, portKey, "NodePort traffic", elemServiceNodePorts),
	)
}

// fixedChains returns the fixed chains with their rules. The base chains
// and their jumps are kube-proxy's: the filter chains run before DNAT
// (priority dstnat-10), except filter-output-post-dnat (dstnat+10), which
// checks cluster IPs after it.
func (f *nftFamily) fixedChains() []nftables.Chain {
	x := f.ipx
	loopback := x + " daddr != 127.0.0.0/8"
	if f.ipv6 {
		loopback = x + " daddr != ::1"
	}
	nodePorts := "fib daddr type local " + loopback + " meta l4proto . th dport vmap @" + nftServiceNodePortsMap
	nodePortChecks := loopback + " meta l4proto . th dport vmap @" + nftNoEndpointNodePorts
	if !f.nodePortsEverywhere() {
		nodePorts = x + " daddr @" + nftNodePortIPsSet + " meta l4proto . th dport vmap @" + nftServiceNodePortsMap
		nodePortChecks = x + " daddr @" + nftNodePortIPsSet + " meta l4proto . th dport vmap @" + nftNoEndpointNodePorts
	}
	newJump := func(c string) string { return "ct state new jump " + c }
	base := func(name string, t nftables.ChainType, h nftables.Hook, prio int, rules ...string) nftables.Chain {
		c := mustChain(name, rules...)
		c.Base = &nftables.BaseChain{Type: t, Hook: h, Priority: prio}
		return c
	}
	filter, nat := nftables.ChainTypeFilter, nftables.ChainTypeNAT
	dstnat := nftables.PriorityDstNAT
	reject := mustChain(nftRejectChain, "reject")
	reject.Comment = "helper for @no-endpoint-services / @no-endpoint-nodeports"
	return []nftables.Chain{
		base(nftFilterPrerouting, filter, nftables.HookPrerouting, dstnat-10, newJump(nftFirewallCheck)),
		base(nftFilterInput, filter, nftables.HookInput, dstnat-10,
			newJump(nftNodePortEndpointsCheck), newJump(nftServiceEndpointsCheck)),
		base(nftFilterForward, filter, nftables.HookForward, dstnat-10,
			newJump(nftServiceEndpointsCheck), newJump(nftClusterIPsCheck)),
		base(nftFilterOutput, filter, nftables.HookOutput, dstnat-10,
			newJump(nftServiceEndpointsCheck), newJump(nftFirewallCheck)),
		base(nftFilterOutputPostDNAT, filter, nftables.HookOutput, dstnat+10, newJump(nftClusterIPsCheck)),
		base(nftNATPrerouting, nat, nftables.HookPrerouting, dstnat, "jump "+nftServices),
		base(nftNATOutput, nat, nftables.HookOutput, dstnat, "jump "+nftServices),
		base(nftNATPostrouting, nat, nftables.HookPostrouting, nftables.PrioritySrcNAT, "jump "+nftMasquerading),
		mustChain(nftNodePortEndpointsCheck, nodePortChecks),
		mustChain(nftServiceEndpointsCheck, x+" daddr . meta l4proto . th dport vmap @"+nftNoEndpointServices),
		mustChain(nftFirewallCheck, x+" daddr . meta l4proto . th dport vmap @"+nftFirewallIPsMap),
		mustChain(nftServices, x+" daddr . meta l4proto . th dport vmap @"+nftServiceIPsMap, nodePorts),
		mustChain(nftClusterIPsCheck, x+` daddr @`+nftClusterIPsSet+` reject comment "Reject traffic to invalid ports of ClusterIPs"`),
		mustChain(nftMasquerading, "mark and "+f.mark+" == 0 return", "mark set mark xor "+f.mark, "masquerade fully-random"),
		mustChain(nftMarkMasq, "mark set mark or "+f.mark),
		reject,
	}
}

// mustChain returns a chain of fixed rules, which always parse.
func mustChain(name string, rules ...string) nftables.Chain {
	c, err := nftables.NewChain(name, rules...)
	if err != nil {
		panic(fmt.Sprintf("fixed nftables chain %s: %v", name, err))
	}
	return c
}
