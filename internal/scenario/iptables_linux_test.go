package scenario_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/examples"
	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// requireIPTables skips t, or fails it under SVCPLAN_REQUIRE_KERNEL=1,
// unless it runs as root with the tools the iptables kernel tests run.
func requireIPTables(t *testing.T) {
	t.Helper()
	netnstest.Require(t, "ip", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
}

// TestIPTablesScenarios runs the scenario table in iptables mode, the
// plan applied by iptables.Kernel, the applier.
func TestIPTablesScenarios(t *testing.T) {
	requireIPTables(t)
	scenario.Run(t, &applierMode{kernels: map[*netnstest.Topology]map[iptables.Family]*iptables.Kernel{}})
}

// TestIPTablesRestoreScenarios runs the scenario table in iptables mode
// with the plan text fed to iptables-restore as it is, so that the plan
// alone, without the applier's partial syncs, is shown to carry the
// traffic.
func TestIPTablesRestoreScenarios(t *testing.T) {
	requireIPTables(t)
	scenario.Run(t, &restoreMode{applied: map[*netnstest.Topology]bool{}})
}

// applierMode is iptables mode applied by one iptables.Kernel per family
// and topology, working in the node namespace. When a scenario ends, it
// runs the applier's Cleanup and checks that no owned chain or jump is
// left.
type applierMode struct {
	mu      sync.Mutex
	kernels map[*netnstest.Topology]map[iptables.Family]*iptables.Kernel
}

// Name implements scenario.Mode.
func (m *applierMode) Name() string { return "iptables" }

// Apply implements scenario.Mode.
func (m *applierMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	for _, p := range compile(t, st) {
		k := m.kernel(t, topo, p.FamilyOrDefault())
		if err := k.Apply(context.Background(), p); err != nil {
			t.Fatalf("Kernel(%s).Apply = %v\nplan:\n%s", p.FamilyOrDefault(), err, p)
		}
	}
}

// kernel returns the applier of family f for topo's node, making it on
// first use.
func (m *applierMode) kernel(t testing.TB, topo *netnstest.Topology, f iptables.Family) *iptables.Kernel {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	ks := m.kernels[topo]
	if ks == nil {
		ks = map[iptables.Family]*iptables.Kernel{}
		m.kernels[topo] = ks
		t.Cleanup(func() { m.cleanup(t, topo) })
	}
	if k := ks[f]; k != nil {
		return k
	}
	k, err := iptables.New(f, iptables.WithNetNS(netnsPath(topo.Node())))
	if err != nil {
		t.Fatalf("iptables.New(%s) = %v", f, err)
	}
	ks[f] = k
	return k
}

// cleanup runs the Cleanup of topo's appliers and checks that the node
// holds no owned chain or jump afterwards.
func (m *applierMode) cleanup(t testing.TB, topo *netnstest.Topology) {
	t.Helper()
	m.mu.Lock()
	ks := m.kernels[topo]
	delete(m.kernels, topo)
	m.mu.Unlock()
	for f, k := range ks {
		if err := k.Cleanup(context.Background()); err != nil {
			t.Errorf("Kernel(%s).Cleanup = %v", f, err)
			continue
		}
		text := save(t, topo.Node(), f)
		left, err := iptables.ParseSave(f, text, iptables.ParseOptions{OwnerPrefix: iptables.DefaultOwnerPrefix})
		if err != nil {
			t.Errorf("ParseSave(%s after Cleanup) = %v", tool(f, "save"), err)
			continue
		}
		if len(left.Tables) != 0 || len(left.Jumps) != 0 {
			t.Errorf("after Kernel(%s).Cleanup the node still holds owned rules:\n%s", f, text)
		}
	}
}

// netnsPath returns the path of a namespace made by netnstest.
func netnsPath(ns *netnstest.NS) string { return "/run/netns/" + ns.Name() }

// restoreMode is iptables mode applied by feeding each family's plan text
// to iptables-restore in the node namespace: with --noflush the first
// time, as on a node that has other rules, and as a full replacement of
// the plan's tables afterwards, so that chains no longer in the plan go.
type restoreMode struct {
	mu      sync.Mutex
	applied map[*netnstest.Topology]bool
}

// Name implements scenario.Mode.
func (m *restoreMode) Name() string { return "iptables" }

// Apply implements scenario.Mode.
func (m *restoreMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	m.mu.Lock()
	again := m.applied[topo]
	if !again {
		m.applied[topo] = true
		t.Cleanup(func() {
			m.mu.Lock()
			delete(m.applied, topo)
			m.mu.Unlock()
		})
	}
	m.mu.Unlock()
	var args []string
	if !again {
		args = []string{"--noflush"}
	}
	for _, p := range compile(t, st) {
		restore(t, topo.Node(), p, args...)
	}
}

// compile compiles st for iptables mode.
func compile(t testing.TB, st *proxy.State) []*iptables.Plan {
	t.Helper()
	plan, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		t.Fatalf("translate.Compile(iptables) = %v", err)
	}
	return plan.IPTables
}

// tool returns the name of the iptables tool for a family, such as
// ip6tables-save for IPv6 and "save".
func tool(f iptables.Family, what string) string {
	if f == iptables.IPv6 {
		return "ip6tables-" + what
	}
	return "iptables-" + what
}

// restore feeds p's text to iptables-restore (or ip6tables-restore) with
// args in ns.
func restore(t testing.TB, ns *netnstest.NS, p *iptables.Plan, args ...string) {
	t.Helper()
	name := tool(p.FamilyOrDefault(), "restore")
	text := p.String()
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Stdin = bytes.NewBufferString(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v in %s: %v: %s\ninput:\n%s", name, args, ns, err, out, text)
	}
}

// save returns iptables-save (or ip6tables-save) output of ns.
func save(t testing.TB, ns *netnstest.NS, f iptables.Family) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), tool(f, "save"))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// exampleState returns node-a's State of examples/cluster.yaml, which has
// a service of every kind.
func exampleState(t *testing.T) proxy.State {
	t.Helper()
	objs, _, err := kube.Read(bytes.NewReader(examples.Cluster()))
	if err != nil {
		t.Fatalf("kube.Read(examples/cluster.yaml) = %v", err)
	}
	st, _, err := kube.StateFor(objs, scenario.NodeName)
	if err != nil {
		t.Fatalf("kube.StateFor(examples/cluster.yaml, %s) = %v", scenario.NodeName, err)
	}
	return st
}

// TestIPTablesDryRun checks the executable dry run: a plan's text is
// valid iptables-restore input, and it gives the kernel exactly the rules
// that the applier gives it. One fresh namespace gets the text through
// iptables-restore --noflush, another the plan through iptables.Kernel;
// their iptables-save output, normalised, must be identical (but for the
// applier's empty canary chain), and must parse back to the plan's owned
// chains with the plan's rule counts.
func TestIPTablesDryRun(t *testing.T) {
	requireIPTables(t)
	st := exampleState(t)
	for _, p := range compile(t, &st) {
		f := p.FamilyOrDefault()
		t.Run(string(f), func(t *testing.T) {
			raw := netnstest.NewNS(t)
			restore(t, raw, p, "--noflush")
			rawText := save(t, raw, f)
			checkOwned(t, p, rawText)

			applied := netnstest.NewNS(t)
			k, err := iptables.New(f, iptables.WithNetNS(netnsPath(applied)))
			if err != nil {
				t.Fatalf("iptables.New(%s) = %v", f, err)
			}
			if err := k.Apply(t.Context(), p); err != nil {
				t.Fatalf("Kernel(%s).Apply = %v", f, err)
			}
			appliedText := withoutChain(save(t, applied, f), iptables.CanaryChain(iptables.DefaultOwnerPrefix))
			checkOwned(t, p, appliedText)
			if diff := cmp.Diff(iptables.Normalize(rawText), iptables.Normalize(appliedText)); diff != "" {
				t.Errorf("%s after iptables-restore of the plan text and after Kernel.Apply differ (-restore +applier):\n%s",
					tool(f, "save"), diff)
			}
		})
	}
}

// withoutChain returns iptables-save text without the declaration and the
// rules of chain.
func withoutChain(text, chain string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, ":"+chain+" ") || strings.HasPrefix(line, "-A "+chain+" ") {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// checkOwned parses iptables-save text and checks that it holds exactly
// the plan's owned chains, each with the plan's number of rules, and the
// plan's number of jumps per table.
func checkOwned(t *testing.T, p *iptables.Plan, text string) {
	t.Helper()
	got, err := iptables.ParseSave(p.FamilyOrDefault(), text, iptables.ParseOptions{OwnerPrefix: iptables.DefaultOwnerPrefix})
	if err != nil {
		t.Fatalf("ParseSave(iptables-save output) = %v\n%s", err, text)
	}
	if diff := cmp.Diff(ruleCounts(p), ruleCounts(got)); diff != "" {
		t.Errorf("owned chains' rule counts in the kernel differ from the plan's (-plan +kernel):\n%s", diff)
	}
	if diff := cmp.Diff(jumpCounts(p), jumpCounts(got)); diff != "" {
		t.Errorf("jumps per built-in chain in the kernel differ from the plan's (-plan +kernel):\n%s", diff)
	}
}

// ruleCounts maps "table/chain" to the chain's number of rules.
func ruleCounts(p *iptables.Plan) map[string]int {
	out := map[string]int{}
	for _, tc := range p.Tables {
		for i := range tc.Chains {
			out[string(tc.Table)+"/"+tc.Chains[i].Name] = tc.Chains[i].RuleCount()
		}
	}
	return out
}

// jumpCounts maps "table/chain" to the number of jumps into owned chains
// from that built-in chain.
func jumpCounts(p *iptables.Plan) map[string]int {
	out := map[string]int{}
	for _, j := range p.Jumps {
		out[string(j.Table)+"/"+j.Chain]++
	}
	return out
}
