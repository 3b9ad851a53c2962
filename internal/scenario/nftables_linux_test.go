package scenario_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// requireNFTables skips t, or fails it under SVCPLAN_REQUIRE_KERNEL=1,
// unless it runs as root with the tools the nftables kernel tests run.
func requireNFTables(t *testing.T) {
	t.Helper()
	netnstest.Require(t, "ip", "nft")
}

// TestNFTablesScenarios runs the scenario table in nftables mode, the
// plans applied over netlink by nftables.Kernel.
func TestNFTablesScenarios(t *testing.T) {
	requireNFTables(t)
	runNFT(t, &nftApplierMode{nodes: map[*netnstest.Topology]*nftNode{}})
}

// TestNFTablesTextScenarios runs the scenario table in nftables mode with
// each plan's text fed to "nft -f" as it is, so that the plan alone,
// without the applier's partial batches, is shown to carry the traffic.
func TestNFTablesTextScenarios(t *testing.T) {
	requireNFTables(t)
	runNFT(t, nftTextMode{})
}

// runNFT runs the scenario table with m, and in place of the NodePort
// scenario, which nftables mode skips, the same checks but for
// localhost.
func runNFT(t *testing.T, m scenario.Mode) {
	scenario.Run(t, m)
	t.Run("NodePortNotLocalhost", func(t *testing.T) {
		t.Parallel()
		sc := scenario.Scenario{Name: "NodePortNotLocalhost", Setup: setupNFTNodePort, Check: checkNFTNodePort}
		sc.Run(t, m)
	})
}

// nftNodePortSkip is why nftables mode skips the NodePort scenario: its
// last check dials a NodePort on 127.0.0.1 from the node, which
// kube-proxy's nftables mode deliberately does not forward (its
// nodeports rule excludes 127.0.0.0/8), while the mode-independent model
// says it forwards.
const nftNodePortSkip = "kube-proxy's nftables mode does not serve NodePorts on localhost; NodePortNotLocalhost checks the rest"

// The NodePort service of NodePortNotLocalhost.
const (
	nftNodePort    = 30080
	nftServicePort = 80
	nftBackendPort = 8080
)

var nftNodePortVIP = netip.MustParseAddr("10.96.0.20")

func setupNFTNodePort(t *testing.T, e *scenario.Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", nftBackendPort)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", nftBackendPort)
	st := e.BaseState()
	st.Services = []proxy.Service{{
		Namespace: "scenario", Name: "np", Type: proxy.ServiceTypeNodePort, ClusterIPs: []netip.Addr{nftNodePortVIP},
		Ports:     []proxy.ServicePort{{Port: nftServicePort, TargetPort: nftBackendPort, NodePort: nftNodePort}},
		Endpoints: scenario.Endpoints(netnstest.IPv4, nftBackendPort, a, b),
	}}
	return st
}

// checkNFTNodePort: the NodePort answers on the node's address, from
// outside and from the node itself, masquerading under the Cluster
// policy; on localhost it is not forwarded, so nothing listens there.
func checkNFTNodePort(t *testing.T, e *scenario.Env) {
	v4 := netnstest.IPv4
	backends := scenario.Backends(v4, nftBackendPort, e.Pod(t, "a"), e.Pod(t, "b"))
	np := netip.AddrPortFrom(e.Topo.NodeIP(v4), nftNodePort)
	for range 3 {
		e.Expect(t, e.Client(v4), "tcp", np, scenario.Reach(true, backends...))
	}
	e.Expect(t, e.Node(v4), "tcp", np, scenario.Reach(true, backends...))
	e.Expect(t, e.Client(v4), "tcp", netip.AddrPortFrom(nftNodePortVIP, nftServicePort), scenario.Reach(true, backends...))
	lo := netip.MustParseAddr("127.0.0.1")
	r := e.Topo.Node().Dial(t.Context(), "tcp", netip.AddrPortFrom(lo, nftNodePort), netnstest.From(lo), netnstest.Timeout(scenario.DropTimeout))
	if !r.Refused() {
		t.Errorf("NodePort on localhost from the node = %v, want refused (not forwarded)", r)
	}
}

// Skips implements scenario.Unsupported.
func (m *nftApplierMode) Skips(sc string) string { return nftSkips(sc) }

// Skips implements scenario.Unsupported.
func (nftTextMode) Skips(sc string) string { return nftSkips(sc) }

func nftSkips(sc string) string {
	if sc == "NodePort" {
		return nftNodePortSkip
	}
	return ""
}

// nftApplierMode is nftables mode applied by one nftables.Kernel per
// topology, working in the node namespace. When a scenario ends, it runs
// the Kernel's Cleanup and checks that no kube-proxy table is left.
type nftApplierMode struct {
	mu    sync.Mutex
	nodes map[*netnstest.Topology]*nftNode
}

// nftNode is the applier of one topology's node and the families it
// wrote tables for.
type nftNode struct {
	kernel   *nftables.Kernel
	families map[nftables.Family]bool
}

// Name implements scenario.Mode.
func (m *nftApplierMode) Name() string { return "nftables" }

// Apply implements scenario.Mode. A family the new State no longer has
// gets an empty table, so that its old rules do not linger.
func (m *nftApplierMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	n := m.node(t, topo)
	plans := compileNFT(t, st)
	seen := map[nftables.Family]bool{}
	for _, p := range plans {
		seen[p.FamilyOrDefault()] = true
		n.families[p.FamilyOrDefault()] = true
	}
	for f := range n.families {
		if !seen[f] {
			plans = append(plans, &nftables.Plan{Table: nftables.Table{Family: f}})
		}
	}
	for _, p := range plans {
		if err := n.kernel.Apply(context.Background(), p); err != nil {
			t.Fatalf("Kernel.Apply(%s) = %v\nplan:\n%s", p.FamilyOrDefault(), err, p)
		}
	}
}

// node returns the applier of topo's node, making it on first use.
func (m *nftApplierMode) node(t testing.TB, topo *netnstest.Topology) *nftNode {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[topo]; n != nil {
		return n
	}
	k, err := nftables.New(nftables.WithNetNS(netnsPath(topo.Node())))
	if err != nil {
		t.Fatalf("nftables.New = %v", err)
	}
	n := &nftNode{kernel: k, families: map[nftables.Family]bool{}}
	m.nodes[topo] = n
	t.Cleanup(func() { m.cleanup(t, topo) })
	return n
}

// cleanup runs the Cleanup of topo's applier and checks that the node
// holds no kube-proxy table afterwards.
func (m *nftApplierMode) cleanup(t testing.TB, topo *netnstest.Topology) {
	t.Helper()
	m.mu.Lock()
	n := m.nodes[topo]
	delete(m.nodes, topo)
	m.mu.Unlock()
	if err := n.kernel.Cleanup(context.Background()); err != nil {
		t.Errorf("Kernel.Cleanup = %v", err)
		return
	}
	out, err := topo.Node().Exec(context.Background(), "nft", "list", "tables")
	if err != nil {
		t.Error(err)
		return
	}
	if strings.Contains(string(out), nftables.DefaultTableName) {
		t.Errorf("after Kernel.Cleanup the node still holds kube-proxy tables:\n%s", out)
	}
}

// nftTextMode is nftables mode applied by feeding each plan's text to
// "nft -f" in the node namespace; the text replaces its table whole.
type nftTextMode struct{}

// Name implements scenario.Mode.
func (nftTextMode) Name() string { return "nftables" }

// Apply implements scenario.Mode.
func (nftTextMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	for _, p := range compileNFT(t, st) {
		text := p.String()
		cmd := topo.Node().Command(context.Background(), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f in %s: %v: %s\ninput:\n%s", topo.Node(), err, out, text)
		}
	}
}

// compileNFT compiles st for nftables mode.
func compileNFT(t testing.TB, st *proxy.State) []*nftables.Plan {
	t.Helper()
	plan, err := translate.Compile(st, translate.ModeNFTables)
	if err != nil {
		t.Fatalf("translate.Compile(nftables) = %v", err)
	}
	return plan.NFTables
}
