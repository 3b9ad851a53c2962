package netnstest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestTopology builds a topology without any proxy rules, sends traffic
// straight to pod addresses, and checks that everything is gone afterwards
// and the host namespace is as it was.
func TestTopology(t *testing.T) {
	Require(t, "ip")
	hostBefore := hostState(t)
	goroutines := runtime.NumGoroutine()
	var names []string
	t.Run("traffic", func(t *testing.T) {
		tp := New(t)
		pod := tp.AddPod(t, Local)
		other := tp.AddPod(t, Local)
		remote := tp.AddPod(t, Remote)
		names = []string{tp.Node().Name(), tp.Client().Name(), pod.Name(), other.Name(), remote.Name()}
		for _, n := range names {
			if !strings.HasPrefix(n, NamePrefix) {
				t.Errorf("namespace %q lacks prefix %q", n, NamePrefix)
			}
		}
		for _, f := range tp.Families() {
			for _, network := range []string{"tcp", "udp"} {
				tp.Serve(t, network, netip.AddrPortFrom(pod.Addr(f), 8080))
			}
		}
		t.Run("direct", func(t *testing.T) { testDirect(t, tp, pod, other, remote) })
		t.Run("payload", func(t *testing.T) { testPayload(t, tp, pod) })
		t.Run("refused", func(t *testing.T) { testRefused(t, tp, pod) })
		t.Run("source", func(t *testing.T) { testSource(t, tp, pod) })
		t.Run("unreachable and dropped", func(t *testing.T) { testDropped(t, tp) })
		t.Run("node", func(t *testing.T) { testNodeNS(t, tp) })
		t.Run("server close", func(t *testing.T) { testServerClose(t, tp, other) })
	})
	if len(names) == 0 {
		return // skipped or failed before building
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `\b`).Match(out) {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
	waitGoroutines(t, goroutines)
	if diff := cmp.Diff(hostBefore, hostState(t)); diff != "" {
		t.Errorf("host namespace changed (-before +after):\n%s", diff)
	}
}

// testDirect dials the pod's servers from every kind of source.
func testDirect(t *testing.T, tp *Topology, pod, other, remote Pod) {
	for _, f := range tp.Families() {
		sources := []struct {
			name     string
			from     *NS
			wantPeer netip.Addr // zero: any source address the kernel picks
		}{
			{name: "client", from: tp.Client(), wantPeer: tp.ClientIP(f)},
			{name: "node", from: tp.Node()},
			{name: "local pod", from: other.NS, wantPeer: other.Addr(f)},
			{name: "remote pod", from: remote.NS, wantPeer: remote.Addr(f)},
			{name: "itself", from: pod.NS, wantPeer: pod.Addr(f)},
		}
		dst := netip.AddrPortFrom(pod.Addr(f), 8080)
		for _, src := range sources {
			for _, network := range []string{"tcp", "udp"} {
				r := src.from.Dial(t.Context(), network, dst)
				if !r.OK() {
					t.Errorf("%s from %s: Dial(%s) = %v, want a reply", f, src.name, dst, r)
					continue
				}
				if r.Backend != dst {
					t.Errorf("%s from %s: Dial(%s %s).Backend = %s, want %s", f, src.name, network, dst, r.Backend, dst)
				}
				if r.Peer != r.Local {
					t.Errorf("%s from %s: Dial(%s %s).Peer = %s, want the local address %s (no NAT)", f, src.name, network, dst, r.Peer, r.Local)
				}
				if src.wantPeer.IsValid() && r.Peer.Addr() != src.wantPeer {
					t.Errorf("%s from %s: Dial(%s %s).Peer = %s, want address %s", f, src.name, network, dst, r.Peer, src.wantPeer)
				}
			}
		}
	}
}

// testPayload checks that data comes back intact over TCP and UDP.
func testPayload(t *testing.T, tp *Topology, pod Pod) {
	for _, tc := range []struct {
		network string
		size    int
	}{{"tcp", 1 << 20}, {"udp", 1200}} {
		data := make([]byte, tc.size)
		rand.Read(data)
		dst := netip.AddrPortFrom(pod.V4, 8080)
		r := tp.Client().Dial(t.Context(), tc.network, dst, Payload(data))
		if !r.OK() {
			t.Errorf("Dial(%s %s, %d bytes) = %v, want a reply", tc.network, dst, tc.size, r)
			continue
		}
		if !bytes.Equal(r.Echo, data) {
			t.Errorf("Dial(%s %s, %d bytes) echoed %d bytes that differ from what was sent", tc.network, dst, tc.size, len(r.Echo))
		}
	}
}

// testRefused dials a closed port.
func testRefused(t *testing.T, tp *Topology, pod Pod) {
	for _, f := range tp.Families() {
		for _, network := range []string{"tcp", "udp"} {
			dst := netip.AddrPortFrom(pod.Addr(f), 9)
			r := tp.Client().Dial(t.Context(), network, dst, Timeout(time.Second))
			if !r.Refused() || r.TimedOut() || r.Unreachable() {
				t.Errorf("Dial(%s %s) = %v, want refused", network, dst, r)
			}
		}
	}
}

// testSource dials from extra client addresses and a fixed source port.
func testSource(t *testing.T, tp *Topology, pod Pod) {
	extra := map[Family]netip.Addr{
		IPv4: netip.MustParseAddr("203.0.113.7"),
		IPv6: netip.MustParseAddr("2001:db8:113::7"),
	}
	for _, f := range tp.Families() {
		src := extra[f]
		tp.AddClientAddr(t, src)
		if got := tp.NSOf(src); got != tp.Client() {
			t.Errorf("NSOf(%s) = %v, want the client", src, got)
		}
		dst := netip.AddrPortFrom(pod.Addr(f), 8080)
		for _, network := range []string{"tcp", "udp"} {
			r := tp.Client().Dial(t.Context(), network, dst, From(src))
			if !r.OK() || r.Peer.Addr() != src {
				t.Errorf("Dial(%s %s, From(%s)) = %v, want peer address %s", network, dst, src, r, src)
			}
		}
		for i := range 2 {
			r := tp.Client().Dial(t.Context(), "udp", dst, FromPort(40000))
			if !r.OK() || r.Peer.Port() != 40000 {
				t.Errorf("Dial %d(udp %s, FromPort(40000)) = %v, want peer port 40000", i, dst, r)
			}
		}
	}
}

// testDropped checks that an unreachable route and a blackhole route are
// told apart from a refusal.
func testDropped(t *testing.T, tp *Topology) {
	for _, route := range [][]string{
		{"route", "add", "unreachable", "198.51.100.1/32"},
		{"route", "add", "blackhole", "198.51.100.2/32"},
	} {
		if out, err := tp.Node().Exec(t.Context(), "ip", route...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	unreachable := netip.MustParseAddrPort("198.51.100.1:80")
	if r := tp.Client().Dial(t.Context(), "tcp", unreachable, Timeout(time.Second)); !r.Unreachable() || r.Refused() {
		t.Errorf("Dial(tcp %s) = %v, want host unreachable", unreachable, r)
	}
	dropped := netip.MustParseAddrPort("198.51.100.2:80")
	for _, network := range []string{"tcp", "udp"} {
		start := time.Now()
		r := tp.Client().Dial(t.Context(), network, dropped, Timeout(500*time.Millisecond))
		if !r.TimedOut() || r.Refused() || r.Unreachable() {
			t.Errorf("Dial(%s %s) = %v, want a timeout", network, dropped, r)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Dial(%s %s) took %v, want about the 500ms timeout", network, dropped, d)
		}
	}
}

// testNodeNS checks Do and Exec in the node namespace.
func testNodeNS(t *testing.T, tp *Topology) {
	for _, sysctl := range []string{"ipv4/ip_forward", "ipv4/conf/all/route_localnet", "ipv6/conf/all/forwarding"} {
		var got []byte
		err := tp.Node().Do(func() error {
			var err error
			got, err = os.ReadFile("/proc/sys/net/" + sysctl)
			return err
		})
		if err != nil || strings.TrimSpace(string(got)) != "1" {
			t.Errorf("in the node, net/%s = %q, %v; want 1", sysctl, got, err)
		}
	}
	out, err := tp.Node().Exec(t.Context(), "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tp.Families() {
		if !strings.Contains(string(out), " "+tp.NodeIP(f).String()+"/") {
			t.Errorf("ip addr in the node = %q, want it to list %s", out, tp.NodeIP(f))
		}
	}
	if _, err := tp.Node().Exec(t.Context(), "false"); err == nil {
		t.Error(`Exec("false") = nil error, want the exit status`)
	}
}

// testServerClose checks Hits, that Close does not wait for an open
// connection, and that a closed server refuses.
func testServerClose(t *testing.T, tp *Topology, pod Pod) {
	s := pod.Serve(t, "tcp", netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	dst := netip.AddrPortFrom(pod.V4, s.Addr().Port())
	var held net.Conn
	err := tp.Client().Do(func() error {
		var err error
		held, err = net.DialTimeout("tcp", dst.String(), DefaultTimeout)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(DefaultTimeout))
	br := bufio.NewReader(held)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "backend="+dst.String()+" ") {
		t.Errorf("greeting = %q, %v; want backend=%s ...", line, err, dst)
	}
	if r := tp.Client().Dial(t.Context(), "tcp", dst); !r.OK() || r.Backend != dst {
		t.Errorf("Dial(tcp %s) = %v, want backend %s", dst, r, dst)
	}
	if got := s.Hits(); got != 2 {
		t.Errorf("Hits() = %d, want 2", got)
	}
	s.Close()
	s.Close()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("reading a connection open across Close = %v, want EOF", err)
	}
	if r := tp.Client().Dial(t.Context(), "tcp", dst, Timeout(time.Second)); !r.Refused() {
		t.Errorf("Dial(tcp %s) after Close = %v, want refused", dst, r)
	}
}

// TestNewNS checks a lone namespace: loopback up, removed afterwards.
func TestNewNS(t *testing.T) {
	Require(t, "ip")
	var name string
	t.Run("lone", func(t *testing.T) {
		ns := NewNS(t)
		name = ns.Name()
		ns.AddAddr(t, netip.MustParsePrefix("192.0.2.1/32"))
		s := ns.Serve(t, "udp", netip.MustParseAddrPort("192.0.2.1:53"))
		if r := ns.Dial(t.Context(), "udp", s.Addr()); !r.OK() || r.Backend != s.Addr() {
			t.Errorf("Dial(udp %s) = %v, want backend %s", s.Addr(), r, s.Addr())
		}
	})
	if name == "" {
		return
	}
	if err := exec.Command("ip", "netns", "pids", name).Run(); err == nil {
		t.Errorf("namespace %s still exists after cleanup", name)
	}
}

// hostState describes the host namespace's addresses, routes, rules and
// forwarding sysctls, leaving out lifetimes that count down.
func hostState(t *testing.T) []string {
	t.Helper()
	var state []string
	lifetime := regexp.MustCompile(`\s(expires|valid_lft|preferred_lft) \S+`)
	for _, c := range [][]string{
		{"-br", "addr"}, {"route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
		{"rule"}, {"-6", "rule"},
	} {
		out, err := exec.Command("ip", c...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
		state = append(state, strings.Split(lifetime.ReplaceAllString(string(out), ""), "\n")...)
	}
	for _, s := range []string{"ipv4/ip_forward", "ipv4/conf/all/route_localnet", "ipv6/conf/all/forwarding"} {
		b, _ := os.ReadFile("/proc/sys/net/" + s)
		state = append(state, s+"="+strings.TrimSpace(string(b)))
	}
	return state
}

// waitGoroutines waits up to 5 s for the goroutine count to drop back to
// baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines after cleanup, want at most %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
