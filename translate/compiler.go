package translate

import (
	"fmt"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// Compiler compiles a sequence of States in one mode, recompiling only
// what changed since the previous call. Its plans are byte-identical to
// those of [Compile] for the same State and options.
//
// In [ModeIPTables] and [ModeNFTables] a Compiler keeps a copy of the last
// State it compiled successfully and each service port's output. The next
// Compile compares the new State with that copy service by service: when
// the node and the settings are the same, it validates and compiles only
// the services that differ (added, removed, or with any field or endpoint
// changed), checks cluster IPs and node ports against the unchanged
// services, and splices the unchanged services' chains, rules and map
// elements into the new plan. A change of the node or of the settings, of
// the address families present, or of iptables' large cluster mode, or a
// change of more than a quarter of the services, makes it compile
// everything, as does an invalid State. In the other modes every call
// compiles everything.
//
// Plans share the rule text of unchanged chains with earlier plans; they
// are never modified after Compile returns them. A Compiler copies what it
// keeps, so the caller may change or reuse a State after Compile returns.
// A Compiler is not safe for concurrent use.
type Compiler struct {
	mode    Mode
	optList []Option
	opts    options

	// ok reports that the fields below hold the last State compiled.
	ok     bool
	node   proxy.Node
	config proxy.Config
	// svcs are copies of the services in the State's order, with their
	// ports' output.
	svcs   []svcMemo
	claims claimSet
	fams   [2]famState
	// was holds, during an incremental compile, the last outputs of the
	// changed services that were there before, by index in the State.
	was map[int32][2][]portOut
	// incrementals counts the compiles that reused the last output, for
	// tests.
	incrementals int
}

// NewCompiler returns a Compiler for mode with the options of [Compile].
func NewCompiler(mode Mode, opts ...Option) *Compiler {
	c := &Compiler{mode: mode, optList: append([]Option(nil), opts...), opts: defaultOptions()}
	for _, opt := range opts {
		opt(&c.opts)
	}
	return c
}

// svcMemo is what the Compiler keeps of one service.
type svcMemo struct {
	svc proxy.Service
	// ports are the output of the service's ports per family (IPv4,
	// IPv6), in their order; nil when the service has no cluster IP of
	// the family.
	ports [2][]portOut
}

// seg is a run of n items from off in an array.
type seg struct{ off, n int32 }

// portOut is where one service port's output sits in the family's last
// plan, or, when fresh, in the worker that just compiled it.
type portOut struct {
	// chains are the port's chains (nat chains in iptables mode).
	chains seg
	// parts are, in iptables mode, the port's rules in each dispatch
	// chain body (by frag kind), and in nftables mode its elements in
	// each fixed set (by element list).
	parts [numFrags]seg
	// affinity are the port's affinity sets (nftables).
	affinity seg
	// eps is the endpoint count for large cluster mode (iptables).
	eps int32
	// shared reports an element whose key another service may share
	// (nftables).
	shared bool
	fresh  bool
	// was is, while a changed port is spliced, its output in the last
	// plan, whose parts are kept where they came out the same.
	was *portOut
}

// famState is what the Compiler keeps of one family's last plan.
type famState struct {
	present bool
	// order are the indexes of the family's services in plan order.
	order []int32
	large bool
	ipt   *iptables.Plan
	nft   *nftables.Plan
	// nfixed is the number of fixed chains in front of nft.Chains.
	nfixed int
	// elems are the element lists as the workers made them, before
	// repeated keys are removed.
	elems    [numElemLists][]nftables.Element
	affinity []nftables.Set
}

// famTrace is where a full compile put each service port's output.
type famTrace struct {
	outs  []portOut
	ports []portRef
	order []int32
	large bool
	fs    famState
}

// iptWorker records the outputs of w's ports, whose chains start at
// chainBase in the nat table and whose fragments at fragBase, which it
// advances.
func (t *famTrace) iptWorker(w *worker, chainBase int32, fragBase *[numFrags]int32, port int) {
	if t.outs == nil {
		t.outs = make([]portOut, len(w.f.ports))
	}
	var prev iptMark
	for j, m := range w.marks {
		o := &t.outs[port+j]
		o.chains = seg{chainBase + prev.n, m.n - prev.n}
		for k := range o.parts {
			o.parts[k] = seg{fragBase[k] + prev.frags[k], m.frags[k] - prev.frags[k]}
		}
		o.eps = w.ports[j].eps
		prev = m
	}
	for k := range fragBase {
		fragBase[k] += int32(len(w.frags[k]))
	}
}

// nftWorker records the outputs of w's ports, whose chains start at
// chainBase, affinity sets at setBase among the affinity sets and
// elements at elemBase.
func (t *famTrace) nftWorker(w *nftWorker, chainBase, setBase int32, elemBase *[numElemLists]int, port int) {
	if t.outs == nil {
		t.outs = make([]portOut, len(w.f.ports))
	}
	var prev nftMark
	for j, m := range w.marks {
		o := &t.outs[port+j]
		o.chains = seg{chainBase + prev.n, m.n - prev.n}
		o.affinity = seg{setBase + prev.affinity, m.affinity - prev.affinity}
		for k := range m.elems {
			o.parts[k] = seg{int32(elemBase[k]) + prev.elems[k], m.elems[k] - prev.elems[k]}
		}
		o.shared = m.shared
		prev = m
	}
}

// nftPlan records the plan's arrays, before repeated keys are removed.
func (t *famTrace) nftPlan(p *nftables.Plan, sets []fixedSet, nfixed int, ports []portRef, order []int32) {
	t.fs.nft, t.fs.nfixed = p, nfixed
	for i, s := range sets {
		if s.list >= 0 {
			t.fs.elems[s.list] = p.Sets[i].Elements
		}
	}
	t.fs.affinity = p.Sets[len(sets):]
	t.ports, t.order = ports, order
}

// Compile validates st and compiles it into the plan of the Compiler's
// mode, as [Compile] does, reusing what has not changed since the last
// successful call. After an error the next call compiles everything.
func (c *Compiler) Compile(st *proxy.State) (*Plan, error) {
	if st == nil {
		return nil, fmt.Errorf("compiling: %w", ErrNilState)
	}
	if c.mode != ModeIPTables && c.mode != ModeNFTables {
		return Compile(st, c.mode, c.optList...)
	}
	if c.ok {
		p, ok, err := c.incremental(st)
		if ok && err == nil {
			c.incrementals++
			return p, nil
		}
	}
	return c.full(st)
}

// full compiles st from scratch and keeps what the next Compile reuses.
func (c *Compiler) full(st *proxy.State) (*Plan, error) {
	c.ok = false
	c.svcs, c.fams, c.claims = nil, [2]famState{}, claimSet{}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("compiling invalid state: %w", err)
	}
	v4, v6 := families(st)
	plan := &Plan{Mode: c.mode}
	var traces [2]famTrace
	for fi, present := range [2]bool{v4, v6} {
		if !present {
			continue
		}
		tr := &traces[fi]
		var err error
		if c.mode == ModeIPTables {
			var p *iptables.Plan
			p, err = compileFamilyTraced(st, fi == 1, &c.opts, tr)
			tr.fs.ipt = p
			plan.IPTables = append(plan.IPTables, p)
		} else {
			var p *nftables.Plan
			p, err = compileNFTFamilyTraced(st, fi == 1, &c.opts, tr)
			plan.NFTables = append(plan.NFTables, p)
		}
		if err != nil {
			return nil, fmt.Errorf("compiling %s plan: %s: %w", c.mode, famLabel(fi), err)
		}
	}
	cl := newCloner(st.Services)
	c.svcs = make([]svcMemo, len(st.Services))
	for i := range st.Services {
		c.svcs[i].svc = cl.service(&st.Services[i])
	}
	for fi := range traces {
		tr := &traces[fi]
		if !(fi == 0 && v4 || fi == 1 && v6) {
			continue
		}
		for a := 0; a < len(tr.ports); {
			b, idx := a+1, tr.ports[a].svcIdx
			for b < len(tr.ports) && tr.ports[b].svcIdx == idx {
				b++
			}
			c.svcs[idx].ports[fi] = tr.outs[a:b:b]
			a = b
		}
		c.fams[fi] = tr.fs
		c.fams[fi].present, c.fams[fi].order, c.fams[fi].large = true, tr.order, tr.large
	}
	c.node, c.config = cloneNode(&st.Node), cloneConfig(&st.Config)
	c.claims = newClaimSet(st.Services)
	c.ok = true
	return plan, nil
}

func famLabel(fi int) string {
	if fi == 1 {
		return "ipv6"
	}
	return "ipv4"
}
