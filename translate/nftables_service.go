package translate

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// nftWorker compiles a run of service ports into their chains, affinity
// sets and elements of the fixed maps, which the family concatenates in
// worker order afterwards. Each worker has its own arena and scratch
// buffers, so workers run concurrently.
type nftWorker struct {
	f     *nftFamily
	ports []portRef
	err   error

	// out receives the chains, n of them so far; its length is an upper
	// bound on the chains the worker's ports need.
	out      []nftables.Chain
	n        int
	affinity []nftables.Set
	elems    [numElemLists][]nftables.Element
	// sharedKeys reports an element keyed by an external or load balancer
	// IP, which another service may share.
	sharedKeys bool
	// marking asks run to record in marks where each port's output ends,
	// for the incremental Compiler.
	marking bool
	marks   []nftMark

	arena arena
	sel   proxy.Selector
	text  []byte // the body of the chain being built
	hin   []byte // hash input
	buf   []byte // a name being made
	eps   []nftEndpoint
	epBuf []byte // the endpoint chain names, until they are in a chain body

	// The port being compiled.
	proto nftables.Protocol
	// spn is "ns/name/proto/port", the hash input of the port's names.
	spn []byte
	// base is the port's name base, "HASH-ns/name/proto/port".
	base []byte
}

// nftEndpoint is one endpoint of the port being compiled that gets a
// chain.
type nftEndpoint struct {
	target netip.AddrPort
	// chain is the chain's name: a substring of the first policy chain
	// body that jumps to it, once that is made; until then the name is
	// epBuf[start:end], and at is its offset in the body being built (-1
	// before it is written).
	chain              string
	start, end, at     int
	affinity           string
	inCluster, inLocal bool
}

// appendChainName appends the name of e's chain to b.
func (w *nftWorker) appendChainName(b []byte, e *nftEndpoint) []byte {
	if e.chain != "" {
		return append(b, e.chain...)
	}
	return append(b, w.epBuf[e.start:e.end]...)
}

// nftDecision is what kube-proxy decides for one service port before
// writing its objects; the names follow its syncProxyRules.
type nftDecision struct {
	hasEndpoints, hasInternal, hasExternal  bool
	usesCluster, usesLocal, usesExt, usesFW bool
	internalLocal, externalLocal            bool
	// The verdicts of the no-endpoint maps for internal and external
	// destinations.
	intVerdict, extVerdict nftables.Action
	// The chain names; empty for a chain the port does not use.
	svcChain, localChain, extChain, fwChain string
	cluster, local                          []proxy.Target
	// comment is the port's name for element comments, made on demand.
	comment string
}

// newNFTWorker returns a worker for ports that writes its chains into
// out.
func newNFTWorker(f *nftFamily, ports []portRef, out []nftables.Chain) *nftWorker {
	w := &nftWorker{f: f, ports: ports, out: out}
	w.arena.chunk = min(256<<10, max(4<<10, 160*len(out)))
	return w
}

// run compiles the worker's ports, stopping at the first error.
func (w *nftWorker) run() {
	if w.marking {
		w.marks = make([]nftMark, 0, len(w.ports))
	}
	for i := range w.ports {
		shared := w.sharedKeys
		w.sharedKeys = false
		if err := w.port(&w.ports[i]); err != nil {
			w.err = err
			return
		}
		if w.marking {
			m := nftMark{n: int32(w.n), affinity: int32(len(w.affinity)), shared: w.sharedKeys}
			for k := range w.elems {
				m.elems[k] = int32(len(w.elems[k]))
			}
			w.marks = append(w.marks, m)
		}
		w.sharedKeys = w.sharedKeys || shared
	}
}

// nftMark is where an nftables worker's output stood after one port: its
// chain, element and affinity set counts, and whether the port added an
// element with a shared key.
type nftMark struct {
	n, affinity int32
	elems       [numElemLists]int32
	shared      bool
}

// port compiles one service port.
func (w *nftWorker) port(pr *portRef) error {
	svc, port := pr.svc, pr.port
	if err := checkName(svc.Namespace, svc.Name, port.Name); err != nil {
		return err
	}
	w.begin(pr)
	pe := w.sel.Select(w.f.st, svc, port, w.f.ipv6)
	d := w.decide(pr, &pe)
	w.endpoints(pr, &pe, &d)
	w.elements(pr, &d)
	return w.chainsOf(pr, &d)
}

// begin sets up the protocol and name base of the port.
func (w *nftWorker) begin(pr *portRef) {
	switch pr.port.ProtocolOrDefault() {
	case proxy.ProtocolUDP:
		w.proto = nftables.ProtocolUDP
	case proxy.ProtocolSCTP:
		w.proto = nftables.ProtocolSCTP
	default:
		w.proto = nftables.ProtocolTCP
	}
	w.spn = appendServicePortName(w.spn[:0], pr.svc.Namespace, pr.svc.Name, string(w.proto), pr.port.Name)
	w.base = nftHashAndTruncate(w.base[:0], w.spn)
}

// name returns prefix + the port's name base, in the arena.
func (w *nftWorker) name(prefix string) string {
	w.buf = append(append(w.buf[:0], prefix...), w.base...)
	return w.arena.add(w.buf)
}

// decide makes kube-proxy's decisions for the port from its endpoint
// choice. They match the iptables compiler's, except that the firewall
// chain does not depend on the port having endpoints.
func (w *nftWorker) decide(pr *portRef, pe *proxy.PortEndpoints) nftDecision {
	svc, port, ipv6 := pr.svc, pr.port, w.f.ipv6
	var d nftDecision
	lb := countFamily(svc.LoadBalancerIPs, ipv6) > 0
	extAccessible := port.NodePort != 0 || lb || countFamily(svc.ExternalIPs, ipv6) > 0
	d.internalLocal, d.externalLocal = svc.InternalLocal(), svc.ExternalLocal()
	usesClusterEps := !d.internalLocal || extAccessible
	usesLocalEps := d.internalLocal || (d.externalLocal && extAccessible)
	if usesClusterEps {
		d.cluster = pe.Cluster
	}
	if usesLocalEps {
		d.local = pe.Local
	}
	d.hasEndpoints = pe.HasAny
	d.usesCluster = len(d.cluster) > 0
	d.usesLocal = len(d.local) > 0
	d.hasInternal = d.hasEndpoints && (!d.internalLocal || len(pe.Local) > 0)
	d.hasExternal = d.hasEndpoints && (!d.externalLocal || len(pe.Local) > 0)
	d.usesExt = d.hasEndpoints && extAccessible
	d.usesFW = lb && countPrefixes(svc.LoadBalancerSourceRanges, ipv6) > 0
	d.intVerdict, d.extVerdict = nftables.Drop(), nftables.Drop()
	if !d.hasEndpoints {
		d.intVerdict, d.extVerdict = nftables.Goto(nftRejectChain), nftables.Goto(nftRejectChain)
	}
	if d.usesCluster {
		d.svcChain = w.name(NFTPrefixService)
	}
	if d.usesLocal {
		d.localChain = w.name(NFTPrefixLocal)
	}
	if d.usesExt {
		d.extChain = w.name(NFTPrefixExternal)
	}
	if d.usesFW {
		d.fwChain = w.name(NFTPrefixFirewall)
	}
	return d
}

// endpoints fills w.eps with the endpoints that get a chain: those of
// pe.All in a list the port uses, in pe.All's order.
func (w *nftWorker) endpoints(pr *portRef, pe *proxy.PortEndpoints, d *nftDecision) {
	w.eps, w.epBuf = w.eps[:0], w.epBuf[:0]
	affinity := pr.svc.AffinityTimeout() > 0
	ci, li := 0, 0
	for _, t := range pe.All {
		var e nftEndpoint
		if ci < len(d.cluster) && d.cluster[ci].AddrPort == t.AddrPort {
			e.inCluster = true
			ci++
		}
		if li < len(d.local) && d.local[li].AddrPort == t.AddrPort {
			e.inLocal = true
			li++
		}
		if !e.inCluster && !e.inLocal {
			continue
		}
		e.target, e.at = t.AddrPort, -1
		w.hin = appendEndpointSuffix(append(w.hin[:0], w.spn...), t.AddrPort)
		e.start = len(w.epBuf)
		w.epBuf = nftHashAndTruncate(append(w.epBuf, NFTPrefixEndpoint...), w.hin)
		e.end = len(w.epBuf)
		if affinity {
			w.buf = append(append(w.buf[:0], NFTPrefixAffinity...), w.epBuf[e.start+len(NFTPrefixEndpoint):e.end]...)
			e.affinity = w.arena.add(w.buf)
		}
		w.eps = append(w.eps, e)
	}
}

// elements adds the port's elements to the fixed sets and maps.
func (w *nftWorker) elements(pr *portRef, d *nftDecision) {
	svc, port, ipv6 := pr.svc, pr.port, w.f.ipv6
	if port == &svc.Ports[0] {
		w.add(elemClusterIPs, nftables.Element{Addr: pr.clusterIP})
	}
	key := func(a netip.Addr) nftables.Element {
		return nftables.Element{Addr: a, Proto: w.proto, Port: uint16(port.Port)}
	}
	if d.hasInternal {
		internal := d.svcChain
		if d.internalLocal {
			internal = d.localChain
		}
		w.addAction(elemServiceIPs, key(pr.clusterIP), nftables.Goto(internal), "")
	} else {
		w.addAction(elemNoEndpointServices, key(pr.clusterIP), d.intVerdict, w.comment(pr, d))
	}
	for _, ip := range svc.ExternalIPs {
		if !ofFamily(ip, ipv6) {
			continue
		}
		w.sharedKeys = true
		if d.hasEndpoints {
			w.addAction(elemServiceIPs, key(ip), nftables.Goto(d.extChain), "")
		}
		if !d.hasExternal {
			w.addAction(elemNoEndpointServices, key(ip), d.extVerdict, w.comment(pr, d))
		}
	}
	for _, ip := range svc.LoadBalancerIPs {
		if !ofFamily(ip, ipv6) {
			continue
		}
		w.sharedKeys = true
		if d.hasEndpoints {
			w.addAction(elemServiceIPs, key(ip), nftables.Goto(d.extChain), "")
		}
		if d.usesFW {
			w.addAction(elemFirewallIPs, key(ip), nftables.Goto(d.fwChain), "")
		}
	}
	if !d.hasExternal {
		for _, ip := range svc.LoadBalancerIPs {
			if ofFamily(ip, ipv6) {
				w.addAction(elemNoEndpointServices, key(ip), d.extVerdict, w.comment(pr, d))
			}
		}
	}
	if np := port.NodePort; np != 0 {
		e := nftables.Element{Proto: w.proto, Port: uint16(np)}
		if d.hasEndpoints {
			w.addAction(elemServiceNodePorts, e, nftables.Goto(d.extChain), "")
		}
		if !d.hasExternal {
			w.addAction(elemNoEndpointNodePorts, e, d.extVerdict, w.comment(pr, d))
		}
	}
}

func (w *nftWorker) add(list int, e nftables.Element) { w.elems[list] = append(w.elems[list], e) }

func (w *nftWorker) addAction(list int, e nftables.Element, a nftables.Action, comment string) {
	e.Action, e.Comment = a, comment
	w.add(list, e)
}

// comment returns the port's kube-proxy name, "ns/name:port", made once.
func (w *nftWorker) comment(pr *portRef, d *nftDecision) string {
	if d.comment == "" {
		w.buf = append(append(append(w.buf[:0], pr.svc.Namespace...), '/'), pr.svc.Name...)
		if pr.port.Name != "" {
			w.buf = append(append(w.buf, ':'), pr.port.Name...)
		}
		d.comment = w.arena.add(w.buf)
	}
	return d.comment
}

// chainsOf writes the port's chains: service-, local-, external-,
// firewall-, then one endpoint- chain per endpoint, and its affinity sets.
func (w *nftWorker) chainsOf(pr *portRef, d *nftDecision) error {
	if d.usesCluster {
		if err := w.emitPolicy(d.svcChain, w.policyChain(pr, d, false)); err != nil {
			return err
		}
	}
	if d.usesLocal {
		if err := w.emitPolicy(d.localChain, w.policyChain(pr, d, true)); err != nil {
			return err
		}
	}
	if d.usesExt {
		if _, err := w.emit(d.extChain, w.extChain(d)); err != nil {
			return err
		}
	}
	if d.usesFW {
		if _, err := w.emit(d.fwChain, w.fwChain(pr)); err != nil {
			return err
		}
	}
	timeout := time.Duration(pr.svc.AffinityTimeout()) * time.Second
	for i := range w.eps {
		e := &w.eps[i]
		if _, err := w.emit(e.chain, w.endpointChain(e)); err != nil {
			return err
		}
		if e.affinity != "" {
			w.affinity = append(w.affinity, nftables.Set{
				Name: e.affinity, Key: []nftables.DataType{w.f.fam.AddrType()},
				Flags: []nftables.SetFlag{nftables.SetFlagDynamic, nftables.SetFlagTimeout}, Timeout: timeout,
			})
		}
	}
	return nil
}

// emit adds a chain with the rules in text, copied to the arena, and
// returns the copy.
func (w *nftWorker) emit(name string, text []byte) (string, error) {
	body := w.arena.add(text)
	c, err := nftables.ChainFromText(name, body)
	if err != nil {
		return "", err
	}
	if w.n == len(w.out) {
		return "", fmt.Errorf("chain %s: more chains than the %d expected", name, len(w.out))
	}
	w.out[w.n] = c
	w.n++
	return body, nil
}

// emitPolicy emits a policy chain and takes from its body the names of
// the endpoint chains it first names.
func (w *nftWorker) emitPolicy(name string, text []byte) error {
	body, err := w.emit(name, text)
	if err != nil {
		return err
	}
	for i := range w.eps {
		if e := &w.eps[i]; e.chain == "" && e.at >= 0 {
			e.chain = body[e.at : e.at+e.end-e.start]
		}
	}
	return nil
}

// policyChain returns the rules of the port's service- chain (or local-
// chain): the masquerade rule for the cluster IP when internal traffic
// comes here, the affinity rules, and the random choice of an endpoint.
func (w *nftWorker) policyChain(pr *portRef, d *nftDecision, local bool) []byte {
	f := w.f
	b := w.text[:0]
	if d.hasInternal && local == d.internalLocal && (f.st.Config.MasqueradeAll || f.hasCIDR) {
		b = append(append(b, f.ipx...), " daddr "...)
		b = pr.clusterIP.AppendTo(b)
		b = append(append(append(b, ' '), w.proto...), " dport "...)
		b = strconv.AppendInt(b, int64(pr.port.Port), 10)
		if !f.st.Config.MasqueradeAll {
			b = append(append(b, ' '), f.ipx...)
			b = append(b, " saddr != "...)
			b = f.cidr.AppendTo(b)
		}
		b = append(b, " jump "+nftMarkMasq+"\n"...)
	}
	in := func(e *nftEndpoint) bool { return e.inCluster && !local || e.inLocal && local }
	n := 0
	for i := range w.eps {
		e := &w.eps[i]
		if !in(e) {
			continue
		}
		n++
		if e.affinity != "" {
			b = append(append(b, f.ipx...), " saddr @"...)
			b = append(append(b, e.affinity...), " goto "...)
			b = w.appendEndpointName(b, e)
			b = append(b, '\n')
		}
	}
	b = append(b, "numgen random mod "...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, " vmap {"...)
	k := 0
	for i := range w.eps {
		e := &w.eps[i]
		if !in(e) {
			continue
		}
		if k > 0 {
			b = append(b, " ,"...)
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(k), 10)
		b = w.appendEndpointName(append(b, " : goto "...), e)
		k++
	}
	b = append(b, " }\n"...)
	w.text = b
	return b
}

// appendEndpointName appends the name of e's chain to b, the body of the
// policy chain being built, noting where the first copy is.
func (w *nftWorker) appendEndpointName(b []byte, e *nftEndpoint) []byte {
	if e.chain == "" && e.at < 0 {
		e.at = len(b)
	}
	return w.appendChainName(b, e)
}

// extChain returns the rules of the port's external- chain.
func (w *nftWorker) extChain(d *nftDecision) []byte {
	f := w.f
	b := w.text[:0]
	if !d.externalLocal {
		b = append(b, "jump "+nftMarkMasq+"\n"...)
	} else {
		if f.hasCIDR {
			b = append(append(b, f.ipx...), " saddr "...)
			b = f.cidr.AppendTo(b)
			b = append(append(append(b, " goto "...), d.svcChain...), ` comment "short-circuit pod traffic"`+"\n"...)
		}
		b = append(b, `fib saddr type local jump `+nftMarkMasq+` comment "masquerade local traffic"`+"\n"...)
		b = append(append(b, "fib saddr type local goto "...), d.svcChain...)
		b = append(b, ` comment "short-circuit local traffic"`+"\n"...)
	}
	if d.hasExternal {
		policy := d.svcChain
		if d.externalLocal {
			policy = d.localChain
		}
		b = append(append(append(b, "goto "...), policy...), '\n')
	}
	w.text = b
	return b
}

// fwChain returns the rule of the port's firewall- chain: drop sources
// outside the load balancer source ranges of the family. When a range
// holds the node's IP, the load balancer IPs are allowed too, for
// traffic from the node that loops back with the IP as its source.
func (w *nftWorker) fwChain(pr *portRef) []byte {
	f := w.f
	b := append(append(w.text[:0], f.ipx...), " saddr != {"...)
	first, fromNode := true, false
	for _, cidr := range pr.svc.LoadBalancerSourceRanges {
		if !ofFamily(cidr.Addr(), f.ipv6) {
			continue
		}
		if !first {
			b = append(b, " ,"...)
		}
		first = false
		b = nftables.AppendPrefix(append(b, ' '), cidr.Masked())
		fromNode = fromNode || f.nodeIP.IsValid() && cidr.Contains(f.nodeIP)
	}
	if fromNode {
		for _, ip := range pr.svc.LoadBalancerIPs {
			if ofFamily(ip, f.ipv6) {
				b = ip.AppendTo(append(b, " , "...))
			}
		}
	}
	b = append(b, " } drop\n"...)
	w.text = b
	return b
}

// endpointChain returns the rules of an endpoint- chain: masquerade
// hairpin traffic, record the client for affinity, DNAT.
func (w *nftWorker) endpointChain(e *nftEndpoint) []byte {
	f := w.f
	b := append(append(w.text[:0], f.ipx...), " saddr "...)
	b = e.target.Addr().AppendTo(b)
	b = append(b, " jump "+nftMarkMasq+"\n"...)
	if e.affinity != "" {
		b = append(append(b, "update @"...), e.affinity...)
		b = append(append(append(b, " { "...), f.ipx...), " saddr }\n"...)
	}
	b = append(append(b, "meta l4proto "...), w.proto...)
	b = e.target.AppendTo(append(b, " dnat to "...))
	b = append(b, '\n')
	w.text = b
	return b
}
