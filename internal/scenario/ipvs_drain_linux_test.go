package scenario_test

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// drainVIP is the cluster IP of IPVSGracefulTermination.
var drainVIP = netip.MustParseAddr("10.96.0.120")

// drainWait bounds how long IPVSGracefulTermination waits, applying
// again and again, for the closed connection's IPVS entry to expire (a
// reset connection's entry lives 10 s, IPVS's CLOSE timeout) and the
// real server to go.
const drainWait = 60 * time.Second

func drainState(e *scenario.Env, pods ...netnstest.Pod) proxy.State {
	st := e.BaseState()
	st.Services = []proxy.Service{{
		Namespace: scenario.Namespace, Name: "drain", ClusterIPs: []netip.Addr{drainVIP},
		Ports:     []proxy.ServicePort{{Port: nftServicePort, TargetPort: nftBackendPort}},
		Endpoints: scenario.Endpoints(netnstest.IPv4, nftBackendPort, pods...),
	}}
	return st
}

func setupIPVSDrain(t *testing.T, e *scenario.Env) proxy.State {
	a := e.AddBackend(t, "a", netnstest.Local, "tcp", nftBackendPort)
	e.AddBackend(t, "b", netnstest.Remote, "tcp", nftBackendPort)
	return drainState(e, a)
}

// checkIPVSDrain: graceful termination. A TCP connection open to an
// endpoint that is then removed keeps working, because its real server
// stays with weight 0; new connections avoid it; once the connection is
// gone (reset, so that its IPVS entry expires after IPVS's 10 s CLOSE
// timeout rather than TIME_WAIT's two minutes), a later Apply deletes the
// real server. The applier counts the real server as draining meanwhile.
func checkIPVSDrain(t *testing.T, e *scenario.Env, m *ipvsMode) {
	v4 := netnstest.IPv4
	a := scenario.Backends(v4, nftBackendPort, e.Pod(t, "a"))[0]
	b := scenario.Backends(v4, nftBackendPort, e.Pod(t, "b"))[0]
	dst := netip.AddrPortFrom(drainVIP, nftServicePort)
	held := dialHeld(t, e.Topo.Client(), e.Topo.ClientIP(v4), dst)
	defer held.abort()
	if held.backend != a {
		t.Fatalf("connection before the change landed on %s, want %s", held.backend, a)
	}
	e.Apply(t, drainState(e, e.Pod(t, "b")))
	want := map[netip.AddrPort]int{a: 0, b: 1}
	if got := realWeights(t, e.Topo.Node(), dst); !maps.Equal(got, want) {
		t.Errorf("real servers of %s after the endpoint change = %v, want %v (the old one draining)", dst, got, want)
	}
	if n := m.draining(e.Topo); n != 1 {
		t.Errorf("ipvs Kernel.Stats().Draining = %d with the connection open, want 1", n)
	}
	if err := held.echo("still there?\n"); err != nil {
		t.Errorf("connection to the draining real server: %v", err)
	}
	e.ExpectN(t, 5, e.Client(v4), "tcp", dst, scenario.Reach(true, b))
	if err := held.echo("and now?\n"); err != nil {
		t.Errorf("connection to the draining real server, after new connections: %v", err)
	}
	// Applying again while it is open keeps the draining real server.
	e.Apply(t, drainState(e, e.Pod(t, "b")))
	if got := realWeights(t, e.Topo.Node(), dst); !maps.Equal(got, want) {
		t.Errorf("real servers of %s, applied again with the connection open = %v, want %v", dst, got, want)
	}
	held.abort()
	want = map[netip.AddrPort]int{b: 1}
	deadline := time.Now().Add(drainWait)
	for {
		e.Apply(t, drainState(e, e.Pod(t, "b")))
		got := realWeights(t, e.Topo.Node(), dst)
		if maps.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("real servers of %s %v after the connection closed, want %v: the drained one was not deleted", drainWait, got, want)
		}
		time.Sleep(time.Second)
	}
	if n := m.draining(e.Topo); n != 0 {
		t.Errorf("ipvs Kernel.Stats().Draining = %d after the real server was deleted, want 0", n)
	}
	e.ExpectN(t, 3, e.Client(v4), "tcp", dst, scenario.Reach(true, b))
}

// heldConn is a TCP connection kept open across applies.
type heldConn struct {
	conn    *net.TCPConn
	br      *bufio.Reader
	backend netip.AddrPort
}

// dialHeld connects from src in ns to dst and reads the backend's
// greeting; the connection is reset when t ends, if not before.
func dialHeld(t *testing.T, ns *netnstest.NS, src netip.Addr, dst netip.AddrPort) *heldConn {
	t.Helper()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: netnstest.DefaultTimeout}
	var nc net.Conn
	if err := ns.Do(func() error {
		var err error
		nc, err = d.DialContext(t.Context(), "tcp", dst.String())
		return err
	}); err != nil {
		t.Fatalf("open tcp %s -> %s: %v", src, dst, err)
	}
	h := &heldConn{conn: nc.(*net.TCPConn), br: bufio.NewReader(nc)}
	t.Cleanup(h.abort)
	h.conn.SetReadDeadline(time.Now().Add(netnstest.DefaultTimeout))
	line, err := h.br.ReadString('\n')
	if err != nil {
		t.Fatalf("open tcp %s -> %s: read greeting: %v", src, dst, err)
	}
	f, ok := strings.CutPrefix(strings.Fields(line)[0], "backend=")
	if h.backend, err = netip.ParseAddrPort(f); !ok || err != nil {
		t.Fatalf("open tcp %s -> %s: greeting %q: want backend=ADDR:PORT", src, dst, line)
	}
	return h
}

// echo sends payload and waits for the backend's echo.
func (h *heldConn) echo(payload string) error {
	h.conn.SetDeadline(time.Now().Add(scenario.DropTimeout))
	if _, err := io.WriteString(h.conn, payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(h.br, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(got) != payload {
		return fmt.Errorf("echoed %q, want %q", got, payload)
	}
	return nil
}

// abort resets the connection (linger 0), so that no TIME_WAIT follows.
func (h *heldConn) abort() {
	h.conn.SetLinger(0)
	h.conn.Close()
}

// realWeights returns the real servers of the TCP virtual server vs in
// ns, with their weights, as "ipvsadm -S -n" shows them.
func realWeights(t testing.TB, ns *netnstest.NS, vs netip.AddrPort) map[netip.AddrPort]int {
	t.Helper()
	p, err := ipvs.ParseSave(execIn(t, ns, "ipvsadm", "-S", "-n"))
	if err != nil {
		t.Fatalf("ParseSave(ipvsadm -S -n) = %v", err)
	}
	v := p.VirtualServer(ipvs.TCP, vs)
	if v == nil {
		t.Fatalf("ipvsadm -S -n shows no virtual server tcp %s", vs)
	}
	out := map[netip.AddrPort]int{}
	for _, r := range v.RealServers {
		out[r.Addr] = r.Weight
	}
	return out
}
