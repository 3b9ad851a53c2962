package nftables_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/examples"
	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// goldenPlan is one plan of the compiler's golden files.
type goldenPlan struct {
	name string
	plan *nftables.Plan
}

// goldenPlans returns the plans of translate's nftables golden files
// (read back from their text) and the plans of examples/cluster.yaml for
// node-a, compiled.
func goldenPlans(t testing.TB) []goldenPlan {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "translate", "testdata", "nft-*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no nftables golden files under ../translate/testdata (%v)", err)
	}
	var out []goldenPlan
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		plans, err := plansFromText(string(text))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "nft-"), ".golden")
		for _, p := range plans {
			out = append(out, goldenPlan{name + "/" + string(p.FamilyOrDefault()), p})
		}
	}
	for _, p := range compile(t, exampleState(t)) {
		out = append(out, goldenPlan{"example-cluster/" + string(p.FamilyOrDefault()), p})
	}
	return out
}

// exampleState returns node-a's State of examples/cluster.yaml.
func exampleState(t testing.TB) *proxy.State {
	t.Helper()
	objs, _, err := kube.Read(bytes.NewReader(examples.Cluster()))
	if err != nil {
		t.Fatalf("kube.Read(examples/cluster.yaml) = %v", err)
	}
	st, _, err := kube.StateFor(objs, "node-a")
	if err != nil {
		t.Fatalf("kube.StateFor(examples/cluster.yaml, node-a) = %v", err)
	}
	return &st
}

// compile compiles st in nftables mode.
func compile(t testing.TB, st *proxy.State) []*nftables.Plan {
	t.Helper()
	p, err := translate.Compile(st, translate.ModeNFTables)
	if err != nil {
		t.Fatalf("translate.Compile(nftables) = %v", err)
	}
	return p.NFTables
}

// plansFromText reads "nft -f" text as Plan.WriteTo writes it, one plan
// per "add table" of a new table.
func plansFromText(text string) ([]*nftables.Plan, error) {
	var plans []*nftables.Plan
	var p *nftables.Plan
	rules := map[string][]string{}
	var chains []nftables.Chain
	finish := func() error {
		if p == nil {
			return nil
		}
		for _, c := range chains {
			nc, err := nftables.NewChain(c.Name, rules[c.Name]...)
			if err != nil {
				return err
			}
			nc.Base, nc.Comment = c.Base, c.Comment
			p.Chains = append(p.Chains, nc)
		}
		plans, p, chains, rules = append(plans, p), nil, nil, map[string][]string{}
		return nil
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "add" {
			continue
		}
		family, name, rest := nftables.Family(f[2]), f[3], strings.Join(f[4:], " ")
		switch f[1] {
		case "table":
			if p != nil && p.FamilyOrDefault() == family && p.TableName() == name {
				continue
			}
			if err := finish(); err != nil {
				return nil, err
			}
			p = &nftables.Plan{Table: nftables.Table{Family: family, Name: name, Comment: quoted(line)}}
		case "set", "map":
			s, err := parseSetLine(f[4], strings.Join(f[5:], " "))
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			p.Sets = append(p.Sets, s)
		case "chain":
			c := nftables.Chain{Name: f[4], Comment: quoted(line)}
			if i := slices.Index(f, "hook"); i > 0 {
				prio, err := strconv.Atoi(f[i+3])
				if err != nil {
					return nil, fmt.Errorf("%q: %w", line, err)
				}
				c.Base = &nftables.BaseChain{Type: nftables.ChainType(f[i-1]), Hook: nftables.Hook(f[i+1]), Priority: prio}
			}
			chains = append(chains, c)
		case "rule":
			chain, rule, _ := strings.Cut(rest, " ")
			rules[chain] = append(rules[chain], rule)
		case "element":
			setName, body, _ := strings.Cut(rest, " ")
			s := p.Set(setName)
			if s == nil {
				return nil, fmt.Errorf("%q: no set %s", line, setName)
			}
			e, err := parseElement(s, strings.TrimSuffix(strings.TrimPrefix(body, "{ "), " }"))
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			s.Elements = append(s.Elements, e)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return plans, nil
}

// quoted returns the text between the first pair of double quotes in s.
func quoted(s string) string {
	_, after, ok := strings.Cut(s, `"`)
	if !ok {
		return ""
	}
	c, _, _ := strings.Cut(after, `"`)
	return c
}

// parseSetLine reads "{ type K . K [: verdict] ; [flags F,F ;] [timeout Ns ;] [comment "C" ;] }".
func parseSetLine(name, body string) (nftables.Set, error) {
	s := nftables.Set{Name: name, Comment: quoted(body)}
	body = strings.TrimSuffix(strings.TrimPrefix(body, "{ "), " }")
	for _, clause := range strings.Split(body, " ;") {
		f := strings.Fields(clause)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "type":
			for i := 1; i < len(f); i++ {
				switch f[i] {
				case ".":
				case ":":
					s.Value = nftables.DataType(f[i+1])
					i++
				default:
					s.Key = append(s.Key, nftables.DataType(f[i]))
				}
			}
		case "flags":
			for _, fl := range strings.Split(f[1], ",") {
				s.Flags = append(s.Flags, nftables.SetFlag(fl))
			}
		case "timeout":
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return s, err
			}
			s.Timeout = d
		}
	}
	return s, nil
}

// parseElement reads an element as AppendElement writes it.
func parseElement(s *nftables.Set, text string) (nftables.Element, error) {
	var e nftables.Element
	if s.IsMap() {
		i := strings.LastIndex(text, " : ")
		if i < 0 {
			return e, fmt.Errorf("map element without a verdict")
		}
		v := strings.Fields(text[i+3:])
		e.Action = nftables.Action{Kind: nftables.ActionKind(v[0])}
		if len(v) > 1 {
			e.Action.Chain = v[1]
		}
		text = text[:i]
	}
	if i := strings.Index(text, ` comment "`); i >= 0 {
		e.Comment = quoted(text[i:])
		text = text[:i]
	}
	parts := strings.Split(text, " . ")
	if len(parts) != len(s.Key) {
		return e, fmt.Errorf("element %q does not fit key %v", text, s.Key)
	}
	for i, k := range s.Key {
		switch k {
		case nftables.TypeIPv4Addr, nftables.TypeIPv6Addr:
			a, err := netip.ParseAddr(parts[i])
			if err != nil {
				return e, err
			}
			e.Addr = a
		case nftables.TypeInetProto:
			e.Proto = nftables.Protocol(parts[i])
		default:
			n, err := strconv.ParseUint(parts[i], 10, 16)
			if err != nil {
				return e, err
			}
			e.Port = uint16(n)
		}
	}
	return e, nil
}

// TestPlansFromText checks the loader the tests read golden plans with:
// every golden plan renders back to its file's text.
func TestPlansFromText(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "translate", "testdata", "nft-*.golden"))
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		plans, err := plansFromText(string(text))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var b strings.Builder
		for _, p := range plans {
			b.WriteString("# " + string(p.FamilyOrDefault()) + "\n")
			b.WriteString(p.String())
		}
		if diff := cmp.Diff(string(text), b.String()); diff != "" {
			t.Errorf("%s read back and rendered differs (-file +rendered):\n%s", filepath.Base(f), diff)
		}
	}
}

// canonical sorts the set and chain blocks of a Fake's Dump, which lists
// them in creation order, so that dumps of the same tables compare equal
// however they were reached.
func canonical(dump string) string {
	var out []string
	for _, table := range strings.SplitAfter(dump, "\n}\n") {
		lines := strings.SplitAfter(table, "\n")
		var head []string
		var blocks []string
		var cur strings.Builder
		for _, l := range lines {
			switch {
			case cur.Len() > 0:
				cur.WriteString(l)
				if l == "\t}\n" {
					blocks = append(blocks, cur.String())
					cur.Reset()
				}
			case strings.HasPrefix(l, "\t") && strings.HasSuffix(l, "{\n"):
				cur.WriteString(l)
			default:
				head = append(head, l)
			}
		}
		slices.Sort(blocks)
		out = append(out, strings.Join(head, "")+strings.Join(blocks, ""))
	}
	return strings.Join(out, "")
}

// TestFakeAppliesGoldenPlans applies every golden plan to a Fake: one
// full batch, then nothing when applied again, and the dump holds every
// chain with its rules and every set with its elements.
func TestFakeAppliesGoldenPlans(t *testing.T) {
	ctx := context.Background()
	for _, g := range goldenPlans(t) {
		t.Run(g.name, func(t *testing.T) {
			f := nftables.NewFake()
			for range 2 {
				if err := f.Apply(ctx, g.plan); err != nil {
					t.Fatalf("Fake.Apply = %v", err)
				}
			}
			want := nftables.Stats{Applies: 2, Batches: 1, FullBatches: 1, Messages: f.Stats().Messages}
			if diff := cmp.Diff(want, f.Stats()); diff != "" {
				t.Errorf("Stats after applying twice (-want +got):\n%s", diff)
			}
			dump := f.Dump()
			for i := range g.plan.Chains {
				c := &g.plan.Chains[i]
				if !strings.Contains(dump, "\tchain "+c.Name+" {\n") {
					t.Errorf("Dump lacks chain %s", c.Name)
				}
				for _, r := range c.Rules() {
					if !strings.Contains(dump, "\t\t"+r+"\n") {
						t.Errorf("Dump lacks rule %q of chain %s", r, c.Name)
					}
				}
			}
			for i := range g.plan.Sets {
				s := &g.plan.Sets[i]
				for j := range s.Elements {
					if e := string(nftables.AppendElement(nil, s, &s.Elements[j])); !strings.Contains(dump, "\t\t\t"+e+",\n") {
						t.Errorf("Dump lacks element %q of set %s", e, s.Name)
					}
				}
			}
		})
	}
}

// ExampleFake shows a Fake applying a plan, the partial batch of a
// change, and its dump. Chains are listed in the order they were made:
// a full batch declares the chains a numgen map jumps to just before it
// (see the Kernel doc).
func ExampleFake() {
	ctx := context.Background()
	svc, _ := nftables.NewChain("svc", "numgen random mod 2 vmap { 0 : goto ep1 , 1 : goto ep2 }")
	ep1, _ := nftables.NewChain("ep1", "meta l4proto tcp dnat to 10.0.1.1:8080")
	ep2, _ := nftables.NewChain("ep2", "meta l4proto tcp dnat to 10.0.2.2:8080")
	pre, _ := nftables.NewChain("nat-prerouting", "ip daddr . meta l4proto . th dport vmap @service-ips")
	pre.Base = &nftables.BaseChain{Type: nftables.ChainTypeNAT, Hook: nftables.HookPrerouting, Priority: nftables.PriorityDstNAT}
	vips := nftables.Set{Name: "service-ips", Key: []nftables.DataType{nftables.TypeIPv4Addr, nftables.TypeInetProto, nftables.TypeInetService},
		Value: nftables.TypeVerdict, Elements: []nftables.Element{
			{Addr: netip.MustParseAddr("172.30.0.1"), Proto: nftables.ProtocolTCP, Port: 80, Action: nftables.Goto("svc")}}}
	p := &nftables.Plan{Sets: []nftables.Set{vips}, Chains: []nftables.Chain{pre, svc, ep1, ep2}}

	f := nftables.NewFake()
	if err := f.Apply(ctx, p); err != nil {
		fmt.Println(err)
	}
	// The second endpoint goes: svc changes and ep2 is deleted.
	svc2, _ := nftables.NewChain("svc", "numgen random mod 1 vmap { 0 : goto ep1 }")
	p2 := &nftables.Plan{Sets: p.Sets, Chains: []nftables.Chain{pre, svc2, ep1}}
	if err := f.Apply(ctx, p2); err != nil {
		fmt.Println(err)
	}
	s := f.Stats()
	fmt.Printf("batches %d (full %d, partial %d)\n", s.Batches, s.FullBatches, s.PartialBatches)
	fmt.Print(f.Dump())
	// Output:
	// batches 2 (full 1, partial 1)
	// table ip kube-proxy {
	// 	map service-ips {
	// 		type ipv4_addr . inet_proto . inet_service : verdict
	// 		elements = {
	// 			172.30.0.1 . tcp . 80 : goto svc,
	// 		}
	// 	}
	// 	chain nat-prerouting {
	// 		type nat hook prerouting priority -100; policy accept;
	// 		ip daddr . meta l4proto . th dport vmap @service-ips
	// 	}
	// 	chain ep1 {
	// 		meta l4proto tcp dnat to 10.0.1.1:8080
	// 	}
	// 	chain svc {
	// 		numgen random mod 1 vmap { 0 : goto ep1 }
	// 	}
	// }
}

// mutate returns a copy of st with endpoint j of service i moved to
// another address, the smallest change of a cluster.
func mutate(st *proxy.State, i, j int) *proxy.State {
	c := *st
	c.Services = slices.Clone(st.Services)
	svc := &c.Services[i]
	svc.Endpoints = slices.Clone(svc.Endpoints)
	e := &svc.Endpoints[j]
	b := e.Addr.As4()
	b[3] ^= 0x80
	e.Addr = netip.AddrFrom4(b)
	return &c
}

// TestFakePartialSync applies pairs of random states, and one-endpoint
// changes of them, to a Fake one after the other: every second batch is
// accepted (the Fake refuses misordered operations as the kernel does)
// and leaves exactly the tables a fresh Fake gets from the second plan.
func TestFakePartialSync(t *testing.T) {
	ctx := context.Background()
	g := randstate.New(7)
	for i := range 60 {
		a := g.State()
		b := g.State()
		if i%2 == 1 {
			for si := range a.Services {
				if len(a.Services[si].Endpoints) > 0 && a.Services[si].Endpoints[0].Addr.Is4() {
					b = mutate(a, si, 0)
					break
				}
			}
		}
		incremental, fresh := nftables.NewFake(), nftables.NewFake()
		for _, p := range compile(t, a) {
			if err := incremental.Apply(ctx, p); err != nil {
				t.Fatalf("state %d: Apply(first) = %v", i, err)
			}
		}
		before := incremental.Stats()
		for _, p := range compile(t, b) {
			if err := incremental.Apply(ctx, p); err != nil {
				t.Fatalf("state %d: Apply(second) = %v\nplan:\n%s", i, err, p)
			}
			if err := fresh.Apply(ctx, p); err != nil {
				t.Fatalf("state %d: Apply(fresh) = %v", i, err)
			}
		}
		if diff := cmp.Diff(canonical(fresh.Dump()), canonical(incremental.Dump())); diff != "" {
			t.Fatalf("state %d: tables after a partial sync differ from a fresh apply (-fresh +partial):\n%s", i, diff)
		}
		if after := incremental.Stats(); after.FullBatches != before.FullBatches && i%2 == 1 {
			t.Errorf("state %d: a one-endpoint change took a full batch", i)
		}
	}
}

// TestFakeOneEndpointChange checks that moving one endpoint of the
// example cluster sends one small partial batch: that service's chains
// and its map elements, nothing else.
func TestFakeOneEndpointChange(t *testing.T) {
	ctx := context.Background()
	st := exampleState(t)
	f := nftables.NewFake()
	for _, p := range compile(t, st) {
		if err := f.Apply(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	before := f.Stats()
	si := slices.IndexFunc(st.Services, func(s proxy.Service) bool { return s.Name == "web" })
	if si < 0 {
		t.Fatal("example cluster has no service web")
	}
	for _, p := range compile(t, mutate(st, si, 0)) {
		if err := f.Apply(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	after := f.Stats()
	if got := after.PartialBatches - before.PartialBatches; got != 1 || after.FullBatches != before.FullBatches {
		t.Errorf("one endpoint change: %d partial and %d full batches, want 1 and 0", got, after.FullBatches-before.FullBatches)
	}
	// web has ClientIP affinity: flush its service chain and add its 3
	// rules again; add the new endpoint's affinity set, chain and 3
	// rules; flush and delete the old endpoint's chain and delete its
	// set. 12 operations.
	if got := after.Messages - before.Messages; got != 12 {
		t.Errorf("one endpoint change sent %d operations, want 12", got)
	}
}

// TestFakeRepairsDrift changes tables behind a Fake's applier, as other
// programs would, and checks that the next Apply notices and repairs.
func TestFakeRepairsDrift(t *testing.T) {
	ctx := context.Background()
	plans := compile(t, exampleState(t))
	p := plans[0]
	f := nftables.NewFake()
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	want := f.Dump()
	tests := []struct {
		name      string
		edit      func() error
		wantStats func(before nftables.Stats) nftables.Stats
	}{
		{"flush chain", func() error { return f.FlushChain(nftables.IPv4, nftables.DefaultTableName, "services") },
			func(s nftables.Stats) nftables.Stats {
				s.Applies, s.Batches, s.PartialBatches, s.Verifications, s.Repairs = s.Applies+1, s.Batches+1, s.PartialBatches+1, s.Verifications+1, s.Repairs+1
				return s
			}},
		{"delete table", func() error { return f.DeleteTable(nftables.IPv4, nftables.DefaultTableName) },
			func(s nftables.Stats) nftables.Stats {
				s.Applies, s.Batches, s.FullBatches, s.Verifications, s.Repairs = s.Applies+1, s.Batches+1, s.FullBatches+1, s.Verifications+1, s.Repairs+1
				return s
			}},
		{"recreate table", func() error { return f.Load(p) },
			func(s nftables.Stats) nftables.Stats {
				s.Applies, s.Batches, s.FullBatches, s.Verifications, s.Repairs = s.Applies+1, s.Batches+1, s.FullBatches+1, s.Verifications+1, s.Repairs+1
				return s
			}},
		{"unrelated change", func() error { return f.Load(foreignPlan(t)) },
			func(s nftables.Stats) nftables.Stats {
				s.Applies, s.Verifications = s.Applies+1, s.Verifications+1
				return s
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.Stats()
			if err := tc.edit(); err != nil {
				t.Fatal(err)
			}
			if err := f.Apply(ctx, p); err != nil {
				t.Fatalf("Apply after %s = %v", tc.name, err)
			}
			got := f.Stats()
			wantStats := tc.wantStats(before)
			wantStats.Messages = got.Messages
			if diff := cmp.Diff(wantStats, got); diff != "" {
				t.Errorf("Stats after %s and Apply (-want +got):\n%s", tc.name, diff)
			}
			if diff := cmp.Diff(canonical(want), canonical(withoutTable(f.Dump(), "ip filter"))); diff != "" {
				t.Errorf("tables after %s and Apply (-applied +repaired):\n%s", tc.name, diff)
			}
		})
	}
}

// foreignPlan returns another program's table, "ip filter".
func foreignPlan(t testing.TB) *nftables.Plan {
	t.Helper()
	in, err := nftables.NewChain("input", "ct state established accept", "tcp dport 22 accept", "drop")
	if err != nil {
		t.Fatal(err)
	}
	in.Base = &nftables.BaseChain{Type: nftables.ChainTypeFilter, Hook: nftables.HookInput, Priority: nftables.PriorityFilter}
	return &nftables.Plan{Table: nftables.Table{Name: "filter"}, Chains: []nftables.Chain{in}}
}

// withoutTable returns a dump without the table named "FAMILY NAME".
func withoutTable(dump, table string) string {
	var out []string
	for _, t := range strings.SplitAfter(dump, "\n}\n") {
		if !strings.HasPrefix(t, "table "+table+" {") {
			out = append(out, t)
		}
	}
	return strings.Join(out, "")
}

// TestFakeCleanup checks that Cleanup deletes the kube-proxy tables of
// both families and leaves another program's table.
func TestFakeCleanup(t *testing.T) {
	ctx := context.Background()
	f := nftables.NewFake()
	foreign := foreignPlan(t)
	if err := f.Load(foreign); err != nil {
		t.Fatal(err)
	}
	st := exampleState(t)
	plans := compile(t, st)
	if len(plans) != 2 {
		t.Fatalf("example cluster compiles to %d plans, want ip and ip6", len(plans))
	}
	for _, p := range plans {
		if err := f.Apply(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := nftables.NewFake()
	if err := fresh.Load(foreign); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fresh.Dump(), f.Dump()); diff != "" {
		t.Errorf("after Cleanup (-foreign table only +got):\n%s", diff)
	}
	before := f.Stats().Batches
	if err := f.Cleanup(ctx); err != nil || f.Stats().Batches != before {
		t.Errorf("second Cleanup = %v with %d batches, want nil and none", err, f.Stats().Batches-before)
	}
}

// TestFakeRefusesBadPlans checks that plans the kernel would refuse are
// refused before any batch, naming the problem, and change nothing.
func TestFakeRefusesBadPlans(t *testing.T) {
	ctx := context.Background()
	jump, _ := nftables.NewChain("a", "jump missing")
	v6, _ := nftables.NewChain("b", "ip saddr fd00::1 accept")
	wrongKey := nftables.Set{Name: "s", Key: []nftables.DataType{nftables.TypeIPv4Addr},
		Elements: []nftables.Element{{Addr: netip.MustParseAddr("fd00::1")}}}
	tests := []struct {
		name    string
		plan    *nftables.Plan
		wantErr error
	}{
		{"jump to a missing chain", &nftables.Plan{Chains: []nftables.Chain{jump}}, nftables.ErrMissingChain},
		{"address of the other family", &nftables.Plan{Chains: []nftables.Chain{v6}}, nftables.ErrWrongFamily},
		{"element key of the other family", &nftables.Plan{Sets: []nftables.Set{wrongKey}}, nftables.ErrWrongFamily},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := nftables.NewFake()
			if err := f.Load(foreignPlan(t)); err != nil {
				t.Fatal(err)
			}
			before := f.Dump()
			err := f.Apply(ctx, tc.plan)
			var ae *nftables.ApplyError
			if !errors.Is(err, tc.wantErr) || !errors.As(err, &ae) || ae.Op != "validate" {
				t.Fatalf("Apply = %v, want an ApplyError validate wrapping %v", err, tc.wantErr)
			}
			if f.Dump() != before || f.Stats().Batches != 0 {
				t.Errorf("a refused plan changed the Fake:\n%s", f.Dump())
			}
		})
	}
}
