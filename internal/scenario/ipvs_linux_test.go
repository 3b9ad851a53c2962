package scenario_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// The IPVS mode's kernel tests need IPVS, ipsets and dummy links, which
// the VM tier's kernel has and this machine's may not: TestVM (in
// vm_linux_test.go) runs the TestGuestIPVS tests inside the VM, and on the
// host they skip.

// requireIPVS skips t unless it runs inside the VM (where TestVM runs it),
// then skips it, or fails it under SVCPLAN_REQUIRE_KERNEL=1, unless the
// tools the IPVS tests read the kernel with are there.
func requireIPVS(t testing.TB) {
	t.Helper()
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm", "ipset", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
}

// TestGuestIPVSScenarios runs the scenario table in IPVS mode: each plan
// compiled with translate.ModeIPVS and applied in the node namespace by
// the netlink appliers of ipsets and IPVS (virtual servers, kube-ipvs0
// and its addresses, sysctls) and by iptables.Kernel for the fixed rules.
// In place of the scenarios IPVS mode differs in by design (see
// ipvsMode.Skips), it runs variants that check what IPVS mode does there.
func TestGuestIPVSScenarios(t *testing.T) {
	requireIPVS(t)
	m := newIPVSMode()
	scenario.Run(t, m)
	for _, sc := range ipvsVariants(m) {
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			sc.Run(t, m)
		})
	}
}

// ipvsMode is IPVS mode applied by one ipvsNode of appliers per
// topology, all working in the topology's node namespace. When a
// scenario ends, it runs the appliers' Cleanup and checks that the node
// holds no virtual server, no owned ipset, no kube-ipvs0 and no owned
// chain.
type ipvsMode struct {
	mu    sync.Mutex
	nodes map[*netnstest.Topology]*ipvsNode
}

// ipvsNode is the appliers of one node namespace.
type ipvsNode struct {
	path  string
	sets  *ipset.Kernel
	ipvs  *ipvs.Kernel
	rules map[iptables.Family]*iptables.Kernel
}

var _ scenario.Unsupported = (*ipvsMode)(nil)

func newIPVSMode() *ipvsMode { return &ipvsMode{nodes: map[*netnstest.Topology]*ipvsNode{}} }

// Name implements scenario.Mode.
func (m *ipvsMode) Name() string { return "ipvs" }

// The reasons IPVS mode skips scenarios, as kube-proxy's IPVS mode
// behaves differently from its iptables mode there by design.
const (
	// ipvsNodePortSkip: kube-proxy's IPVS mode makes NodePort virtual
	// servers on the node's addresses, never on 127.0.0.1 (there is no
	// --iptables-localhost-nodeports for it, and its KUBE-SERVICES
	// returns at once for loopback sources), while the mode-independent
	// model forwards NodePorts on localhost.
	ipvsNodePortSkip = "kube-proxy's IPVS mode does not serve NodePorts on localhost; IPVSNodePortNotLocalhost checks the rest"
	// ipvsLocalPolicySkip: one NodePort virtual server serves every
	// source, and kube-proxy's IPVS mode gives a Local-policy one the
	// node's local endpoints, or when there are none all endpoints (so
	// that pods can still reach it, kubernetes#93456), where iptables
	// mode (and the model) drops outside traffic to a NodePort without
	// local endpoints and sends the node's own and pods' traffic to every
	// endpoint.
	ipvsLocalPolicySkip = "kube-proxy's IPVS mode has one NodePort virtual server for all sources (local endpoints, else all); IPVSExternalTrafficPolicyLocal checks what it does"
	// ipvsLoadBalancerSkip: kube-proxy's IPVS mode keeps the node from a
	// load balancer IP whose source ranges exclude it by a rule in
	// KUBE-IPVS-OUT-FILTER that matches the LB IP as the source, the
	// address a node process gets by default for an address on
	// kube-ipvs0 (kubernetes#119656); a node process bound to the node's
	// own address, as the shared scenario dials, gets through.
	ipvsLoadBalancerSkip = "kube-proxy's IPVS mode keeps only node traffic from the LB IP itself out of source ranges; IPVSLoadBalancerSourceRanges checks the rest"
)

// Skips implements scenario.Unsupported.
func (m *ipvsMode) Skips(sc string) string {
	switch sc {
	case "NodePort":
		return ipvsNodePortSkip
	case "ExternalTrafficPolicyLocal":
		return ipvsLocalPolicySkip
	case "LoadBalancerSourceRanges":
		return ipvsLoadBalancerSkip
	}
	return ""
}

// Apply implements scenario.Mode: the sets first, which the rules match,
// then the virtual servers and addresses, then each family's rules.
func (m *ipvsMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	n := m.node(t, topo)
	p := compileIPVS(t, st)
	n.apply(t, p)
}

// apply applies p with n's appliers.
func (n *ipvsNode) apply(t testing.TB, p *translate.Plan) {
	t.Helper()
	ctx := context.Background()
	if err := n.sets.Apply(ctx, p.IPSets); err != nil {
		t.Fatalf("ipset Kernel.Apply = %v\nplan:\n%s", err, p.IPSets)
	}
	if err := n.ipvs.Apply(ctx, p.IPVS); err != nil {
		t.Fatalf("ipvs Kernel.Apply = %v\nplan:\n%s", err, p.IPVS)
	}
	for _, r := range p.IPTables {
		k, err := n.rulesKernel(r.FamilyOrDefault())
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Apply(ctx, r); err != nil {
			t.Fatalf("iptables Kernel(%s).Apply = %v\nplan:\n%s", r.FamilyOrDefault(), err, r)
		}
	}
}

// rulesKernel returns n's iptables applier of family f, making it on
// first use; Apply calls it from one goroutine per node.
func (n *ipvsNode) rulesKernel(f iptables.Family) (*iptables.Kernel, error) {
	if k := n.rules[f]; k != nil {
		return k, nil
	}
	k, err := iptables.New(f, iptables.WithNetNS(n.path))
	if err != nil {
		return nil, err
	}
	n.rules[f] = k
	return k, nil
}

// draining returns the number of real servers the IPVS applier of topo's
// node keeps draining, 0 before its first Apply.
func (m *ipvsMode) draining(topo *netnstest.Topology) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[topo]; n != nil {
		return n.ipvs.Stats().Draining
	}
	return 0
}

// node returns the appliers of topo's node, making them on first use.
func (m *ipvsMode) node(t testing.TB, topo *netnstest.Topology) *ipvsNode {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[topo]; n != nil {
		return n
	}
	n := newIPVSNode(t, netnsPath(topo.Node()))
	m.nodes[topo] = n
	t.Cleanup(func() {
		m.mu.Lock()
		delete(m.nodes, topo)
		m.mu.Unlock()
		n.cleanup(t, topo.Node())
	})
	return n
}

// newIPVSNode returns the appliers of the namespace at path.
func newIPVSNode(t testing.TB, path string) *ipvsNode {
	t.Helper()
	sets, err := ipset.New(ipset.WithNetNS(path))
	if err != nil {
		t.Fatalf("ipset.New = %v", err)
	}
	k, err := ipvs.New(ipvs.WithNetNS(path))
	if err != nil {
		t.Fatalf("ipvs.New = %v", err)
	}
	return &ipvsNode{path: path, sets: sets, ipvs: k, rules: map[iptables.Family]*iptables.Kernel{}}
}

// cleanup runs the Cleanup of n's appliers, the rules first (they match
// the sets), and checks that ns holds nothing they own afterwards.
func (n *ipvsNode) cleanup(t testing.TB, ns *netnstest.NS) {
	t.Helper()
	ctx := context.Background()
	for f, k := range n.rules {
		if err := k.Cleanup(ctx); err != nil {
			t.Errorf("iptables Kernel(%s).Cleanup = %v", f, err)
		}
		text := save(t, ns, f)
		left, err := iptables.ParseSave(f, text, iptables.ParseOptions{OwnerPrefix: iptables.DefaultOwnerPrefix})
		if err != nil {
			t.Errorf("ParseSave(%s after Cleanup) = %v", tool(f, "save"), err)
		} else if len(left.Tables) != 0 || len(left.Jumps) != 0 {
			t.Errorf("after iptables Kernel(%s).Cleanup the node still holds owned rules:\n%s", f, text)
		}
	}
	if err := n.ipvs.Cleanup(ctx); err != nil {
		t.Errorf("ipvs Kernel.Cleanup = %v", err)
	}
	if err := n.sets.Cleanup(ctx); err != nil {
		t.Errorf("ipset Kernel.Cleanup = %v", err)
	}
	if out := execIn(t, ns, "ipvsadm", "-S", "-n"); strings.TrimSpace(out) != "" {
		t.Errorf("after ipvs Kernel.Cleanup the node still holds virtual servers:\n%s", out)
	}
	if out := execIn(t, ns, "ipset", "list", "-n"); strings.TrimSpace(out) != "" {
		t.Errorf("after ipset Kernel.Cleanup the node still holds sets:\n%s", out)
	}
	if _, err := ns.Exec(ctx, "ip", "link", "show", ipvs.DefaultInterface); err == nil {
		t.Errorf("after ipvs Kernel.Cleanup the node still has %s", ipvs.DefaultInterface)
	}
}

// compileIPVS compiles st for IPVS mode.
func compileIPVS(t testing.TB, st *proxy.State) *translate.Plan {
	t.Helper()
	p, err := translate.Compile(st, translate.ModeIPVS)
	if err != nil {
		t.Fatalf("translate.Compile(ipvs) = %v", err)
	}
	return p
}

// execIn runs name with args in ns and returns its output; it fails t if
// the command fails.
func execIn(t testing.TB, ns *netnstest.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), name, args...)
	if err != nil {
		t.Fatalf("%s %v in %s: %v\n%s", name, args, ns, err, out)
	}
	return string(out)
}
