package translate

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
)

var protoNumber = map[ipset.Protocol]int{ipset.TCP: 6, ipset.UDP: 17, ipset.SCTP: 132}

// The chains of kube-proxy's IPVS mode.
const (
	ipvsNodePortChain        = "KUBE-NODE-PORT"
	ipvsLoadBalancerChain    = "KUBE-LOAD-BALANCER"
	ipvsSourceRangesFirewall = "KUBE-SOURCE-RANGES-FIREWALL"
	ipvsFilterChain          = "KUBE-IPVS-FILTER"
	ipvsOutFilterChain       = "KUBE-IPVS-OUT-FILTER"
)

// ipvsRules builds the rules of one family's fixed iptables plan, chain by
// chain, each rule as iptables-save prints it.
type ipvsRules struct {
	f      *ipvsFamily
	family iptables.Family
	chains map[string][]string
	err    error
}

func (r *ipvsRules) set(i int) string { return IPVSSetName(ipvsSets[i].name, r.f.ipv6) }

// add appends to chain the rule made of args, in iptables-save's order
// and spelling.
func (r *ipvsRules) add(chain string, args ...string) {
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '#") {
			a = `"` + a + `"`
		}
		quoted[i] = a
	}
	text := strings.Join(quoted, " ")
	if c, err := iptables.CanonicalRule(r.family, text); err == nil {
		text = c
	}
	r.chains[chain] = append(r.chains[chain], text)
}

// setRule appends "-m comment --comment C -m set --match-set S FLAGS" with
// extra arguments before the target.
func (r *ipvsRules) setRule(chain string, pre []string, set int, flags string, post ...string) {
	args := append(pre[:len(pre):len(pre)], "-m", "comment", "--comment", ipvsSets[set].comment,
		"-m", "set", "--match-set", r.set(set), flags)
	r.add(chain, append(args, post...)...)
}

// rules returns the family's iptables plan, kube-proxy's writeIptablesRules
// rule for rule: a rule that matches a set is left out while the set is
// empty, so the number of rules depends on which features are in use,
// not on the number of services.
func (f *ipvsFamily) rules() (*iptables.Plan, error) {
	fam := iptables.IPv4
	lo := "127.0.0.0/8"
	if f.ipv6 {
		fam, lo = iptables.IPv6, "::1/128"
	}
	r := &ipvsRules{f: f, family: fam, chains: map[string][]string{}}
	const svcs, post, masq = "KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"
	r.add("nat/"+svcs, "-s", lo, "-j", "RETURN")
	r.setChainRules()
	if !f.empty(setClusterIP) {
		r.clusterIPMasquerade()
	}
	if !f.empty(setExternalIP) {
		r.setRule("nat/"+svcs, nil, setExternalIP, "dst,dst", "-j", masq)
		r.externalIPRules(setExternalIP)
	}
	if !f.empty(setExternalIPLocal) {
		r.externalIPRules(setExternalIPLocal)
	}
	r.add("nat/"+svcs, "-m", "addrtype", "--dst-type", "LOCAL", "-j", ipvsNodePortChain)
	r.add("nat/"+ipvsLoadBalancerChain, "-j", masq)
	r.add("filter/"+ipvsSourceRangesFirewall, "-j", "DROP")
	// The ipvs match is not in iptables.Rule's vocabulary: these rules are
	// written as iptables-save prints them (the source with its length,
	// then the protocol by number, the virtual address without a length
	// and the port), which the VM tier checks against a real iptables-save.
	for _, e := range f.noNodeAccess {
		src := netip.PrefixFrom(e.IP, e.IP.BitLen()).String()
		r.chains["filter/"+ipvsOutFilterChain] = append(r.chains["filter/"+ipvsOutFilterChain],
			fmt.Sprintf("-s %s -m ipvs --vproto %d --vaddr %s --vport %d -j DROP", src, protoNumber[e.Protocol], e.IP, e.Port))
	}
	for _, set := range []int{setClusterIP, setLoadBalancer} {
		if !f.empty(set) {
			r.add("nat/"+svcs, "-m", "set", "--match-set", r.set(set), "dst,dst", "-j", "ACCEPT")
		}
	}
	r.filterRules()
	mark := "0x" + strconv.FormatUint(uint64(f.st.Config.Mark()), 16)
	r.add("nat/"+post, "-m", "mark", "!", "--mark", mark+"/"+mark, "-j", "RETURN")
	r.add("nat/"+post, "-j", "MARK", "--xor-mark", mark)
	r.add("nat/"+post, "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE", "--random-fully")
	r.add("nat/"+masq, "-j", "MARK", "--or-mark", mark)
	return r.plan()
}

// setChainRules writes the rules of kube-proxy's ipsetWithIptablesChain
// table: one jump per non-empty set.
func (r *ipvsRules) setChainRules() {
	f := r.f
	type sr struct {
		set          int
		chain, proto string
		flags, to    string
	}
	for _, s := range []sr{
		{setLoopBack, "nat/KUBE-POSTROUTING", "", "dst,dst,src", "MASQUERADE"},
		{setLoadBalancer, "nat/KUBE-SERVICES", "", "dst,dst", ipvsLoadBalancerChain},
		{setLoadBalancerLocal, "nat/" + ipvsLoadBalancerChain, "", "dst,dst", "RETURN"},
		{setNodePortLocalTCP, "nat/" + ipvsNodePortChain, "tcp", "dst", "RETURN"},
		{setNodePortTCP, "nat/" + ipvsNodePortChain, "tcp", "dst", "KUBE-MARK-MASQ"},
		{setNodePortLocalUDP, "nat/" + ipvsNodePortChain, "udp", "dst", "RETURN"},
		{setNodePortUDP, "nat/" + ipvsNodePortChain, "udp", "dst", "KUBE-MARK-MASQ"},
		{setNodePortLocalSCTP, "nat/" + ipvsNodePortChain, "sctp", "dst,dst", "RETURN"},
		{setNodePortSCTP, "nat/" + ipvsNodePortChain, "sctp", "dst,dst", "KUBE-MARK-MASQ"},
		{setLoadBalancerFW, "filter/KUBE-PROXY-FIREWALL", "", "dst,dst", ipvsSourceRangesFirewall},
		{setLoadBalancerSourceCIDR, "filter/" + ipvsSourceRangesFirewall, "", "dst,dst,src", "RETURN"},
		{setLoadBalancerSourceIP, "filter/" + ipvsSourceRangesFirewall, "", "dst,dst,src", "RETURN"},
	} {
		if f.empty(s.set) {
			continue
		}
		var pre []string
		if s.proto != "" {
			pre = []string{"-p", s.proto}
		}
		r.setRule(s.chain, pre, s.set, s.flags, "-j", s.to)
	}
}

// clusterIPMasquerade marks cluster IP traffic for masquerade: all of it
// (masquerade-all), that from outside the pod network, or, when the pod
// network is unknown, that sent from a service address.
func (r *ipvsRules) clusterIPMasquerade() {
	cfg := &r.f.st.Config
	cidr, ok := cfg.ClusterCIDR(r.f.ipv6)
	switch {
	case cfg.MasqueradeAll:
		r.setRule("nat/KUBE-SERVICES", nil, setClusterIP, "dst,dst", "-j", "KUBE-MARK-MASQ")
	case ok:
		r.setRule("nat/KUBE-SERVICES", nil, setClusterIP, "dst,dst", "!", "-s", cidr.String(), "-j", "KUBE-MARK-MASQ")
	default:
		r.setRule("nat/KUBE-SERVICES", nil, setClusterIP, "src,dst", "-j", "KUBE-MARK-MASQ")
	}
}

// externalIPRules accepts external IP traffic that comes from off the
// node, and traffic to external IPs that are local addresses.
func (r *ipvsRules) externalIPRules(set int) {
	r.setRule("nat/KUBE-SERVICES", nil, set, "dst,dst", "-m", "physdev", "!", "--physdev-is-in",
		"-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "ACCEPT")
	r.setRule("nat/KUBE-SERVICES", nil, set, "dst,dst", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "ACCEPT")
}

// filterRules writes KUBE-FORWARD, the health check rule of filter
// KUBE-NODE-PORT and KUBE-IPVS-FILTER.
func (r *ipvsRules) filterRules() {
	mark := "0x" + strconv.FormatUint(uint64(r.f.st.Config.Mark()), 16)
	r.add("filter/KUBE-FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules",
		"-m", "mark", "--mark", mark+"/"+mark, "-j", "ACCEPT")
	r.add("filter/KUBE-FORWARD", "-m", "comment", "--comment", "kubernetes forwarding conntrack rule",
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	r.setRule("filter/"+ipvsNodePortChain, nil, setHealthCheckNodePort, "dst", "-j", "ACCEPT")
	for _, set := range []int{setLoadBalancer, setClusterIP, setExternalIP, setExternalIPLocal} {
		r.add("filter/"+ipvsFilterChain, "-m", "set", "--match-set", r.set(set), "dst,dst", "-j", "RETURN")
	}
	r.add("filter/"+ipvsFilterChain, "-m", "set", "--match-set", r.set(setHealthCheckNodePort), "dst", "-j", "RETURN")
	r.add("filter/"+ipvsFilterChain, "-m", "conntrack", "--ctstate", "NEW",
		"-m", "set", "--match-set", r.set(setIPVSIPs), "dst", "-j", "REJECT")
}

// ipvsChains are the chains of the plan, table by table, in kube-proxy's
// order.
var ipvsChains = []struct {
	table  iptables.Table
	chains []string
}{
	{iptables.TableNAT, []string{"KUBE-SERVICES", "KUBE-POSTROUTING", ipvsNodePortChain, ipvsLoadBalancerChain, "KUBE-MARK-MASQ"}},
	{iptables.TableFilter, []string{"KUBE-FORWARD", ipvsNodePortChain, "KUBE-PROXY-FIREWALL", ipvsSourceRangesFirewall, ipvsFilterChain, ipvsOutFilterChain}},
}

// ipvsJumps are the jumps from the built-in chains, in the order they
// end up at the top of their chains (kube-proxy prepends them in the
// reverse order).
var ipvsJumps = []iptables.Jump{
	{Table: iptables.TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
	{Table: iptables.TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
	{Table: iptables.TableNAT, Chain: "POSTROUTING", Comment: "kubernetes postrouting rules", Target: "KUBE-POSTROUTING"},
	{Table: iptables.TableFilter, Chain: "INPUT", Comment: "kubernetes ipvs access filter", Target: ipvsFilterChain},
	{Table: iptables.TableFilter, Chain: "INPUT", Comment: "kube-proxy firewall rules", Target: "KUBE-PROXY-FIREWALL"},
	{Table: iptables.TableFilter, Chain: "INPUT", Comment: "kubernetes health check rules", Target: ipvsNodePortChain},
	{Table: iptables.TableFilter, Chain: "FORWARD", Comment: "kube-proxy firewall rules", Target: "KUBE-PROXY-FIREWALL"},
	{Table: iptables.TableFilter, Chain: "FORWARD", Comment: "kubernetes forwarding rules", Target: "KUBE-FORWARD"},
	{Table: iptables.TableFilter, Chain: "OUTPUT", Comment: "kubernetes ipvs access filter", Target: ipvsOutFilterChain},
}

func (r *ipvsRules) plan() (*iptables.Plan, error) {
	p := &iptables.Plan{Family: r.family, Jumps: append([]iptables.Jump(nil), ipvsJumps...)}
	for _, tc := range ipvsChains {
		t := iptables.TableChains{Table: tc.table}
		for _, name := range tc.chains {
			var text strings.Builder
			for _, rule := range r.chains[string(tc.table)+"/"+name] {
				text.WriteString(rule + "\n")
			}
			c, err := iptables.ChainFromText(name, text.String())
			if err != nil {
				return nil, err
			}
			t.Chains = append(t.Chains, c)
		}
		p.Tables = append(p.Tables, t)
	}
	return p, nil
}
