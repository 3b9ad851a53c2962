package scenario

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/proxy"
)

// The names of the nodes that endpoints run on.
const (
	// NodeName is the node every scenario's State is for; endpoints of
	// [netnstest.Local] pods run on it.
	NodeName = "node-a"
	// RemoteNodeName is the node that endpoints of [netnstest.Remote] pods
	// run on.
	RemoteNodeName = "node-b"
)

// DropTimeout bounds a dial that is expected to be dropped, and a dial
// that is expected to be refused (which should take a few milliseconds).
const DropTimeout = time.Second

// maxRefusalDelay is how long a refusal may take: far less than
// DropTimeout, so that a refusal that only came after retransmissions
// does not pass.
const maxRefusalDelay = 500 * time.Millisecond

// ClusterCIDR4 and ClusterCIDR6 are the pod networks of every scenario's
// State: they cover both the node's own pod CIDR and the remote node's, in
// the default topology of [netnstest.New], and neither the client nor the
// node.
const (
	ClusterCIDR4 = "10.244.0.0/16"
	ClusterCIDR6 = "fd00:244::/32"
)

// Mode is a proxy mode under test: it makes the node namespace of a
// topology proxy traffic the way st says. Apply is called once with the
// scenario's first State and may be called again with a changed one; it
// fails t if the rules cannot be applied. Run calls Apply from parallel
// subtests, each with its own topology, so Apply must be safe for
// concurrent use with different topologies.
type Mode interface {
	// Name names the mode in test output, such as "iptables".
	Name() string
	// Apply makes the node of topo proxy as st says.
	Apply(t testing.TB, topo *netnstest.Topology, st *proxy.State)
}

// Proxying may be implemented by a [Mode] that proxies connections
// rather than rewriting packets, such as the userspace mode: the mode
// opens its own connection to the backend, from the node, so the backend
// never sees the dialer's address. When AlwaysMasquerades reports true,
// every reach a scenario expects unmasqueraded is checked as masqueraded
// (the backend must see a node address), and the cross-check against the
// model ignores whether [proxy.Resolve] masquerades.
type Proxying interface {
	// AlwaysMasquerades reports whether backends always see a node
	// address as the source.
	AlwaysMasquerades() bool
}

// Unsupported may be implemented by a [Mode] that lacks a feature some
// scenarios test. [Scenario.Run] skips a scenario for which Skips returns
// a reason other than "", with that reason. Such a skip is not a missing
// kernel feature: SVCPLAN_REQUIRE_KERNEL does not turn it into a failure.
type Unsupported interface {
	// Skips returns why the scenario named scenario cannot apply to the
	// mode, or "" if it can.
	Skips(scenario string) string
}

// Env is one scenario's world: its own topology, the mode under test, the
// pods the scenario made and the State last applied.
type Env struct {
	// Topo is the scenario's topology; its node is the node named
	// NodeName.
	Topo *netnstest.Topology

	mode  Mode
	state proxy.State
	pods  map[string]netnstest.Pod
}

// NewEnv builds a fresh topology for t and returns an Env that applies
// States with m.
func NewEnv(t *testing.T, m Mode) *Env {
	t.Helper()
	return &Env{Topo: netnstest.New(t), mode: m, pods: map[string]netnstest.Pod{}}
}

// BaseState returns the State of a node with no services: node NodeName
// with the topology's node addresses, and ClusterCIDR4 and ClusterCIDR6 as
// the cluster CIDRs.
func (e *Env) BaseState() proxy.State {
	var ips []netip.Addr
	for _, f := range e.Topo.Families() {
		ips = append(ips, e.Topo.NodeIP(f))
	}
	return proxy.State{
		Node:   proxy.Node{Name: NodeName, IPs: ips},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(ClusterCIDR4), netip.MustParsePrefix(ClusterCIDR6)}},
	}
}

// Apply validates st, has the mode apply it and makes it the State that
// later traffic is checked against. It fails t if st is invalid (a bug in
// the scenario).
func (e *Env) Apply(t testing.TB, st proxy.State) {
	t.Helper()
	if err := st.Validate(); err != nil {
		t.Fatalf("scenario state is invalid: %v", err)
	}
	e.mode.Apply(t, e.Topo, &st)
	e.state = st
}

// AddPod adds a pod at site s and remembers it under name.
func (e *Env) AddPod(t testing.TB, name string, s netnstest.Site) netnstest.Pod {
	t.Helper()
	if _, dup := e.pods[name]; dup {
		t.Fatalf("scenario adds pod %q twice", name)
	}
	p := e.Topo.AddPod(t, s)
	e.pods[name] = p
	return p
}

// AddBackend adds a pod at site s under name and starts a server for
// network ("tcp" or "udp") on port at each of its addresses.
func (e *Env) AddBackend(t testing.TB, name string, s netnstest.Site, network string, port uint16) netnstest.Pod {
	t.Helper()
	p := e.AddPod(t, name, s)
	for _, f := range e.Topo.Families() {
		p.Serve(t, network, netip.AddrPortFrom(p.Addr(f), port))
	}
	return p
}

// Pod returns the pod the scenario added under name. It fails t if there
// is none.
func (e *Env) Pod(t testing.TB, name string) netnstest.Pod {
	t.Helper()
	p, ok := e.pods[name]
	if !ok {
		t.Fatalf("scenario has no pod %q", name)
	}
	return p
}

// Endpoints returns one ready endpoint per pod, of family f, with the
// unnamed port port, on NodeName for local pods and RemoteNodeName for
// remote ones.
func Endpoints(f netnstest.Family, port int, pods ...netnstest.Pod) []proxy.Endpoint {
	out := make([]proxy.Endpoint, 0, len(pods))
	for _, p := range pods {
		node := NodeName
		if p.Site == netnstest.Remote {
			node = RemoteNodeName
		}
		out = append(out, proxy.Endpoint{
			Addr:     p.Addr(f),
			Ports:    []proxy.EndpointPort{{Port: port}},
			Ready:    true,
			NodeName: node,
		})
	}
	return out
}

// Backends returns the address and port of each pod in family f, the
// Reply.Backend a connection landing on it reports.
func Backends(f netnstest.Family, port uint16, pods ...netnstest.Pod) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(pods))
	for _, p := range pods {
		out = append(out, netip.AddrPortFrom(p.Addr(f), port))
	}
	return out
}

// Source is where a scenario sends traffic from.
type Source struct {
	// NS is the namespace that dials.
	NS *netnstest.NS
	// Addr is the source address the dialing socket is bound to.
	Addr netip.Addr
	// Node means the node itself sends (the packet passes the OUTPUT hook);
	// false means it comes from outside the node or from a pod.
	Node bool
}

// String names the source in test messages.
func (s Source) String() string { return s.NS.Name() + " from " + s.Addr.String() }

// Client returns the client namespace with its address of family f.
func (e *Env) Client(f netnstest.Family) Source {
	return Source{NS: e.Topo.Client(), Addr: e.Topo.ClientIP(f)}
}

// ClientFrom returns the client namespace with the extra address a (see
// [netnstest.Topology.AddClientAddr]).
func (e *Env) ClientFrom(a netip.Addr) Source {
	return Source{NS: e.Topo.Client(), Addr: a}
}

// Node returns the node itself with its address of family f.
func (e *Env) Node(f netnstest.Family) Source {
	return Source{NS: e.Topo.Node(), Addr: e.Topo.NodeIP(f), Node: true}
}

// NodeFrom returns the node itself sending from a, such as 127.0.0.1.
func (e *Env) NodeFrom(a netip.Addr) Source {
	return Source{NS: e.Topo.Node(), Addr: a, Node: true}
}

// FromPod returns pod p with its address of family f.
func FromPod(p netnstest.Pod, f netnstest.Family) Source {
	return Source{NS: p.NS, Addr: p.Addr(f)}
}

// Want is what a scenario expects of one connection, by kube-proxy's
// behaviour. Exactly one of Backends, Refused and TimedOut is set.
type Want struct {
	// Backends are the endpoints the connection may land on.
	Backends []netip.AddrPort
	// Masquerade means the backend sees a node address as the source;
	// false means it sees the dialer's own address. It applies only with
	// Backends.
	Masquerade bool
	// Refused means the connection is refused at once (REJECT).
	Refused bool
	// TimedOut means nothing answers (DROP).
	TimedOut bool
}

// Reach expects a connection to land on one of backends, masqueraded or
// not.
func Reach(masquerade bool, backends ...netip.AddrPort) Want {
	return Want{Backends: backends, Masquerade: masquerade}
}

// Refused expects the connection to be refused at once.
func Refused() Want { return Want{Refused: true} }

// TimedOut expects the connection to get no answer.
func TimedOut() Want { return Want{TimedOut: true} }

// String describes w in test messages.
func (w Want) String() string {
	switch {
	case w.Refused:
		return "refused"
	case w.TimedOut:
		return "timed out"
	case w.Masquerade:
		return fmt.Sprintf("one of %v, masqueraded", w.Backends)
	default:
		return fmt.Sprintf("one of %v, not masqueraded", w.Backends)
	}
}

// Expect sends one connection (TCP) or datagram (UDP) from src to dst,
// checks the outcome against want and against the reference model
// ([proxy.Resolve] on the State last applied), and returns the reply.
func (e *Env) Expect(t testing.TB, src Source, network string, dst netip.AddrPort, want Want) netnstest.Reply {
	t.Helper()
	r, _ := e.expect(t, src, network, dst, want)
	return r
}

// ExpectN sends n connections as [Env.Expect] does and returns their
// replies. It stops the test at the first one that does not go as wanted,
// so that a broken mode fails in seconds rather than after n timeouts.
func (e *Env) ExpectN(t testing.TB, n int, src Source, network string, dst netip.AddrPort, want Want) []netnstest.Reply {
	t.Helper()
	replies := make([]netnstest.Reply, 0, n)
	for i := range n {
		r, ok := e.expect(t, src, network, dst, want)
		replies = append(replies, r)
		if !ok {
			t.Fatalf("giving up after connection %d of %d", i+1, n)
		}
	}
	return replies
}

// alwaysMasquerades reports whether the mode under test is a [Proxying]
// one whose backends always see a node address.
func (e *Env) alwaysMasquerades() bool {
	p, ok := e.mode.(Proxying)
	return ok && p.AlwaysMasquerades()
}

// expect is Expect, also reporting whether everything went as wanted.
func (e *Env) expect(t testing.TB, src Source, network string, dst netip.AddrPort, want Want) (netnstest.Reply, bool) {
	t.Helper()
	if len(want.Backends) > 0 && e.alwaysMasquerades() {
		want.Masquerade = true
	}
	opts := []netnstest.DialOption{netnstest.From(src.Addr)}
	if want.Refused || want.TimedOut {
		opts = append(opts, netnstest.Timeout(DropTimeout))
	}
	start := time.Now()
	r := src.NS.Dial(t.Context(), network, dst, opts...)
	took := time.Since(start)
	ok := e.checkModel(t, src, network, dst, r)
	desc := fmt.Sprintf("%s %s -> %s", network, src, dst)
	if r.OK() && took > maxRefusalDelay {
		// A retransmission, typically: worth knowing when a run is slow.
		t.Logf("%s: answered after %v", desc, took)
	}
	problem := wantProblem(want, r, took)
	if problem == "" && r.OK() {
		problem = e.peerProblem(src, r, want.Masquerade)
	}
	if problem != "" {
		t.Errorf("%s: %s", desc, problem)
		ok = false
	}
	return r, ok
}

// wantProblem says how r, which took took, differs from want, apart from
// its source address; "" means it does not.
func wantProblem(want Want, r netnstest.Reply, took time.Duration) string {
	switch {
	case want.Refused && !r.Refused():
		return fmt.Sprintf("got %v, want refused", r)
	case want.Refused && took > maxRefusalDelay:
		return fmt.Sprintf("refused after %v, want at once (under %v)", took, maxRefusalDelay)
	case want.Refused:
		return ""
	case want.TimedOut && !r.TimedOut():
		return fmt.Sprintf("got %v, want timed out (dropped)", r)
	case want.TimedOut:
		return ""
	case !r.OK():
		return fmt.Sprintf("got %v, want %v", r, want)
	case !slices.Contains(want.Backends, r.Backend):
		return fmt.Sprintf("landed on %s, want %v", r.Backend, want)
	}
	return ""
}

// peerProblem says how the source the backend saw differs from a node
// address (masquerade) or the dialer's own address; "" means it does not.
func (e *Env) peerProblem(src Source, r netnstest.Reply, masquerade bool) string {
	peer := r.Peer.Addr()
	switch {
	case masquerade && !e.IsNodeAddr(peer):
		return fmt.Sprintf("backend saw source %s, want it masqueraded to a node address", r.Peer)
	case !masquerade && peer != src.Addr:
		return fmt.Sprintf("backend saw source %s, want the dialer's own %s (not masqueraded)", r.Peer, src.Addr)
	}
	return ""
}

// IsNodeAddr reports whether the node holds a: its LAN addresses, the
// gateway address it has on local and remote pod links, or the pods' IPv6
// gateway. A masqueraded packet has one of them as its source.
func (e *Env) IsNodeAddr(a netip.Addr) bool {
	for _, f := range e.Topo.Families() {
		if a == e.Topo.NodeIP(f) {
			return true
		}
	}
	for _, s := range []netnstest.Site{netnstest.Local, netnstest.Remote} {
		if a == e.Topo.PodCIDR(s, netnstest.IPv4).Masked().Addr().Next() {
			return true
		}
	}
	return a == netip.MustParseAddr("fe80::1")
}

// CheckModel reports an error unless the reference model predicts what the
// kernel did with a connection from src to dst: a forward to the backend r
// landed on (with a nonzero probability, masqueraded as r's peer shows
// unless the mode is [Proxying]), a drop for a timeout, a reject for a refusal, and for a packet the model
// leaves alone anything but a delivery to an endpoint.
func (e *Env) CheckModel(t testing.TB, src Source, network string, dst netip.AddrPort, r netnstest.Reply) {
	t.Helper()
	e.checkModel(t, src, network, dst, r)
}

// checkModel is CheckModel, also reporting whether model and kernel agree.
func (e *Env) checkModel(t testing.TB, src Source, network string, dst netip.AddrPort, r netnstest.Reply) bool {
	t.Helper()
	pkt := proxy.Packet{Src: src.Addr, Dst: dst, Protocol: protocolOf(network), FromNode: src.Node}
	ans := proxy.Resolve(&e.state, pkt)
	problem := e.disagreement(src, ans, r)
	if problem != "" {
		t.Errorf("model and kernel (%s mode) disagree on %s %s -> %s: proxy.Resolve = %s; kernel: %v: %s",
			e.mode.Name(), network, src, dst, describe(ans), r, problem)
	}
	return problem == ""
}

// disagreement returns why answer ans does not explain reply r, or "".
func (e *Env) disagreement(src Source, ans proxy.Answer, r netnstest.Reply) string {
	switch ans.Verdict {
	case proxy.VerdictForward:
		if !r.OK() {
			return "the model forwards, the kernel did not deliver"
		}
		for _, c := range ans.Choices {
			if c.Endpoint != r.Backend {
				continue
			}
			switch {
			case c.Probability <= 0:
				return "the model gives the observed backend probability 0"
			case e.alwaysMasquerades():
				// The mode hides the source whatever the model says;
				// expect checks that the backend saw a node address.
			case c.Masquerade && !e.IsNodeAddr(r.Peer.Addr()):
				return "the model masquerades, the backend saw the original source"
			case !c.Masquerade && r.Peer.Addr() != src.Addr:
				return "the model does not masquerade, the backend saw another source"
			}
			return ""
		}
		return "the observed backend is not among the model's choices"
	case proxy.VerdictDrop:
		if !r.TimedOut() {
			return "the model drops, the kernel did not time out"
		}
	case proxy.VerdictReject:
		if !r.Refused() {
			return "the model rejects, the kernel did not refuse"
		}
	default:
		if r.OK() && e.isEndpoint(r.Backend) {
			return "the model leaves the packet alone, the kernel delivered it to an endpoint"
		}
	}
	return ""
}

// isEndpoint reports whether ap is the address and port of an endpoint of
// the State last applied.
func (e *Env) isEndpoint(ap netip.AddrPort) bool {
	for i := range e.state.Services {
		for _, ep := range e.state.Services[i].Endpoints {
			if ep.Addr != ap.Addr() {
				continue
			}
			for _, p := range ep.Ports {
				if p.Port == int(ap.Port()) {
					return true
				}
			}
		}
	}
	return false
}

// describe writes an Answer in one line.
func describe(a proxy.Answer) string {
	var b strings.Builder
	b.WriteString(string(a.Verdict))
	if a.ServicePort != "" {
		b.WriteString(" (" + a.ServicePort + ")")
	}
	for i, c := range a.Choices {
		if i == 0 {
			b.WriteString(" to")
		}
		fmt.Fprintf(&b, " %s p=%.3f", c.Endpoint, c.Probability)
		if c.Masquerade {
			b.WriteString(" masq")
		}
	}
	return b.String()
}

// protocolOf returns the protocol of a dial network.
func protocolOf(network string) proxy.Protocol {
	if network == "udp" {
		return proxy.ProtocolUDP
	}
	return proxy.ProtocolTCP
}
