package translate

import (
	"strconv"
	"strings"

	"github.com/svcplan/svcplan/iptables"
)

// filterChains returns the filter table: the dispatch chains with the
// service ports' rules from src, KUBE-FORWARD, and (IPv4) kubelet's
// KUBE-FIREWALL, in kube-proxy's order.
func (f *family) filterChains(src fragSource) ([]iptables.Chain, error) {
	specs := []chainSpec{
		{name: chainServices, frag: fragFilServices},
		{name: chainExternalServices, frag: fragFilExternal},
		{name: chainForward, frag: noFrag, tail: f.forwardRules()},
		{name: chainNodePorts, frag: fragFilNodePorts},
		{name: chainProxyFirewall, frag: fragFilFirewall},
	}
	if !f.ipv6 {
		specs = append(specs, chainSpec{name: chainKubeletFirewall, frag: noFrag, tail: []string{
			`-m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
		}})
	}
	return gatherAll(specs, src)
}

// natChains returns the nat table's fixed chains: KUBE-SERVICES (the
// service ports' rules from src, then the jump to KUBE-NODEPORTS),
// KUBE-NODEPORTS, KUBE-POSTROUTING and KUBE-MARK-MASQ.
func (f *family) natChains(src fragSource) ([]iptables.Chain, error) {
	return gatherAll([]chainSpec{
		{name: chainServices, frag: fragNatServices, tail: f.nodePortJumps()},
		{name: chainNodePorts, frag: fragNatNodePorts},
		{name: chainPostrouting, frag: noFrag, tail: []string{
			"-m mark ! --mark " + f.mark + "/" + f.mark + " -j RETURN",
			"-j MARK --xor-mark " + f.mark,
			`-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
		}},
		{name: chainMarkMasq, frag: noFrag, tail: []string{"-j MARK --or-mark " + f.mark}},
	}, src)
}

// fragPlace returns where the chain holding fragment kind k sits in a
// plan made by compileFamily: its table (0 filter, 1 nat) and its index
// there.
func fragPlace(k int) (table, chain int) {
	switch k {
	case fragNatServices:
		return 1, 0
	case fragNatNodePorts:
		return 1, 1
	case fragFilServices:
		return 0, 0
	case fragFilExternal:
		return 0, 1
	case fragFilNodePorts:
		return 0, 3
	default: // fragFilFirewall
		return 0, 4
	}
}

// forwardRules returns the rules of KUBE-FORWARD.
func (f *family) forwardRules() []string {
	var r []string
	if !f.opts.conntrackTCPLiberal {
		r = append(r, "-m conntrack --ctstate INVALID -j DROP")
	}
	return append(r,
		`-m comment --comment "kubernetes forwarding rules" -m mark --mark `+f.mark+"/"+f.mark+" -j ACCEPT",
		`-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
	)
}

// noFrag marks a fixed chain without service port rules.
const noFrag = -1

// chainSpec describes a fixed chain: the service ports' rules for it (the
// fragment kind, or noFrag), then rules of its own.
type chainSpec struct {
	name string
	frag int
	tail []string
}

// fragSource gives the service ports' rules for the dispatch chains, in
// plan order: the workers' of a full compile, or the spliced ones of an
// incremental compile.
type fragSource interface {
	// fragLen returns the length of the rules of kind k.
	fragLen(k int) int
	// writeFrag writes the rules of kind k to sb.
	writeFrag(k int, sb *strings.Builder)
}

// workerFrags is the fragments of a full compile's workers, in shard
// order.
type workerFrags []*worker

func (ws workerFrags) fragLen(k int) int {
	n := 0
	for _, w := range ws {
		n += len(w.frags[k])
	}
	return n
}

func (ws workerFrags) writeFrag(k int, sb *strings.Builder) {
	for _, w := range ws {
		sb.Write(w.frags[k])
	}
}

// gatherAll builds the chains of specs, each with a single allocation.
func gatherAll(specs []chainSpec, src fragSource) ([]iptables.Chain, error) {
	out := make([]iptables.Chain, len(specs))
	for i, sp := range specs {
		n := 0
		if sp.frag != noFrag {
			n += src.fragLen(sp.frag)
		}
		for _, t := range sp.tail {
			n += len(t) + 1
		}
		var sb strings.Builder
		sb.Grow(n)
		if sp.frag != noFrag {
			src.writeFrag(sp.frag, &sb)
		}
		for _, t := range sp.tail {
			sb.WriteString(t)
			sb.WriteByte('\n')
		}
		c, err := iptables.ChainFromText(sp.name, sb.String())
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// nodePortJumps returns the last rules of nat KUBE-SERVICES, which send
// traffic to the node's own addresses on to KUBE-NODEPORTS: one rule for
// every local address, or, when Config.NodePortAddresses has prefixes of
// the family and none of them is /0, one rule per node address inside
// them. Localhost NodePorts do not work over IPv6, so ::1 is left out
// there, as kube-proxy does.
func (f *family) nodePortJumps() []string {
	const comment = `-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" `
	matchAll := true
	for _, p := range f.st.Config.NodePortAddresses {
		if ofFamily(p.Addr(), f.ipv6) {
			if p.Bits() == 0 {
				matchAll = true
				break
			}
			matchAll = false
		}
	}
	if matchAll {
		if f.ipv6 {
			return []string{comment + "-m addrtype --dst-type LOCAL ! -d ::1/128 -j " + chainNodePorts}
		}
		return []string{comment + "-m addrtype --dst-type LOCAL -j " + chainNodePorts}
	}
	var r []string
	for _, ip := range f.st.NodePortIPs(f.ipv6) {
		if f.ipv6 && ip.IsLoopback() {
			continue
		}
		r = append(r, comment+"-d "+ip.String()+" -j "+chainNodePorts)
	}
	return r
}

// jumps returns the rules in the built-in chains that lead into the owned
// chains, top to bottom per built-in chain, as kube-proxy leaves them.
func (f *family) jumps() []iptables.Jump {
	newState := []string{"-m", "conntrack", "--ctstate", "NEW"}
	const (
		lbFirewall = "kubernetes load balancer firewall"
		portals    = "kubernetes service portals"
		external   = "kubernetes externally-visible service portals"
	)
	filter := func(chain string, match []string, comment, target string) iptables.Jump {
		return iptables.Jump{Table: iptables.TableFilter, Chain: chain, Match: match, Comment: comment, Target: target}
	}
	// kube-proxy prepends its jumps, then kubelet's KUBE-FIREWALL ones, so
	// in a fresh namespace KUBE-FIREWALL ends up first.
	var j []iptables.Jump
	if !f.ipv6 {
		j = append(j, filter("INPUT", nil, "", chainKubeletFirewall))
	}
	j = append(j,
		filter("INPUT", newState, lbFirewall, chainProxyFirewall),
		filter("INPUT", nil, "kubernetes health check service ports", chainNodePorts),
		filter("INPUT", newState, external, chainExternalServices),
		filter("FORWARD", newState, lbFirewall, chainProxyFirewall),
		filter("FORWARD", nil, "kubernetes forwarding rules", chainForward),
		filter("FORWARD", newState, portals, chainServices),
		filter("FORWARD", newState, external, chainExternalServices),
	)
	if !f.ipv6 {
		j = append(j, filter("OUTPUT", nil, "", chainKubeletFirewall))
	}
	j = append(j,
		filter("OUTPUT", newState, lbFirewall, chainProxyFirewall),
		filter("OUTPUT", newState, portals, chainServices),
	)
	nat := func(chain, comment, target string) iptables.Jump {
		return iptables.Jump{Table: iptables.TableNAT, Chain: chain, Comment: comment, Target: target}
	}
	return append(j,
		nat("PREROUTING", portals, chainServices),
		nat("OUTPUT", portals, chainServices),
		nat("POSTROUTING", "kubernetes postrouting rules", chainPostrouting),
	)
}

// formatProbability returns 1/n with ten decimals, as kube-proxy prints
// it ("0.3333333333").
func formatProbability(n int) string {
	return strconv.FormatFloat(1/float64(n), 'f', 10, 64)
}

// appendInt appends the decimal form of n.
func appendInt(b []byte, n int) []byte {
	return strconv.AppendInt(b, int64(n), 10)
}
