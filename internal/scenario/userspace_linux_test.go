package scenario_test

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
	"github.com/svcplan/svcplan/userspace"
)

// proxyCloseTimeout bounds closing a scenario's proxy: its connections
// are gone by then, so Close should return at once.
const proxyCloseTimeout = 5 * time.Second

// TestUserspaceScenarios runs the scenario table in userspace mode: the
// listeners served by a userspace.Proxy working in the node namespace,
// and the portal rules applied there by iptables.Kernel.
func TestUserspaceScenarios(t *testing.T) {
	requireIPTables(t)
	scenario.Run(t, newUserspaceMode())
}

// userspaceMode is userspace mode with one userspace.Proxy per topology,
// listening and dialing in its node namespace, and the portal rules
// applied by the appliers of rules, whose cleanup checks that no owned
// chain or jump is left when a scenario ends.
type userspaceMode struct {
	rules applierMode

	mu    sync.Mutex
	nodes map[*netnstest.Topology]*userspaceNode
}

// userspaceNode is the proxy of one topology's node and the proxy ports
// of the plan it last applied.
type userspaceNode struct {
	proxy *userspace.Proxy
	ports map[string]int
}

func newUserspaceMode() *userspaceMode {
	return &userspaceMode{
		rules: applierMode{kernels: map[*netnstest.Topology]map[iptables.Family]*iptables.Kernel{}},
		nodes: map[*netnstest.Topology]*userspaceNode{},
	}
}

var (
	_ scenario.Proxying    = (*userspaceMode)(nil)
	_ scenario.Unsupported = (*userspaceMode)(nil)
)

// Name implements scenario.Mode.
func (m *userspaceMode) Name() string { return "userspace" }

// AlwaysMasquerades implements scenario.Proxying: the proxy accepts the
// client's connection and opens its own to the backend, from the node, so
// every backend sees a node address, as in old kube-proxy's userspace
// mode.
func (m *userspaceMode) AlwaysMasquerades() bool { return true }

// Skips implements scenario.Unsupported. Every scenario of the table
// applies to userspace mode: with AlwaysMasquerades, the part of
// ExternalTrafficPolicyLocal that the mode cannot do (keeping the
// client's address, which old kube-proxy's userspace proxier never did)
// is checked as masqueraded, while its local-endpoints-only routing and
// its drop without local endpoints are still checked; and a hairpin
// connection is masqueraded by construction, since the proxy dials the
// pod from the node.
func (m *userspaceMode) Skips(string) string { return "" }

// Apply implements scenario.Mode. It compiles st keeping the proxy ports
// of the previous plan, so that listeners still there keep their sockets
// and connections, has the proxy apply the listeners, and then the
// appliers the portal rules of each family: a new listener is open before
// a rule sends traffic to it.
func (m *userspaceMode) Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State) {
	t.Helper()
	n := m.node(t, topo)
	plan, err := translate.Compile(st, translate.ModeUserspace, translate.WithUserspacePorts(n.ports))
	if err != nil {
		t.Fatalf("translate.Compile(userspace) = %v", err)
	}
	if err := n.proxy.Apply(t.Context(), plan.Userspace); err != nil {
		t.Fatalf("Proxy.Apply = %v\nplan:\n%s", err, plan.Userspace)
	}
	for _, p := range plan.IPTables {
		k := m.rules.kernel(t, topo, p.FamilyOrDefault())
		if err := k.Apply(context.Background(), p); err != nil {
			t.Fatalf("Kernel(%s).Apply = %v\nplan:\n%s", p.FamilyOrDefault(), err, p)
		}
	}
	m.mu.Lock()
	n.ports = plan.Userspace.Ports()
	m.mu.Unlock()
}

// node returns topo's proxy, making it on first use; it is closed when t
// ends.
func (m *userspaceMode) node(t testing.TB, topo *netnstest.Topology) *userspaceNode {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[topo]; n != nil {
		return n
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	n := &userspaceNode{proxy: userspace.NewProxy(userspace.WithNetNS(netnsPath(topo.Node())), userspace.WithLogger(log))}
	m.nodes[topo] = n
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), proxyCloseTimeout)
		defer cancel()
		if err := n.proxy.Close(ctx); err != nil {
			t.Errorf("Proxy.Close = %v", err)
		}
		m.mu.Lock()
		delete(m.nodes, topo)
		m.mu.Unlock()
	})
	return n
}

// ports returns the proxy ports of the plan last applied to topo.
func (m *userspaceMode) ports(topo *netnstest.Topology) map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[topo]; n != nil {
		return n.ports
	}
	return nil
}

// TestUserspaceOpenConnectionSurvivesChanges checks what the userspace
// proxy promises a connection that is open while its service changes:
// it keeps working when its backend leaves the endpoints (the listener
// keeps its proxy port, and new connections go to the new backend), when
// the service has no endpoints left (new connections are refused), and
// when the service goes away altogether and its listener closes.
func TestUserspaceOpenConnectionSurvivesChanges(t *testing.T) {
	requireIPTables(t)
	m := newUserspaceMode()
	e := scenario.NewEnv(t, m)
	const port = 8080
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", port)
	b := e.AddBackend(t, "b", netnstest.Remote, "tcp", port)
	cip := netip.MustParseAddr("10.96.0.120")
	dst := netip.AddrPortFrom(cip, 80)
	withEndpoints := func(pods ...netnstest.Pod) proxy.State {
		st := e.BaseState()
		st.Services = []proxy.Service{{
			Namespace:  scenario.Namespace,
			Name:       "changing",
			ClusterIPs: []netip.Addr{cip},
			Ports:      []proxy.ServicePort{{Port: 80, TargetPort: port}},
			Endpoints:  scenario.Endpoints(netnstest.IPv4, port, pods...),
		}}
		return st
	}
	client := e.Client(netnstest.IPv4)

	e.Apply(t, withEndpoints(a))
	before := m.ports(e.Topo)
	conn := e.Open(t, client, dst)
	if want := scenario.Backends(netnstest.IPv4, port, a)[0]; conn.Reply.Backend != want {
		t.Fatalf("connection landed on %s, want %s", conn.Reply.Backend, want)
	}
	echo := func(when string) {
		t.Helper()
		if err := conn.Echo([]byte(when + "\n")); err != nil {
			t.Errorf("connection opened before the changes, %s: %v", when, err)
		}
	}

	e.Apply(t, withEndpoints(b))
	if diff := cmp.Diff(before, m.ports(e.Topo)); diff != "" {
		t.Errorf("proxy ports changed with the endpoints (-before +after):\n%s", diff)
	}
	echo("after its backend was replaced")
	e.ExpectN(t, 4, client, "tcp", dst, scenario.Reach(true, scenario.Backends(netnstest.IPv4, port, b)...))
	echo("after new connections to the new backend")

	e.Apply(t, withEndpoints())
	echo("after the service lost its endpoints")
	e.Expect(t, client, "tcp", dst, scenario.Refused())

	e.Apply(t, e.BaseState())
	echo("after the service was removed")
}
