package nftables

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustChain(t *testing.T, name string, rules ...string) Chain {
	t.Helper()
	c, err := NewChain(name, rules...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFakeBatchChecks runs batches that Plan.Validate never sees, as a
// misordered partial batch would be, and checks that the Fake refuses
// each as the kernel would, leaving the table as it was.
func TestFakeBatchChecks(t *testing.T) {
	a := mustChain(t, "a", "jump b")
	b := mustChain(t, "b", "ip daddr @s accept")
	s := Set{Name: "s", Key: []DataType{TypeIPv4Addr}}
	m := Set{Name: "m", Key: []DataType{TypeInetProto, TypeInetService}, Value: TypeVerdict}
	base := &Plan{Sets: []Set{s, m}, Chains: []Chain{a, b}}
	v6 := []Element{{Addr: netip.MustParseAddr("fd00::1")}}
	toMissing := []Element{{Proto: ProtocolTCP, Port: 80, Action: Goto("nowhere")}}
	absent := []Element{{Addr: netip.MustParseAddr("10.0.0.1")}}
	c := mustChain(t, "c", "goto d")
	tests := []struct {
		name    string
		ops     []op
		wantErr error
	}{
		{"rule jumps to a chain added later", []op{{kind: opAddChain, chain: &c}, {kind: opAddRules, chain: &c}}, ErrMissingChain},
		{"chain deleted while jumped to", []op{{kind: opFlushChain, chain: &b}, {kind: opDelChain, chain: &b}}, ErrBusy},
		{"chain deleted with rules", []op{{kind: opDelChain, chain: &a}}, ErrBusy},
		{"set deleted while used", []op{{kind: opDelSet, set: &s}}, ErrBusy},
		{"element of the other family", []op{{kind: opAddElems, set: &s, elems: v6}}, ErrWrongFamily},
		{"verdict to a missing chain", []op{{kind: opAddElems, set: &m, elems: toMissing}}, ErrMissingChain},
		{"deleting an absent element", []op{{kind: opDelElems, set: &s, elems: absent}}, ErrMissing},
		{"flushing a missing chain", []op{{kind: opFlushChain, chain: &c}}, ErrMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			if err := f.commit(keyOf(base), base.Table, fullBatch(base, "test")); err != nil {
				t.Fatal(err)
			}
			before := f.Dump()
			err := f.commit(keyOf(base), base.Table, &batch{ops: tc.ops})
			var ae *ApplyError
			if !errors.Is(err, tc.wantErr) || !errors.As(err, &ae) || ae.Op != "flush" {
				t.Fatalf("commit = %v, want an ApplyError flush wrapping %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(before, f.Dump()); diff != "" {
				t.Errorf("a refused batch changed the table (-before +after):\n%s", diff)
			}
		})
	}
}

// TestPlanOrder checks the order of a partial batch: declarations first,
// then flushes, element deletions, rules and element additions, and the
// deletion of what nothing refers to any more last, sets before the
// chains their elements jumped to.
func TestPlanOrder(t *testing.T) {
	vmapKey := []DataType{TypeIPv4Addr, TypeInetProto, TypeInetService}
	vip := netip.MustParseAddr("172.30.0.1")
	old := &Plan{
		Sets: []Set{
			{Name: "service-ips", Key: vmapKey, Value: TypeVerdict, Elements: []Element{{Addr: vip, Proto: ProtocolTCP, Port: 80, Action: Goto("svc-old")}}},
			{Name: "gone", Key: vmapKey, Value: TypeVerdict, Elements: []Element{{Addr: vip, Proto: ProtocolTCP, Port: 81, Action: Goto("svc-old")}}},
		},
		Chains: []Chain{
			mustChain(t, "services", "ip daddr . meta l4proto . th dport vmap @service-ips", "ip daddr . meta l4proto . th dport vmap @gone"),
			mustChain(t, "svc-old", "jump ep-old"), mustChain(t, "ep-old", "meta l4proto tcp dnat to 10.0.0.1:80"),
		},
	}
	p := &Plan{
		Sets: []Set{{Name: "service-ips", Key: vmapKey, Value: TypeVerdict, Elements: []Element{{Addr: vip, Proto: ProtocolTCP, Port: 80, Action: Goto("svc-new")}}}},
		Chains: []Chain{
			mustChain(t, "services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
			mustChain(t, "svc-new", "jump ep-new"), mustChain(t, "ep-new", "meta l4proto tcp dnat to 10.0.0.2:80"),
		},
	}
	b := plan(old, p, nil)
	var got []string
	for _, o := range b.ops {
		name := ""
		if o.chain != nil {
			name = o.chain.Name
		} else if o.set != nil {
			name = o.set.Name
		}
		got = append(got, o.kind.String()+" "+name)
	}
	want := []string{
		"add chain svc-new", "add chain ep-new",
		"flush chain services", "flush chain svc-old", "flush chain ep-old",
		"delete elements service-ips",
		"add rules services", "add rules svc-new", "add rules ep-new",
		"add elements service-ips",
		"delete set gone",
		"delete chain svc-old", "delete chain ep-old",
	}
	if b.full || !slices.Equal(got, want) {
		t.Errorf("plan(old, new) = full %v, %s", b.full, cmp.Diff(want, got))
	}
	f := NewFake()
	if err := f.commit(keyOf(old), old.Table, fullBatch(old, "test")); err != nil {
		t.Fatal(err)
	}
	if err := f.commit(keyOf(p), p.Table, b); err != nil {
		t.Errorf("the Fake refuses the partial batch: %v", err)
	}
	if b := plan(p, p, nil); len(b.ops) != 0 {
		t.Errorf("plan(p, p) has %d operations, want none", len(b.ops))
	}
}

// synthPlan returns a plan shaped like a cluster of n services with 10
// endpoints each: a service-ips map, and per service a chain that
// picks one of 10 endpoint chains. Endpoint 0 of service bump (-1 for
// none) has another address.
func synthPlan(b testing.TB, n, bump int) *Plan {
	vm := Set{Name: "service-ips", Key: []DataType{TypeIPv4Addr, TypeInetProto, TypeInetService}, Value: TypeVerdict}
	mark := mustChainTB(b, "mark-for-masquerade", "mark set mark or 0x4000")
	pre := mustChainTB(b, "services", "ip daddr . meta l4proto . th dport vmap @service-ips")
	pre.Base = &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityDstNAT}
	chains := []Chain{pre, mark}
	for i := range n {
		svc := "service-" + strconv.Itoa(i)
		var text strings.Builder
		text.WriteString("numgen random mod 10 vmap { ")
		var eps []Chain
		for j := range 10 {
			ep := svc + "-endpoint-" + strconv.Itoa(j)
			if j > 0 {
				text.WriteString(" , ")
			}
			text.WriteString(strconv.Itoa(j) + " : goto " + ep)
			a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j)})
			if i == bump && j == 0 {
				a = netip.AddrFrom4([4]byte{11, 0, 0, 1})
			}
			eps = append(eps, mustChainTB(b, ep, "ip saddr "+a.String()+" jump mark-for-masquerade", "meta l4proto tcp dnat to "+a.String()+":80"))
		}
		text.WriteString(" }\n")
		c, err := ChainFromText(svc, text.String())
		if err != nil {
			b.Fatal(err)
		}
		chains = append(append(chains, c), eps...)
		vm.Elements = append(vm.Elements, Element{Addr: netip.AddrFrom4([4]byte{172, 30, byte(i >> 8), byte(i)}), Proto: ProtocolTCP, Port: 80, Action: Goto(svc)})
	}
	return &Plan{Sets: []Set{vm}, Chains: chains}
}

func mustChainTB(b testing.TB, name string, rules ...string) Chain {
	c, err := NewChain(name, rules...)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkPlanPartial measures what an Apply computes in user space for
// one endpoint change of 10 000 services with 10 endpoints each: the
// difference from the applied plan, and the copy of the plan kept.
func BenchmarkPlanPartial(b *testing.B) {
	plans := [2]*Plan{synthPlan(b, 10000, -1), synthPlan(b, 10000, 0)}
	i := 0
	for b.Loop() {
		i++
		bt := plan(plans[(i+1)%2], plans[i%2], nil)
		if bt.full || len(bt.ops) != 2 {
			b.Fatalf("plan = full %v with %d operations, want 2 partial ones", bt.full, len(bt.ops))
		}
		_ = copyPlan(plans[i%2])
	}
}
