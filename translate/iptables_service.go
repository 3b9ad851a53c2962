package translate

import (
	"net/netip"
	"strconv"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

// worker compiles a shard of service ports: their nat chains, and their
// rules in the dispatch chains (KUBE-SERVICES and the like), which the
// family concatenates in shard order afterwards. Each worker has its own
// arena and scratch buffers, so workers run concurrently.
type worker struct {
	f     *family
	ports []portRef
	// out receives the nat chains, n of them so far; its length is the
	// shard's bound.
	out []iptables.Chain
	n   int
	err error
	// arena holds the names and bodies of the worker's chains.
	arena arena

	// frags are the rules for the dispatch chains, as text, indexed by
	// the frag constants.
	frags [numFrags][]byte
	// marking asks run to record in marks where each port's output ends,
	// for the incremental Compiler.
	marking bool
	marks   []iptMark

	// Scratch buffers, reused from port to port.
	sel   proxy.Selector
	text  []byte // the body of the chain being built
	hin   []byte // hash input, or a name being made
	eps   []epRef
	epBuf []byte

	// The port being compiled.
	spn   []byte // "ns/name:port", or "ns/name" for an unnamed port
	proto string // "tcp"
	match string // "-m tcp -p tcp"
	hash  [hashLen]byte
}

// epRef is one endpoint of the port being compiled.
type epRef struct {
	// text is epBuf[start:end], "ip:port"; the address alone is
	// epBuf[ipStart:ipEnd].
	start, end, ipStart, ipEnd int
	hash                       [hashLen]byte
	// name is the chain name, a substring of the policy chain body that
	// jumps to it at nameAt.
	name               string
	nameAt             int
	inCluster, inLocal bool
}

// newWorker returns a worker for shard sh that writes its chains into out.
func newWorker(f *family, sh shard, out []iptables.Chain) *worker {
	w := &worker{f: f, ports: sh.ports, out: out}
	w.arena.chunk = min(256<<10, max(4<<10, 200*sh.bound))
	w.frags[fragNatServices] = make([]byte, 0, 160*len(sh.ports))
	return w
}

// run compiles the shard's ports, stopping at the first error.
func (w *worker) run() {
	if w.marking {
		w.marks = make([]iptMark, 0, len(w.ports))
	}
	for i := range w.ports {
		if err := w.port(&w.ports[i]); err != nil {
			w.err = err
			return
		}
		if w.marking {
			m := iptMark{n: int32(w.n)}
			for k := range w.frags {
				m.frags[k] = int32(len(w.frags[k]))
			}
			w.marks = append(w.marks, m)
		}
	}
}

// iptMark is where a worker's output stood after one port: its chain
// count and the lengths of its fragments.
type iptMark struct {
	n     int32
	frags [numFrags]int32
}

// The fragments a service port adds to the dispatch chains.
const (
	fragNatServices = iota
	fragNatNodePorts
	fragFilServices
	fragFilExternal
	fragFilNodePorts
	fragFilFirewall
	numFrags
)

// decision is what kube-proxy decides for one service port before writing
// its rules; the names follow syncProxyRules.
type decision struct {
	hasEndpoints, hasInternal, hasExternal  bool
	usesCluster, usesLocal, usesExt, usesFW bool
	internalLocal, externalLocal            bool
	// extAccessible: the port has a NodePort, external IPs or load
	// balancer IPs of the family.
	extAccessible bool
	// The filter target and comment suffix for internal and external
	// traffic that has nowhere to go.
	intTarget, intComment string
	extTarget, extComment string
}

// port compiles one service port.
func (w *worker) port(pr *portRef) error {
	svc, port := pr.svc, pr.port
	if err := checkName(svc.Namespace, svc.Name, port.Name); err != nil {
		return err
	}
	w.begin(pr)
	pe := w.sel.Select(w.f.st, svc, port, w.f.ipv6)
	d := w.decide(pr, &pe)
	w.dispatch(pr, &d)
	return w.chains(pr, &d)
}

// begin sets up the name, protocol and hash of the port.
func (w *worker) begin(pr *portRef) {
	svc, port := pr.svc, pr.port
	w.spn = append(w.spn[:0], svc.Namespace...)
	w.spn = append(w.spn, '/')
	w.spn = append(w.spn, svc.Name...)
	if port.Name != "" {
		// kube-proxy leaves out the colon too for an unnamed port.
		w.spn = append(w.spn, ':')
		w.spn = append(w.spn, port.Name...)
	}
	switch port.ProtocolOrDefault() {
	case proxy.ProtocolUDP:
		w.proto, w.match = "udp", "-m udp -p udp"
	case proxy.ProtocolSCTP:
		w.proto, w.match = "sctp", "-m sctp -p sctp"
	default:
		w.proto, w.match = "tcp", "-m tcp -p tcp"
	}
	w.hin = append(append(w.hin[:0], w.spn...), w.proto...)
	hashName(&w.hash, w.hin)
}

// decide makes kube-proxy's decisions for the port from its endpoint
// choice, and collects the endpoints that get a chain.
func (w *worker) decide(pr *portRef, pe *proxy.PortEndpoints) decision {
	svc, port, ipv6 := pr.svc, pr.port, w.f.ipv6
	var d decision
	lb := countFamily(svc.LoadBalancerIPs, ipv6) > 0
	d.extAccessible = port.NodePort != 0 || lb || countFamily(svc.ExternalIPs, ipv6) > 0
	d.internalLocal, d.externalLocal = svc.InternalLocal(), svc.ExternalLocal()
	usesClusterEps := !d.internalLocal || d.extAccessible
	usesLocalEps := d.internalLocal || (d.externalLocal && d.extAccessible)
	d.hasEndpoints = pe.HasAny
	d.usesCluster = usesClusterEps && len(pe.Cluster) > 0
	d.usesLocal = usesLocalEps && len(pe.Local) > 0
	d.hasInternal = d.hasEndpoints && (!d.internalLocal || len(pe.Local) > 0)
	d.hasExternal = d.hasEndpoints && (!d.externalLocal || len(pe.Local) > 0)
	d.usesExt = d.hasEndpoints && d.extAccessible
	d.usesFW = d.hasEndpoints && lb && countPrefixes(svc.LoadBalancerSourceRanges, ipv6) > 0
	switch {
	case !d.hasEndpoints:
		d.intTarget, d.intComment = "REJECT", " has no endpoints"
		d.extTarget, d.extComment = "REJECT", " has no endpoints"
	default:
		if !d.hasInternal {
			d.intTarget, d.intComment = "DROP", " has no local endpoints"
		}
		if !d.hasExternal {
			d.extTarget, d.extComment = "DROP", " has no local endpoints"
		}
	}
	w.endpoints(pe, usesClusterEps, usesLocalEps)
	return d
}

// endpoints fills w.eps with the endpoints that get a KUBE-SEP- chain:
// those of pe.All in a list the port uses, in pe.All's order.
func (w *worker) endpoints(pe *proxy.PortEndpoints, useCluster, useLocal bool) {
	w.eps = w.eps[:0]
	w.epBuf = w.epBuf[:0]
	ci, li := 0, 0
	for _, t := range pe.All {
		var e epRef
		if useCluster && ci < len(pe.Cluster) && pe.Cluster[ci].AddrPort == t.AddrPort {
			e.inCluster = true
			ci++
		}
		if useLocal && li < len(pe.Local) && pe.Local[li].AddrPort == t.AddrPort {
			e.inLocal = true
			li++
		}
		if !e.inCluster && !e.inLocal {
			continue
		}
		e.start = len(w.epBuf)
		if t.AddrPort.Addr().Is6() {
			w.epBuf = append(w.epBuf, '[')
		}
		e.ipStart = len(w.epBuf)
		w.epBuf = t.AddrPort.Addr().AppendTo(w.epBuf)
		e.ipEnd = len(w.epBuf)
		if t.AddrPort.Addr().Is6() {
			w.epBuf = append(w.epBuf, ']')
		}
		w.epBuf = append(w.epBuf, ':')
		w.epBuf = strconv.AppendUint(w.epBuf, uint64(t.AddrPort.Port()), 10)
		e.end = len(w.epBuf)
		w.hin = append(append(append(w.hin[:0], w.spn...), w.proto...), w.epBuf[e.start:e.end]...)
		hashName(&e.hash, w.hin)
		w.eps = append(w.eps, e)
	}
}

// countPrefixes returns the number of prefixes of the family in ps.
func countPrefixes(ps []netip.Prefix, ipv6 bool) int {
	n := 0
	for _, p := range ps {
		if ofFamily(p.Addr(), ipv6) {
			n++
		}
	}
	return n
}

// dispatch writes the port's rules in the dispatch chains: nat
// KUBE-SERVICES and KUBE-NODEPORTS, filter KUBE-SERVICES,
// KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS and KUBE-PROXY-FIREWALL.
func (w *worker) dispatch(pr *portRef, d *decision) {
	svc, port, ipv6 := pr.svc, pr.port, w.f.ipv6
	if d.hasInternal {
		b := w.comment(w.frags[fragNatServices], "", " cluster IP")
		b = w.dst(b, pr.clusterIP, port.Port)
		w.frags[fragNatServices] = w.jumpHash(b, internalPrefix(d))
	} else {
		b := w.comment(w.frags[fragFilServices], "", d.intComment)
		b = w.dst(b, pr.clusterIP, port.Port)
		w.frags[fragFilServices] = jump(b, d.intTarget)
	}
	for _, ip := range svc.ExternalIPs {
		if !ofFamily(ip, ipv6) {
			continue
		}
		if d.hasEndpoints {
			b := w.comment(w.frags[fragNatServices], "", " external IP")
			b = w.dst(b, ip, port.Port)
			w.frags[fragNatServices] = w.jumpHash(b, PrefixServiceExternal)
		}
		if !d.hasExternal {
			b := w.comment(w.frags[fragFilExternal], "", d.extComment)
			b = w.dst(b, ip, port.Port)
			w.frags[fragFilExternal] = jump(b, d.extTarget)
		}
	}
	w.dispatchLB(pr, d)
	if port.NodePort != 0 {
		if d.hasEndpoints {
			b := w.commentBare(w.frags[fragNatNodePorts])
			b = w.dport(b, port.NodePort)
			w.frags[fragNatNodePorts] = w.jumpHash(b, PrefixServiceExternal)
		}
		if !d.hasExternal {
			b := w.comment(w.frags[fragFilExternal], "", d.extComment)
			b = append(b, "-m addrtype --dst-type LOCAL "...)
			b = w.dport(b, port.NodePort)
			w.frags[fragFilExternal] = jump(b, d.extTarget)
		}
	}
	if hc := svc.HealthCheckNodePort; hc != 0 {
		b := w.comment(w.frags[fragFilNodePorts], "", " health check node port")
		b = append(b, "-m tcp -p tcp --dport "...)
		b = strconv.AppendInt(b, int64(hc), 10)
		w.frags[fragFilNodePorts] = jump(append(b, ' '), "ACCEPT")
	}
}

// dispatchLB writes the rules for the port's load balancer IPs.
func (w *worker) dispatchLB(pr *portRef, d *decision) {
	svc, port, ipv6 := pr.svc, pr.port, w.f.ipv6
	lbPrefix := PrefixServiceExternal
	if d.usesFW {
		lbPrefix = PrefixServiceFirewall
	}
	for _, ip := range svc.LoadBalancerIPs {
		if !ofFamily(ip, ipv6) {
			continue
		}
		if d.hasEndpoints {
			b := w.comment(w.frags[fragNatServices], "", " loadbalancer IP")
			b = w.dst(b, ip, port.Port)
			w.frags[fragNatServices] = w.jumpHash(b, lbPrefix)
		}
		if d.usesFW {
			b := append(w.frags[fragFilFirewall], `-m comment --comment "`...)
			b = append(b, w.spn...)
			b = append(b, " traffic not accepted by "+PrefixServiceFirewall...)
			b = append(b, w.hash[:]...)
			b = append(b, `" `...)
			b = w.dst(b, ip, port.Port)
			w.frags[fragFilFirewall] = jump(b, "DROP")
		}
	}
	if d.hasExternal {
		return
	}
	for _, ip := range svc.LoadBalancerIPs {
		if ofFamily(ip, ipv6) {
			b := w.comment(w.frags[fragFilExternal], "", d.extComment)
			b = w.dst(b, ip, port.Port)
			w.frags[fragFilExternal] = jump(b, d.extTarget)
		}
	}
}

// internalPrefix returns the prefix of the chain cluster IP traffic goes
// to.
func internalPrefix(d *decision) string {
	if d.internalLocal {
		return PrefixServiceLocal
	}
	return PrefixServiceCluster
}

// externalPolicyPrefix returns the prefix of the chain external traffic
// ends in.
func externalPolicyPrefix(d *decision) string {
	if d.externalLocal {
		return PrefixServiceLocal
	}
	return PrefixServiceCluster
}

// comment appends `-m comment --comment "pre spn post" `.
func (w *worker) comment(b []byte, pre, post string) []byte {
	b = append(b, `-m comment --comment "`...)
	b = append(b, pre...)
	b = append(b, w.spn...)
	b = append(b, post...)
	return append(b, `" `...)
}

// commentBare appends `-m comment --comment spn `, unquoted as kube-proxy
// writes it (a service port name holds no space).
func (w *worker) commentBare(b []byte) []byte {
	b = append(b, "-m comment --comment "...)
	b = append(b, w.spn...)
	return append(b, ' ')
}

// dst appends the protocol match, `-d ip --dport port `.
func (w *worker) dst(b []byte, ip netip.Addr, port int) []byte {
	b = append(b, w.match...)
	b = append(b, " -d "...)
	b = ip.AppendTo(b)
	b = append(b, " --dport "...)
	b = strconv.AppendInt(b, int64(port), 10)
	return append(b, ' ')
}

// dport appends the protocol match and `--dport port `.
func (w *worker) dport(b []byte, port int) []byte {
	b = append(b, w.match...)
	b = append(b, " --dport "...)
	b = strconv.AppendInt(b, int64(port), 10)
	return append(b, ' ')
}

// jumpHash ends a rule with a jump to the port's chain with prefix.
func (w *worker) jumpHash(b []byte, prefix string) []byte {
	b = append(b, "-j "...)
	b = append(b, prefix...)
	b = append(b, w.hash[:]...)
	return append(b, '\n')
}

// jump ends a rule with a jump to target.
func jump(b []byte, target string) []byte {
	b = append(b, "-j "...)
	b = append(b, target...)
	return append(b, '\n')
}
