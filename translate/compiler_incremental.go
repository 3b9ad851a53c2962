package translate

import (
	"runtime"
	"sync"

	"github.com/svcplan/svcplan/proxy"
)

// incremental compiles st from the last State's output. It reports false
// when st must be compiled from scratch instead (the Compiler's memory is
// then stale, and full rebuilds it).
func (c *Compiler) incremental(st *proxy.State) (*Plan, bool, error) {
	if !nodeEqual(&c.node, &st.Node) || !configEqual(&c.config, &st.Config) {
		return nil, false, nil
	}
	v4, v6 := families(st)
	if v4 != c.fams[0].present || v6 != c.fams[1].present {
		return nil, false, nil
	}
	d, ok := c.diff(st)
	if !ok || len(d.changed) > len(st.Services)/4+1 {
		return nil, false, nil
	}
	if !c.revalidate(st, &d) {
		return nil, false, nil
	}
	c.apply(st, &d)
	plan := &Plan{Mode: c.mode}
	for fi, present := range [2]bool{v4, v6} {
		if !present {
			continue
		}
		order := c.fams[fi].order
		if !d.sameOrder[fi] {
			order = sortedServices(st, fi == 1)
		}
		if c.mode == ModeIPTables {
			p, ok, err := c.iptFamily(st, fi, order, d.changed)
			if !ok || err != nil {
				return nil, false, err
			}
			plan.IPTables = append(plan.IPTables, p)
		} else {
			p, err := c.nftFamily(st, fi, order, d.changed)
			if err != nil {
				return nil, false, err
			}
			plan.NFTables = append(plan.NFTables, p)
		}
		c.fams[fi].order = order
	}
	return plan, true, nil
}

// stateDiff is how a State differs from the last one.
type stateDiff struct {
	// prev[i] is the index in c.svcs of the service st.Services[i] had
	// in the last State, or -1 for a new service; nil when every service
	// is where it was.
	prev []int32
	// changed are the indexes in st.Services of new and changed
	// services.
	changed []int32
	// removed are the indexes in c.svcs of services st no longer has.
	removed []int32
	// sameOrder[fi] reports that the family's plan order is unchanged.
	sameOrder [2]bool
}

// diff matches st's services with the last State's. It reports false when
// a service appears twice.
func (c *Compiler) diff(st *proxy.State) (stateDiff, bool) {
	var d stateDiff
	aligned := len(st.Services) == len(c.svcs)
	for i := 0; aligned && i < len(st.Services); i++ {
		a, b := &st.Services[i], &c.svcs[i].svc
		aligned = a.Namespace == b.Namespace && a.Name == b.Name
	}
	if aligned {
		d.changed, d.sameOrder = c.changedAligned(st)
		return d, true
	}
	index := make(map[svcKey]int32, len(c.svcs))
	for i := range c.svcs {
		index[keyOf(&c.svcs[i].svc)] = int32(i)
	}
	d.prev = make([]int32, len(st.Services))
	used := make([]bool, len(c.svcs))
	for i := range st.Services {
		s := &st.Services[i]
		j, found := index[keyOf(s)]
		if found && used[j] {
			return d, false
		}
		d.prev[i] = -1
		if found {
			d.prev[i], used[j] = j, true
		}
		if !found || !serviceEqual(s, &c.svcs[j].svc) {
			d.changed = append(d.changed, int32(i))
		}
	}
	for j, u := range used {
		if !u {
			d.removed = append(d.removed, int32(j))
		}
	}
	return d, true
}

// minDiffChunk is the fewest services worth comparing on a goroutine of
// their own.
const minDiffChunk = 2048

// changedAligned compares the services of st with those of the last
// State at the same indexes, in chunks on up to GOMAXPROCS goroutines,
// and returns the indexes of those that differ and, per family, whether
// its plan order is unchanged (no changed service joined or left it).
func (c *Compiler) changedAligned(st *proxy.State) ([]int32, [2]bool) {
	n := len(st.Services)
	par := max(1, min(runtime.GOMAXPROCS(0), n/minDiffChunk))
	if c.opts.parallelism > 0 {
		par = max(1, min(par, c.opts.parallelism))
	}
	type result struct {
		changed []int32
		leaves  [2]bool
	}
	results := make([]result, par)
	var wg sync.WaitGroup
	for k := range par {
		lo, hi := n*k/par, n*(k+1)/par
		wg.Go(func() {
			r := &results[k]
			for i := lo; i < hi; i++ {
				now, was := &st.Services[i], &c.svcs[i].svc
				if serviceEqual(now, was) {
					continue
				}
				r.changed = append(r.changed, int32(i))
				for fi := range r.leaves {
					_, a := familyAddr(now.ClusterIPs, fi == 1)
					_, b := familyAddr(was.ClusterIPs, fi == 1)
					r.leaves[fi] = r.leaves[fi] || a != b
				}
			}
		})
	}
	wg.Wait()
	var changed []int32
	same := [2]bool{true, true}
	for _, r := range results {
		changed = append(changed, r.changed...)
		same[0], same[1] = same[0] && !r.leaves[0], same[1] && !r.leaves[1]
	}
	return changed, same
}

// revalidate reports whether st is valid, given that the last State was
// and that st differs from it only in d: it validates the changed
// services with st's node and settings, then checks that their cluster
// IPs and node ports are free among the others.
func (c *Compiler) revalidate(st *proxy.State, d *stateDiff) bool {
	mini := proxy.State{Node: st.Node, Config: st.Config, Services: make([]proxy.Service, len(d.changed))}
	for k, i := range d.changed {
		mini.Services[k] = st.Services[i]
	}
	if mini.Validate() != nil {
		return false
	}
	for _, j := range d.removed {
		c.claims.drop(&c.svcs[j].svc)
	}
	for _, i := range d.changed {
		if j := d.prevOf(i); j >= 0 {
			c.claims.drop(&c.svcs[j].svc)
		}
	}
	for _, i := range d.changed {
		if !c.claims.add(&st.Services[i]) {
			return false
		}
	}
	return true
}

// prevOf returns the index in the last State of st.Services[i], or -1.
func (d *stateDiff) prevOf(i int32) int32 {
	if d.prev == nil {
		return i
	}
	return d.prev[i]
}

// apply makes c.svcs follow st: copies of the changed services, without
// output, and the unchanged ones where st has them.
func (c *Compiler) apply(st *proxy.State, d *stateDiff) {
	if d.prev != nil {
		svcs := make([]svcMemo, len(st.Services))
		for i, j := range d.prev {
			if j >= 0 {
				svcs[i] = c.svcs[j]
			}
		}
		c.svcs = svcs
	}
	changed := make([]proxy.Service, len(d.changed))
	for k, i := range d.changed {
		changed[k] = st.Services[i]
	}
	cl := newCloner(changed)
	clear(c.was)
	if c.was == nil {
		c.was = make(map[int32][2][]portOut, len(d.changed))
	}
	for _, i := range d.changed {
		if d.prevOf(i) >= 0 {
			c.was[i] = c.svcs[i].ports
		}
		c.svcs[i] = svcMemo{svc: cl.service(&st.Services[i])}
	}
}

// splicer builds a new array from runs of an old one and fresh items,
// copying each run of consecutive old items at once. When the new array
// would be the whole old one, it is the old one: plans share what they
// never modify.
type splicer[T any] struct {
	old, out []T
	// from and to bound the run of old items not yet copied.
	from, to int32
	// size is the capacity to give out when it is first needed.
	size int
}

// keep appends old[g] and returns where it lands.
func (s *splicer[T]) keep(g seg) seg {
	if g.off != s.to {
		s.flush()
		s.from, s.to = g.off, g.off
	}
	off := int32(len(s.out)) + s.to - s.from
	s.to += g.n
	return seg{off, g.n}
}

// add appends items and returns where they land.
func (s *splicer[T]) add(items []T) seg {
	s.flush()
	s.alloc()
	off := int32(len(s.out))
	s.out = append(s.out, items...)
	return seg{off, int32(len(items))}
}

// done returns the new array.
func (s *splicer[T]) done() []T {
	if s.out == nil && s.from == 0 && int(s.to) == len(s.old) {
		return s.old
	}
	s.flush()
	s.alloc()
	return s.out
}

func (s *splicer[T]) alloc() {
	if s.out == nil {
		s.out = make([]T, 0, s.size)
	}
}

func (s *splicer[T]) flush() {
	if s.to > s.from {
		s.alloc()
		s.out = appendParallel(s.out, s.old[s.from:s.to])
	}
	s.from = s.to
}

// minParallelCopy is the fewest items worth copying in two halves at
// once.
const minParallelCopy = 1 << 14

// appendParallel appends src to dst, copying the two halves of a long
// src on two goroutines when there are processors for them.
func appendParallel[T any](dst, src []T) []T {
	if len(src) < minParallelCopy || runtime.GOMAXPROCS(0) < 2 || cap(dst)-len(dst) < len(src) {
		return append(dst, src...)
	}
	n := len(dst)
	dst = dst[:n+len(src)]
	half := len(src) / 2
	var wg sync.WaitGroup
	wg.Go(func() { copy(dst[n:n+half], src[:half]) })
	copy(dst[n+half:], src[half:])
	wg.Wait()
	return dst
}

// of returns the items of g in a.
func of[T any](a []T, g seg) []T { return a[g.off : g.off+g.n : g.off+g.n] }

// freshPorts gives the changed services of a family their ports' fresh
// output slots, in the order of ports.
func (c *Compiler) freshPorts(fi int, ports []portRef) []portOut {
	outs := make([]portOut, len(ports))
	for a := 0; a < len(ports); {
		b, idx := a+1, ports[a].svcIdx
		for b < len(ports) && ports[b].svcIdx == idx {
			b++
		}
		c.svcs[idx].ports[fi] = outs[a:b:b]
		if was := c.was[idx][fi]; len(was) == b-a {
			for j := range was {
				outs[a+j].was = &was[j]
			}
		}
		a = b
	}
	for i := range outs {
		outs[i].fresh, outs[i].eps = true, ports[i].eps
	}
	return outs
}
