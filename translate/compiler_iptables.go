package translate

import (
	"strings"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

// iptFamily compiles the iptables plan of family fi from the last plan,
// recompiling the changed services. It reports false when large cluster
// mode flips, which changes every endpoint's rules.
func (c *Compiler) iptFamily(st *proxy.State, fi int, order, changed []int32) (*iptables.Plan, bool, error) {
	fs := &c.fams[fi]
	f := newFamilyBase(st, fi == 1, &c.opts)
	var ports []portRef
	for _, i := range changed {
		if _, ok := familyAddr(st.Services[i].ClusterIPs, f.ipv6); ok {
			ports = f.appendPorts(ports, i)
		}
	}
	f.ports = ports
	outs := c.freshPorts(fi, ports)
	endpoints, most, bound := 0, 1, 0
	for _, i := range order {
		for _, o := range c.svcs[i].ports[fi] {
			endpoints += int(o.eps)
		}
	}
	for i := range ports {
		most, bound = max(most, int(ports[i].eps)), bound+ports[i].bound
	}
	f.large = endpoints > c.opts.largeClusterThreshold
	if f.large != fs.large {
		return nil, false, nil
	}
	f.setProbabilities(most)
	w := newWorker(f, shard{ports: ports, bound: bound}, make([]iptables.Chain, bound))
	w.marking = true
	w.run()
	if w.err != nil {
		return nil, false, w.err
	}
	var prev iptMark
	for j, m := range w.marks {
		o := &outs[j]
		o.chains = seg{prev.n, m.n - prev.n}
		for k := range o.parts {
			o.parts[k] = seg{prev.frags[k], m.frags[k] - prev.frags[k]}
		}
		prev = m
	}
	nat := c.iptNAT(fi, order, w)
	src := &iptSplice{c: c, fi: fi, order: order, w: w, old: fs.ipt}
	filter, err := f.filterChains(src)
	if err != nil {
		return nil, false, err
	}
	fixed, err := f.natChains(src)
	if err != nil {
		return nil, false, err
	}
	copy(nat, fixed)
	for i := range outs {
		outs[i].fresh, outs[i].was = false, nil
	}
	fs.ipt = f.plan(filter, nat)
	return fs.ipt, true, nil
}

// iptNAT returns the nat table of the new plan with room for the four
// fixed chains in front: the kept chains of unchanged ports spliced from
// the last plan, the changed ports' from w.
func (c *Compiler) iptNAT(fi int, order []int32, w *worker) []iptables.Chain {
	total := 4
	for _, i := range order {
		for _, o := range c.svcs[i].ports[fi] {
			total += int(o.chains.n)
		}
	}
	sp := splicer[iptables.Chain]{old: c.fams[fi].ipt.Tables[1].Chains, out: make([]iptables.Chain, 4, total)}
	for _, i := range order {
		ps := c.svcs[i].ports[fi]
		for j := range ps {
			if o := &ps[j]; o.fresh {
				o.chains = sp.add(of(w.out, o.chains))
			} else {
				o.chains = sp.keep(o.chains)
			}
		}
	}
	return sp.done()
}

// iptSplice is the fragment source of an incremental compile: each
// port's rules in the dispatch chains, from the last plan's bodies or
// from the worker that recompiled it.
type iptSplice struct {
	c     *Compiler
	fi    int
	order []int32
	w     *worker
	old   *iptables.Plan
}

func (s *iptSplice) fragLen(k int) int {
	n := 0
	for _, i := range s.order {
		for _, o := range s.c.svcs[i].ports[s.fi] {
			n += int(o.parts[k].n)
		}
	}
	return n
}

// writeFrag writes the rules of kind k, copying runs of unchanged ports
// from the old body at once, and notes where each port's rules land.
func (s *iptSplice) writeFrag(k int, sb *strings.Builder) {
	t, ci := fragPlace(k)
	old := s.old.Tables[t].Chains[ci].Body()
	base := sb.Len()
	var from, to int32
	flush := func() {
		sb.WriteString(old[from:to])
		from = to
	}
	for _, i := range s.order {
		ps := s.c.svcs[i].ports[s.fi]
		for j := range ps {
			o := &ps[j]
			g := o.parts[k]
			if o.fresh {
				flush()
				o.parts[k] = seg{int32(sb.Len() - base), g.n}
				sb.Write(s.w.frags[k][g.off : g.off+g.n])
				continue
			}
			if g.off != to {
				flush()
				from, to = g.off, g.off
			}
			o.parts[k].off = int32(sb.Len()-base) + to - from
			to += g.n
		}
	}
	flush()
}
