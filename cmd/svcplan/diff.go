package main

import (
	"fmt"
	"slices"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/translate"
)

func (e *env) diff(args []string) error {
	var in inputFlags
	fs := e.newFlagSet("diff", "diff -f OLD -f NEW [--node NAME]")
	in.register(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(in.files) != 2 {
		return fmt.Errorf("diff takes two -f (old and new), got %d", len(in.files))
	}
	var plans [2]*translate.Plan
	for i, f := range in.files {
		st, err := e.load(&in, f)
		if err != nil {
			return err
		}
		if plans[i], err = compile(st, in.mode); err != nil {
			return err
		}
	}
	changes := 0
	for _, fam := range []nftables.Family{nftables.IPv4, nftables.IPv6} {
		for _, c := range diffNFT(nftFamily(plans[0], fam), nftFamily(plans[1], fam)) {
			fmt.Fprintf(e.stdout, "%s %s %s%s\n", c.sign, fam, c.chain, c.detail)
			changes++
		}
	}
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		old, cur := familyPlan(plans[0], fam), familyPlan(plans[1], fam)
		for _, c := range diffPlans(old, cur) {
			fmt.Fprintf(e.stdout, "%s %s %s %s%s\n", c.sign, fam, c.table, c.chain, c.detail)
			changes++
		}
	}
	for _, c := range diffIPVS(plans[0], plans[1]) {
		fmt.Fprintf(e.stdout, "%s %s%s\n", c.sign, c.chain, c.detail)
		changes++
	}
	if changes == 0 {
		fmt.Fprintln(e.stdout, "no changes")
	}
	return nil
}

func familyPlan(p *translate.Plan, fam iptables.Family) *iptables.Plan {
	for _, ip := range p.IPTables {
		if ip.FamilyOrDefault() == fam {
			return ip
		}
	}
	return &iptables.Plan{Family: fam}
}

type chainChange struct {
	sign, chain, detail string
	table               iptables.Table
}

// diffPlans lists the chains added (+), removed (-) and changed (~) from
// old to cur, table by table, sorted by name.
func diffPlans(old, cur *iptables.Plan) []chainChange {
	var out []chainChange
	tables := map[iptables.Table]bool{}
	for _, p := range []*iptables.Plan{old, cur} {
		for _, t := range p.Tables {
			tables[t.Table] = true
		}
	}
	names := make([]iptables.Table, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		var chains []string
		seen := map[string]bool{}
		for _, p := range []*iptables.Plan{old, cur} {
			if tc := p.Table(t); tc != nil {
				for _, c := range tc.Chains {
					if !seen[c.Name] {
						seen[c.Name] = true
						chains = append(chains, c.Name)
					}
				}
			}
		}
		slices.Sort(chains)
		for _, name := range chains {
			a, b := old.Chain(t, name), cur.Chain(t, name)
			switch {
			case a == nil:
				out = append(out, chainChange{"+", name, fmt.Sprintf(" (%d rules)", b.RuleCount()), t})
			case b == nil:
				out = append(out, chainChange{"-", name, fmt.Sprintf(" (%d rules)", a.RuleCount()), t})
			case !a.Equal(b):
				out = append(out, chainChange{"~", name, fmt.Sprintf(" (%d -> %d rules)", a.RuleCount(), b.RuleCount()), t})
			}
		}
	}
	return out
}

func nftFamily(p *translate.Plan, fam nftables.Family) *nftables.Plan {
	for _, np := range p.NFTables {
		if np.FamilyOrDefault() == fam {
			return np
		}
	}
	return &nftables.Plan{Table: nftables.Table{Family: fam}}
}

// diffNFT lists the chains and sets added, removed and changed from old to
// cur, sorted by kind and name.
func diffNFT(old, cur *nftables.Plan) []chainChange {
	var out []chainChange
	names := map[string]bool{}
	for _, p := range []*nftables.Plan{old, cur} {
		for i := range p.Chains {
			names[p.Chains[i].Name] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		a, b := old.Chain(n), cur.Chain(n)
		switch {
		case a == nil:
			out = append(out, chainChange{sign: "+", chain: "chain " + n, detail: fmt.Sprintf(" (%d rules)", b.RuleCount())})
		case b == nil:
			out = append(out, chainChange{sign: "-", chain: "chain " + n, detail: fmt.Sprintf(" (%d rules)", a.RuleCount())})
		case !a.Equal(b):
			out = append(out, chainChange{sign: "~", chain: "chain " + n, detail: fmt.Sprintf(" (%d -> %d rules)", a.RuleCount(), b.RuleCount())})
		}
	}
	clear(names)
	for _, p := range []*nftables.Plan{old, cur} {
		for i := range p.Sets {
			names[p.Sets[i].Name] = true
		}
	}
	sorted = sorted[:0]
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		a, b := old.Set(n), cur.Set(n)
		switch {
		case a == nil:
			out = append(out, chainChange{sign: "+", chain: "set " + n, detail: fmt.Sprintf(" (%d elements)", len(b.Elements))})
		case b == nil:
			out = append(out, chainChange{sign: "-", chain: "set " + n, detail: fmt.Sprintf(" (%d elements)", len(a.Elements))})
		default:
			var ta, tb []byte
			for i := range a.Elements {
				ta = nftables.AppendElement(ta, a, &a.Elements[i])
			}
			for i := range b.Elements {
				tb = nftables.AppendElement(tb, b, &b.Elements[i])
			}
			if string(ta) != string(tb) {
				out = append(out, chainChange{sign: "~", chain: "set " + n, detail: fmt.Sprintf(" (%d -> %d elements)", len(a.Elements), len(b.Elements))})
			}
		}
	}
	return out
}

// diffIPVS lists the ipsets, virtual servers and dummy interface
// addresses added, removed and changed from old to cur (IPVS mode).
func diffIPVS(old, cur *translate.Plan) []chainChange {
	var out []chainChange
	oldSets, curSets := old.IPSets, cur.IPSets
	if oldSets == nil {
		oldSets = &ipset.Plan{}
	}
	if curSets == nil {
		curSets = &ipset.Plan{}
	}
	for _, name := range unionNames(setNames(oldSets), setNames(curSets)) {
		a, b := oldSets.Set(name), curSets.Set(name)
		switch {
		case a == nil:
			out = append(out, chainChange{sign: "+", chain: "ipset " + name, detail: fmt.Sprintf(" (%d members)", len(b.Entries))})
		case b == nil:
			out = append(out, chainChange{sign: "-", chain: "ipset " + name, detail: fmt.Sprintf(" (%d members)", len(a.Entries))})
		case !a.Equal(b):
			out = append(out, chainChange{sign: "~", chain: "ipset " + name, detail: fmt.Sprintf(" (%d -> %d members)", len(a.Entries), len(b.Entries))})
		}
	}
	oldVS, curVS := old.IPVS, cur.IPVS
	if oldVS == nil {
		oldVS = &ipvs.Plan{}
	}
	if curVS == nil {
		curVS = &ipvs.Plan{}
	}
	for _, v := range curVS.VirtualServers {
		switch o := oldVS.VirtualServer(v.Protocol, v.Addr); {
		case o == nil:
			out = append(out, chainChange{sign: "+", chain: fmt.Sprintf("ipvs %s %s", v.Protocol, v.Addr), detail: fmt.Sprintf(" (%d real servers)", len(v.RealServers))})
		case !o.Equal(&v):
			out = append(out, chainChange{sign: "~", chain: fmt.Sprintf("ipvs %s %s", v.Protocol, v.Addr), detail: fmt.Sprintf(" (%d -> %d real servers)", len(o.RealServers), len(v.RealServers))})
		}
	}
	for _, v := range oldVS.VirtualServers {
		if curVS.VirtualServer(v.Protocol, v.Addr) == nil {
			out = append(out, chainChange{sign: "-", chain: fmt.Sprintf("ipvs %s %s", v.Protocol, v.Addr), detail: fmt.Sprintf(" (%d real servers)", len(v.RealServers))})
		}
	}
	for _, a := range curVS.Addresses {
		if !slices.Contains(oldVS.Addresses, a) {
			out = append(out, chainChange{sign: "+", chain: "address " + a.String()})
		}
	}
	for _, a := range oldVS.Addresses {
		if !slices.Contains(curVS.Addresses, a) {
			out = append(out, chainChange{sign: "-", chain: "address " + a.String()})
		}
	}
	return out
}

func setNames(p *ipset.Plan) []string {
	names := make([]string, len(p.Sets))
	for i := range p.Sets {
		names[i] = p.Sets[i].Name
	}
	return names
}

// unionNames returns the names of a, then those of b not in a.
func unionNames(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
