package translate

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

// The fixed chains of kube-proxy's iptables layout.
const (
	chainServices         = "KUBE-SERVICES"
	chainExternalServices = "KUBE-EXTERNAL-SERVICES"
	chainNodePorts        = "KUBE-NODEPORTS"
	chainPostrouting      = "KUBE-POSTROUTING"
	chainMarkMasq         = "KUBE-MARK-MASQ"
	chainForward          = "KUBE-FORWARD"
	chainProxyFirewall    = "KUBE-PROXY-FIREWALL"
	chainKubeletFirewall  = "KUBE-FIREWALL"
)

// family is what the rules of every service port in one address family
// depend on. The workers share it and only read it.
type family struct {
	st   *proxy.State
	ipv6 bool
	opts *options
	// mark is the masquerade mark as kube-proxy prints it ("0x00004000").
	mark string
	// cidr is the cluster CIDR of the family; valid only when hasCIDR.
	cidr    netip.Prefix
	hasCIDR bool
	// nodeIP is the node's first address of the family; it may be invalid.
	nodeIP netip.Addr
	// large is kube-proxy's large cluster mode: no per-endpoint comments.
	large bool
	// probs[n] is the probability 1/n with ten decimals.
	probs []string
	// recentMask is the source mask the recent match prints.
	recentMask string
	// ports are the service ports to program, in plan order.
	ports []portRef
	// svcs are the indexes in st.Services of the services of the family,
	// in plan order.
	svcs []int32
}

// portRef is one service port to program in one family.
type portRef struct {
	svc       *proxy.Service
	port      *proxy.ServicePort
	clusterIP netip.Addr
	// bound is an upper bound on the number of nat chains the port needs.
	bound int
	// svcIdx is the index of svc in the State's Services.
	svcIdx int32
	// eps is the number of endpoints counted for large cluster mode
	// (iptables only).
	eps int32
}

// compileFamily compiles the iptables plan of one family.
func compileFamily(st *proxy.State, ipv6 bool, o *options) (*iptables.Plan, error) {
	return compileFamilyTraced(st, ipv6, o, nil)
}

// compileFamilyTraced is compileFamily that, when tr is not nil, also
// records in tr where each service port's output sits in the plan.
func compileFamilyTraced(st *proxy.State, ipv6 bool, o *options, tr *famTrace) (*iptables.Plan, error) {
	f := newFamily(st, ipv6, o)
	shards := f.split()
	total := 0
	for _, sh := range shards {
		total += sh.bound
	}
	// The workers write their chains straight into the nat table, each in
	// its own stretch after the four fixed chains; the stretches are then
	// closed up.
	nat := make([]iptables.Chain, 4+total)
	workers := make([]*worker, len(shards))
	off := 4
	for i, sh := range shards {
		workers[i] = newWorker(f, sh, nat[off:off+sh.bound:off+sh.bound])
		workers[i].marking = tr != nil
		off += sh.bound
	}
	runWorkers(workers)
	n := 4
	var fragBase [numFrags]int32
	port := 0
	for _, w := range workers {
		if w.err != nil {
			return nil, w.err
		}
		if tr != nil {
			tr.iptWorker(w, int32(n), &fragBase, port)
			port += len(w.ports)
		}
		n += copy(nat[n:], w.out[:w.n])
	}
	clear(nat[n:])
	nat = nat[:n]
	filter, err := f.filterChains(workerFrags(workers))
	if err != nil {
		return nil, err
	}
	fixed, err := f.natChains(workerFrags(workers))
	if err != nil {
		return nil, err
	}
	copy(nat, fixed)
	p := f.plan(filter, nat)
	if tr != nil {
		tr.large, tr.ports, tr.order = f.large, f.ports, f.svcs
	}
	return p, nil
}

// plan returns the family's plan with the given tables.
func (f *family) plan(filter, nat []iptables.Chain) *iptables.Plan {
	fam := iptables.IPv4
	if f.ipv6 {
		fam = iptables.IPv6
	}
	return &iptables.Plan{
		Family: fam,
		Tables: []iptables.TableChains{
			{Table: iptables.TableFilter, Chains: filter},
			{Table: iptables.TableNAT, Chains: nat},
		},
		Jumps: f.jumps(),
	}
}

// newFamily collects the service ports of one family in plan order:
// services sorted by namespace and name, ports in their order. Services
// without a cluster IP of the family are left out, as kube-proxy does.
func newFamily(st *proxy.State, ipv6 bool, o *options) *family {
	f := newFamilyBase(st, ipv6, o)
	f.svcs = sortedServices(st, ipv6)
	nports := 0
	for _, i := range f.svcs {
		nports += len(st.Services[i].Ports)
	}
	f.ports = make([]portRef, 0, nports)
	endpoints, most := 0, 1
	for _, i := range f.svcs {
		f.ports = f.appendPorts(f.ports, i)
	}
	for i := range f.ports {
		endpoints += int(f.ports[i].eps)
		most = max(most, int(f.ports[i].eps))
	}
	f.large = endpoints > o.largeClusterThreshold
	f.setProbabilities(most)
	return f
}

// newFamilyBase returns the family with what every service port depends
// on, and no ports.
func newFamilyBase(st *proxy.State, ipv6 bool, o *options) *family {
	f := &family{st: st, ipv6: ipv6, opts: o, recentMask: "255.255.255.255"}
	if ipv6 {
		f.recentMask = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	f.mark = fmt.Sprintf("%#08x", st.Config.Mark())
	f.cidr, f.hasCIDR = st.Config.ClusterCIDR(ipv6)
	f.nodeIP, _ = familyAddr(st.Node.IPs, ipv6)
	return f
}

// appendPorts appends the ports of service i of the state to ports.
func (f *family) appendPorts(ports []portRef, i int32) []portRef {
	svc := &f.st.Services[i]
	cip, _ := familyAddr(svc.ClusterIPs, f.ipv6)
	for j := range svc.Ports {
		p := &svc.Ports[j]
		n := countEndpoints(svc, p, f.ipv6)
		ports = append(ports, portRef{svc: svc, port: p, clusterIP: cip, bound: f.chainBound(svc, p) + n, svcIdx: i, eps: int32(n)})
	}
	return ports
}

// setProbabilities makes the probabilities 1/n for n up to most.
func (f *family) setProbabilities(most int) {
	f.probs = make([]string, most+1)
	for n := 1; n <= most; n++ {
		f.probs[n] = formatProbability(n)
	}
}

// sortedServices returns the indexes of the services of st that have a
// cluster IP of the family, sorted by namespace and name.
func sortedServices(st *proxy.State, ipv6 bool) []int32 {
	idx := make([]int32, 0, len(st.Services))
	for i := range st.Services {
		if _, ok := familyAddr(st.Services[i].ClusterIPs, ipv6); ok {
			idx = append(idx, int32(i))
		}
	}
	byName := func(a, b int32) int {
		sa, sb := &st.Services[a], &st.Services[b]
		if c := strings.Compare(sa.Namespace, sb.Namespace); c != 0 {
			return c
		}
		return strings.Compare(sa.Name, sb.Name)
	}
	// Input from kube.StateFor is already sorted; checking is cheaper
	// than sorting.
	if !slices.IsSortedFunc(idx, byName) {
		slices.SortFunc(idx, byName)
	}
	return idx
}

// familyAddr returns the first address of the family in addrs.
func familyAddr(addrs []netip.Addr, ipv6 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if ofFamily(a, ipv6) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// chainBound returns an upper bound on the number of service port chains
// (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW-) that port of svc needs.
func (f *family) chainBound(svc *proxy.Service, port *proxy.ServicePort) int {
	n := 1
	if svc.InternalLocal() || svc.ExternalLocal() {
		n++
	}
	lb := countFamily(svc.LoadBalancerIPs, f.ipv6) > 0
	if port.NodePort != 0 || lb || countFamily(svc.ExternalIPs, f.ipv6) > 0 {
		n++
	}
	if lb && len(svc.LoadBalancerSourceRanges) > 0 {
		n++
	}
	return n
}

// countFamily returns the number of addresses of the family in addrs.
func countFamily(addrs []netip.Addr, ipv6 bool) int {
	n := 0
	for _, a := range addrs {
		if ofFamily(a, ipv6) {
			n++
		}
	}
	return n
}

// countEndpoints returns the number of endpoints of svc in one family that
// have port, as kube-proxy counts them for large cluster mode.
func countEndpoints(svc *proxy.Service, port *proxy.ServicePort, ipv6 bool) int {
	n := 0
	for i := range svc.Endpoints {
		e := &svc.Endpoints[i]
		if !ofFamily(e.Addr, ipv6) {
			continue
		}
		if _, ok := e.PortNumber(port.Name); ok {
			n++
		}
	}
	return n
}

// ofFamily reports whether a is a valid address of the family.
func ofFamily(a netip.Addr, ipv6 bool) bool {
	if ipv6 {
		return a.Is6()
	}
	return a.Is4()
}

// shard is a run of consecutive service ports compiled by one worker.
type shard struct {
	ports []portRef
	bound int
}

// minShardChains is the least work, in chains, worth a goroutine of its
// own when the parallelism is left to Compile.
const minShardChains = 512

// split cuts the service ports into at most parallelism shards of about
// equal work.
func (f *family) split() []shard {
	total := 0
	for i := range f.ports {
		total += f.ports[i].bound
	}
	par := f.opts.parallelism
	if par <= 0 {
		par = min(runtime.GOMAXPROCS(0), total/minShardChains)
	}
	par = max(1, min(par, len(f.ports)))
	shards := make([]shard, 0, par)
	start, acc := 0, 0
	for i := range f.ports {
		acc += f.ports[i].bound
		if len(shards) < par-1 && acc*par >= total*(len(shards)+1) {
			shards = append(shards, shard{ports: f.ports[start : i+1]})
			start = i + 1
		}
	}
	shards = append(shards, shard{ports: f.ports[start:]})
	for i := range shards {
		for j := range shards[i].ports {
			shards[i].bound += shards[i].ports[j].bound
		}
	}
	return shards
}

// runWorkers runs the workers, concurrently when there is more than one.
func runWorkers(ws []*worker) {
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
