package translate

import (
	"fmt"
	"strings"

	"github.com/svcplan/svcplan/iptables"
)

// portNames are the chain names of the port being compiled; empty for a
// chain the port does not need.
type portNames struct {
	ext, fw, svc, svl string
}

// chains writes the port's nat chains in kube-proxy's order: KUBE-EXT-,
// KUBE-FW-, KUBE-SVC-, KUBE-SVL-, then one KUBE-SEP- per endpoint. The
// policy chains are rendered first: the endpoint chains take their names
// from the jumps in them, which saves a string per endpoint.
func (w *worker) chains(pr *portRef, d *decision) error {
	names := w.names(d)
	var svc, svl string
	if d.usesCluster {
		svc = w.policyChain(pr, d, false)
	}
	if d.usesLocal {
		svl = w.policyChain(pr, d, true)
	}
	if d.usesExt {
		if err := w.emit(names.ext, w.arena.add(w.extChain(d))); err != nil {
			return err
		}
	}
	if d.usesFW {
		if err := w.emit(names.fw, w.arena.add(w.fwChain(pr))); err != nil {
			return err
		}
	}
	if d.usesCluster {
		if err := w.emit(names.svc, svc); err != nil {
			return err
		}
	}
	if d.usesLocal {
		if err := w.emit(names.svl, svl); err != nil {
			return err
		}
	}
	for i := range w.eps {
		if err := w.emit(w.eps[i].name, w.arena.add(w.sepChain(pr, &w.eps[i]))); err != nil {
			return err
		}
	}
	return nil
}

// names makes the names of the port's chains other than KUBE-SEP-, in
// the worker's arena.
func (w *worker) names(d *decision) portNames {
	name := func(use bool, prefix string) string {
		if !use {
			return ""
		}
		w.hin = append(append(w.hin[:0], prefix...), w.hash[:]...)
		return w.arena.add(w.hin)
	}
	return portNames{
		ext: name(d.usesExt, PrefixServiceExternal),
		fw:  name(d.usesFW, PrefixServiceFirewall),
		svc: name(d.usesCluster, PrefixServiceCluster),
		svl: name(d.usesLocal, PrefixServiceLocal),
	}
}

// emit adds a chain with the rules in text to the worker's output.
func (w *worker) emit(name, text string) error {
	c, err := iptables.ChainFromText(name, text)
	if err != nil {
		return err
	}
	if w.n == len(w.out) {
		return fmt.Errorf("chain %s: more chains than the %d expected for the shard", name, len(w.out))
	}
	w.out[w.n] = c
	w.n++
	return nil
}

// arena hands out strings carved from large shared buffers, so that the
// names and bodies of many chains cost a few allocations. A
// strings.Builder only ever appends, so the strings handed out stay valid
// when the next chunk is started.
type arena struct {
	sb    strings.Builder
	chunk int
}

// add returns a string holding a copy of b.
func (a *arena) add(b []byte) string {
	if a.sb.Cap()-a.sb.Len() < len(b) {
		a.sb = strings.Builder{}
		a.sb.Grow(max(a.chunk, len(b)))
	}
	start := a.sb.Len()
	a.sb.Write(b)
	return a.sb.String()[start:]
}

// extChain returns the rules of the port's KUBE-EXT- chain.
func (w *worker) extChain(d *decision) []byte {
	f := w.f
	b := w.text[:0]
	if !d.externalLocal {
		b = w.comment(b, "masquerade traffic for ", " external destinations")
		b = jump(b, chainMarkMasq)
	} else {
		if f.hasCIDR {
			b = w.comment(b, "pod traffic for ", " external destinations")
			b = append(b, "-s "...)
			b = f.cidr.AppendTo(b)
			b = w.jumpHash(append(b, ' '), PrefixServiceCluster)
		}
		b = w.comment(b, "masquerade LOCAL traffic for ", " external destinations")
		b = jump(append(b, "-m addrtype --src-type LOCAL "...), chainMarkMasq)
		b = w.comment(b, "route LOCAL traffic for ", " external destinations")
		b = w.jumpHash(append(b, "-m addrtype --src-type LOCAL "...), PrefixServiceCluster)
	}
	if d.hasExternal {
		b = w.jumpHash(b, externalPolicyPrefix(d))
	}
	w.text = b
	return b
}

// fwChain returns the rules of the port's KUBE-FW- chain: sources in the
// load balancer source ranges go on to KUBE-EXT-; the rest falls through
// to the DROP in filter KUBE-PROXY-FIREWALL.
func (w *worker) fwChain(pr *portRef) []byte {
	f, svc := w.f, pr.svc
	b := w.text[:0]
	fromNode := false
	for _, p := range svc.LoadBalancerSourceRanges {
		if !ofFamily(p.Addr(), f.ipv6) {
			continue
		}
		b = w.comment(b, "", " loadbalancer IP")
		b = p.AppendTo(append(b, "-s "...))
		b = w.jumpHash(append(b, ' '), PrefixServiceExternal)
		fromNode = fromNode || (f.nodeIP.IsValid() && p.Contains(f.nodeIP))
	}
	if fromNode {
		for _, ip := range svc.LoadBalancerIPs {
			if ofFamily(ip, f.ipv6) {
				b = w.comment(b, "", " loadbalancer IP")
				b = ip.AppendTo(append(b, "-s "...))
				b = w.jumpHash(append(b, ' '), PrefixServiceExternal)
			}
		}
	}
	b = w.comment(b, "other traffic to ", " will be dropped by KUBE-PROXY-FIREWALL")
	b[len(b)-1] = '\n'
	w.text = b
	return b
}

// policyChain returns the rules of the port's KUBE-SVC- chain (KUBE-SVL-
// when local), in the arena: the masquerade rule if cluster IP traffic
// enters it, then the affinity and load-balancing rules over its
// endpoints. Endpoints without a name yet take it from their jump.
func (w *worker) policyChain(pr *portRef, d *decision, local bool) string {
	f, svc := w.f, pr.svc
	b := w.text[:0]
	if local == d.internalLocal && d.hasInternal && (f.st.Config.MasqueradeAll || f.hasCIDR) {
		b = w.comment(b, "", " cluster IP")
		b = w.dst(b, pr.clusterIP, pr.port.Port)
		if !f.st.Config.MasqueradeAll {
			b = f.cidr.AppendTo(append(b, "! -s "...))
			b = append(b, ' ')
		}
		b = jump(b, chainMarkMasq)
	}
	n := 0
	for i := range w.eps {
		if w.eps[i].in(local) {
			n++
		}
	}
	if timeout := svc.AffinityTimeout(); timeout > 0 {
		for i := range w.eps {
			if e := &w.eps[i]; e.in(local) {
				b = w.endpointComment(b, e)
				b = e.appendName(append(b, "-m recent --name "...))
				b = append(b, " --rcheck --seconds "...)
				b = appendInt(b, timeout)
				b = append(b, " --reap --mask "...)
				b = append(b, f.recentMask...)
				b = e.appendName(append(b, " --rsource -j "...))
				b = append(b, '\n')
			}
		}
	}
	k := 0
	for i := range w.eps {
		e := &w.eps[i]
		if !e.in(local) {
			continue
		}
		b = w.endpointComment(b, e)
		if k < n-1 {
			b = append(b, "-m statistic --mode random --probability "...)
			b = append(b, f.probability(n-k)...)
			b = append(b, ' ')
		}
		b = append(b, "-j "...)
		e.nameAt = len(b)
		b = append(e.appendName(b), '\n')
		k++
	}
	w.text = b
	body := w.arena.add(b)
	for i := range w.eps {
		if e := &w.eps[i]; e.in(local) && e.name == "" {
			e.name = body[e.nameAt : e.nameAt+len(PrefixEndpoint)+hashLen]
		}
	}
	return body
}

// appendName appends the endpoint's chain name.
func (e *epRef) appendName(b []byte) []byte {
	return append(append(b, PrefixEndpoint...), e.hash[:]...)
}

// in reports whether the endpoint is in the Local list (local) or the
// Cluster list.
func (e *epRef) in(local bool) bool {
	if local {
		return e.inLocal
	}
	return e.inCluster
}

// endpointComment appends `-m comment --comment "spn -> ip:port" ` unless
// in large cluster mode.
func (w *worker) endpointComment(b []byte, e *epRef) []byte {
	if w.f.large {
		return b
	}
	b = append(b, `-m comment --comment "`...)
	b = append(b, w.spn...)
	b = append(b, " -> "...)
	b = append(b, w.epBuf[e.start:e.end]...)
	return append(b, `" `...)
}

// sepChain returns the rules of an endpoint's KUBE-SEP- chain: hairpin
// masquerade, then DNAT (recording the client for affinity).
func (w *worker) sepChain(pr *portRef, e *epRef) []byte {
	f := w.f
	b := w.text[:0]
	if !f.large {
		b = w.commentBare(b)
	}
	b = append(b, "-s "...)
	b = append(b, w.epBuf[e.ipStart:e.ipEnd]...)
	b = jump(append(b, ' '), chainMarkMasq)
	if !f.large {
		b = w.commentBare(b)
	}
	if pr.svc.AffinityTimeout() > 0 {
		b = e.appendName(append(b, "-m recent --name "...))
		b = append(b, " --set --mask "...)
		b = append(b, f.recentMask...)
		b = append(b, " --rsource "...)
	}
	b = append(b, w.match...)
	b = append(b, " -j DNAT --to-destination "...)
	b = append(b, w.epBuf[e.start:e.end]...)
	b = append(b, '\n')
	w.text = b
	return b
}

// probability returns 1/n with ten decimals, as kube-proxy prints it.
func (f *family) probability(n int) string {
	if n < len(f.probs) {
		return f.probs[n]
	}
	return formatProbability(n)
}

// checkName refuses names that could not be written safely into rules.
// Validate already guarantees DNS labels and IANA service names; this
// keeps the compiler safe on its own.
func checkName(names ...string) error {
	for _, s := range names {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
				return fmt.Errorf("name %q: %w", s, iptables.ErrUnsafeArgument)
			}
		}
	}
	return nil
}
