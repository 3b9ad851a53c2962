package translate

import (
	"slices"

	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// nftFamily compiles the nftables plan of family fi from the last plan,
// recompiling the changed services.
func (c *Compiler) nftFamily(st *proxy.State, fi int, order, changed []int32) (*nftables.Plan, error) {
	f := newNFTFamilyBase(st, fi == 1, &c.opts)
	var ports []portRef
	for _, i := range changed {
		if _, ok := familyAddr(st.Services[i].ClusterIPs, f.ipv6); ok {
			ports = f.appendPorts(ports, i)
		}
	}
	f.ports = ports
	outs := c.freshPorts(fi, ports)
	bound := 0
	for i := range ports {
		bound += ports[i].bound
	}
	w := newNFTWorker(f, ports, make([]nftables.Chain, bound))
	w.marking = true
	w.run()
	if w.err != nil {
		return nil, w.err
	}
	var prev nftMark
	for j, m := range w.marks {
		o := &outs[j]
		o.chains = seg{prev.n, m.n - prev.n}
		o.affinity = seg{prev.affinity, m.affinity - prev.affinity}
		for k := range m.elems {
			o.parts[k] = seg{prev.elems[k], m.elems[k] - prev.elems[k]}
		}
		o.shared = m.shared
		prev = m
	}
	p := c.nftSplice(f, fi, order, w)
	for i := range outs {
		outs[i].fresh, outs[i].was = false, nil
	}
	return p, nil
}

// nftSplice returns the new plan: the last plan's fixed chains, the kept
// chains, elements and affinity sets of unchanged ports spliced from the
// last plan, and the changed ports' from w.
func (c *Compiler) nftSplice(f *nftFamily, fi int, order []int32, w *nftWorker) *nftables.Plan {
	fs := &c.fams[fi]
	var nchains, naff int
	var nelems [numElemLists]int
	for _, i := range order {
		for _, o := range c.svcs[i].ports[fi] {
			nchains += int(o.chains.n)
			naff += int(o.affinity.n)
			for k := range nelems {
				nelems[k] += int(o.parts[k].n)
			}
		}
	}
	chains := splicer[nftables.Chain]{old: fs.nft.Chains, out: make([]nftables.Chain, fs.nfixed, fs.nfixed+nchains)}
	copy(chains.out, fs.nft.Chains[:fs.nfixed])
	chains.from, chains.to = int32(fs.nfixed), int32(fs.nfixed)
	aff := splicer[nftables.Set]{old: fs.affinity, size: naff}
	var elems [numElemLists]splicer[nftables.Element]
	for k := range elems {
		elems[k] = splicer[nftables.Element]{old: fs.elems[k], size: nelems[k]}
	}
	mayRepeat := false
	for _, i := range order {
		ps := c.svcs[i].ports[fi]
		for j := range ps {
			o := &ps[j]
			mayRepeat = mayRepeat || o.shared
			if o.fresh {
				o.chains = chains.add(of(w.out, o.chains))
				o.affinity = aff.add(of(w.affinity, o.affinity))
				for k := range elems {
					items := of(w.elems[k], o.parts[k])
					if o.was != nil && slices.Equal(of(fs.elems[k], o.was.parts[k]), items) {
						o.parts[k] = elems[k].keep(o.was.parts[k])
					} else {
						o.parts[k] = elems[k].add(items)
					}
				}
				continue
			}
			o.chains = chains.keep(o.chains)
			o.affinity = aff.keep(o.affinity)
			for k := range elems {
				o.parts[k] = elems[k].keep(o.parts[k])
			}
		}
	}
	p := &nftables.Plan{Table: fs.nft.Table, Chains: chains.done()}
	sets := f.fixedSets()
	fs.affinity = aff.done()
	p.Sets = make([]nftables.Set, 0, len(sets)+len(fs.affinity))
	for k := range elems {
		fs.elems[k] = elems[k].done()
	}
	for _, s := range sets {
		if s.list >= 0 {
			s.set.Elements = fs.elems[s.list]
		}
		p.Sets = append(p.Sets, s.set)
	}
	p.Sets = append(p.Sets, fs.affinity...)
	if mayRepeat {
		dedupSharedKeys(p, sets, true)
	}
	fs.nft = p
	return p
}
