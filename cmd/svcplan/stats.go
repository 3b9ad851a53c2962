package main

import (
	"fmt"
	"net/netip"
	"text/tabwriter"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func (e *env) stats(args []string) error {
	var in inputFlags
	fs := e.newFlagSet("stats", "stats [-f FILE] [--node NAME]")
	in.register(fs, true)
	synthetic := fs.Int("synthetic", 0, "instead of an input, count a synthetic cluster of `N` ClusterIP services")
	perService := fs.Int("synthetic-endpoints", 10, "endpoints per synthetic service (`M`)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(in.files) > 1 {
		return fmt.Errorf("stats takes one -f, got %d", len(in.files))
	}
	var st *proxy.State
	var err error
	if *synthetic > 0 {
		st, err = syntheticState(*synthetic, *perService)
	} else {
		st, err = e.load(&in, first(in.files))
	}
	if err != nil {
		return err
	}
	p, err := compile(st, in.mode)
	if err != nil {
		return err
	}
	ports, endpoints := 0, 0
	for i := range st.Services {
		ports += len(st.Services[i].Ports)
		endpoints += len(st.Services[i].Endpoints)
	}
	fmt.Fprintf(e.stdout, "%d services, %d service ports, %d endpoints\n\n", len(st.Services), ports, endpoints)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	if len(p.IPTables) > 0 {
		fmt.Fprintln(tw, "mode\tfamily\ttable\tchains\trules\tjumps\t")
	}
	for _, ip := range p.IPTables {
		total := 0
		for _, ts := range ip.Stats() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t\n", in.mode, ip.FamilyOrDefault(), ts.Table, ts.Chains, ts.Rules, ts.Jumps)
			total += ts.Rules + ts.Jumps
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\t%d\t\t\n", in.mode, ip.FamilyOrDefault(), "all", total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(p.NFTables) > 0 {
		tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "mode\tfamily\ttable\tchains\trules\tsets+maps\telements\t")
		for _, np := range p.NFTables {
			rules, elems := 0, 0
			for i := range np.Chains {
				rules += np.Chains[i].RuleCount()
			}
			for i := range np.Sets {
				elems += len(np.Sets[i].Elements)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n", in.mode, np.FamilyOrDefault(), np.TableName(), len(np.Chains), rules, len(np.Sets), elems)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if p.Userspace != nil {
		fmt.Fprintf(e.stdout, "userspace listeners: %d\n", len(p.Userspace.Listeners))
	}
	if p.IPVS != nil {
		return e.ipvsStats(st, p)
	}
	return nil
}

// ipvsStats prints the virtual servers, set members and addresses of an
// IPVS-mode plan, and the iptables rule counts of both modes side by side:
// IPVS mode's fixed rules against iptables mode's growing ones.
func (e *env) ipvsStats(st *proxy.State, p *translate.Plan) error {
	real := 0
	for i := range p.IPVS.VirtualServers {
		real += len(p.IPVS.VirtualServers[i].RealServers)
	}
	fmt.Fprintf(e.stdout, "\nipvs: %d virtual servers, %d real servers, %d addresses on %s; ipset: %d sets, %d members\n",
		len(p.IPVS.VirtualServers), real, len(p.IPVS.Addresses), p.IPVS.InterfaceOrDefault(), len(p.IPSets.Sets), p.IPSets.Len())
	ipt, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "family\tipvs-mode rules\tiptables-mode rules\t")
	for _, ip := range p.IPTables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", ip.FamilyOrDefault(), ruleCount(ip), ruleCount(familyPlan(ipt, ip.FamilyOrDefault())))
	}
	return tw.Flush()
}

// ruleCount returns the rules and jumps of a plan.
func ruleCount(p *iptables.Plan) int {
	n := 0
	for _, ts := range p.Stats() {
		n += ts.Rules + ts.Jumps
	}
	return n
}

// syntheticState returns n ClusterIP services with one TCP port and m ready
// endpoints each, spread over two nodes, to show how rule counts grow.
func syntheticState(n, m int) (*proxy.State, error) {
	if n > 1<<16 || m < 0 || n*m > 1<<22 {
		return nil, fmt.Errorf("--synthetic %d × --synthetic-endpoints %d: too large (at most 65536 services and 4M endpoints)", n, m)
	}
	st := &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	}
	for i := range n {
		svc := proxy.Service{
			Namespace:  "synthetic",
			Name:       fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})},
			Ports:      []proxy.ServicePort{{Name: "http", Port: 80}},
		}
		for j := range m {
			k := i*m + j
			node := "node-a"
			if j%2 == 1 {
				node = "node-b"
			}
			svc.Endpoints = append(svc.Endpoints, proxy.Endpoint{
				Addr:     netip.AddrFrom4([4]byte{10, 64 + byte(k>>16), byte(k >> 8), byte(k)}),
				Ready:    true,
				NodeName: node,
				Ports:    []proxy.EndpointPort{{Name: "http", Port: 8080}},
			})
		}
		st.Services = append(st.Services, svc)
	}
	return st, nil
}
