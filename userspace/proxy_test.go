package userspace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestTCPEcho(t *testing.T) {
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "ns/web:http", Backends: addrsOf(bs...)})
	sizes := []int{0, 1, 1000, 64 << 10, 1 << 20, 3<<20 + 7}
	counts := map[string]int{}
	var sent uint64
	for round := range 3 {
		for _, n := range sizes {
			payload := randomBytes(n + round)
			name, err := exchange(addr, payload, false)
			if err != nil {
				t.Fatalf("exchange of %d bytes through %s: %v", len(payload), addr, err)
			}
			counts[name]++
			sent += uint64(len(payload))
		}
	}
	// Round robin: 18 sequential connections, 6 each.
	for _, b := range bs {
		if counts[b.name] != 6 {
			t.Errorf("backend %s got %d connections, want 6 (spread %v)", b.name, counts[b.name], counts)
		}
	}
	settle(t, "connections still active", func() (bool, string) {
		s := statsOf(t, p, "ns/web:http")
		return s.Active == 0, fmt.Sprintf("%+v", s)
	})
	s := statsOf(t, p, "ns/web:http")
	want := ListenerStats{Name: "ns/web:http", Protocol: ProtocolTCP, Addr: addr, Backends: 3, Accepted: 18,
		BytesIn: sent, BytesOut: sent + 18*2}
	if s != want {
		t.Errorf("Stats() = %+v, want %+v", s, want)
	}
}

// TestTCPHalfClose checks that a half-close is passed on both ways: the
// client half-closes and still reads the backend's answer; the backend
// half-closes and still reads what the client sends after.
func TestTCPHalfClose(t *testing.T) {
	checkNoLeaks(t)
	t.Run("client first", func(t *testing.T) {
		b := startBackend(t, "digest", digestMode)
		p := newTestProxy(t)
		addr := applyOne(t, p, Listener{Name: "digest", Backends: addrsOf(b)})
		if _, err := exchange(addr, randomBytes(4<<20), true); err != nil {
			t.Fatalf("exchange: %v", err)
		}
	})
	t.Run("backend first", func(t *testing.T) {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan string, 1)
		go func() {
			c, err := ln.AcceptTCP()
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "hello")
			_ = c.CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b)
		}()
		p := newTestProxy(t)
		addr := applyOne(t, p, Listener{Name: "greeter", Backends: []netip.AddrPort{ln.Addr().(*net.TCPAddr).AddrPort()}})
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		hello, err := io.ReadAll(c)
		if err != nil || string(hello) != "hello" {
			t.Fatalf("reading to the backend's half-close = %q, %v; want hello", hello, err)
		}
		if _, err := io.WriteString(c, "world"); err != nil {
			t.Fatalf("writing after the backend half-closed: %v", err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		if s := <-got; s != "world" {
			t.Errorf("backend read %q after its half-close, want world", s)
		}
	})
}

func TestTCPBackendDies(t *testing.T) {
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(bs...)})
	bs[1].close()
	counts := map[string]int{}
	for range 30 {
		name, err := exchange(addr, []byte("ping"), false)
		if err != nil {
			t.Fatalf("exchange after a backend died: %v", err)
		}
		counts[name]++
	}
	if counts["b"] != 0 || counts["a"] == 0 || counts["c"] == 0 {
		t.Errorf("spread after b died = %v, want a and c only", counts)
	}
	if s := statsOf(t, p, "web"); s.FailedDials == 0 || s.Accepted != 30 {
		t.Errorf("Stats() = %+v, want 30 accepted and some failed dials", s)
	}
}

func TestTCPBackendAddedAndRemoved(t *testing.T) {
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(bs[:2]...)})
	for range 4 {
		if _, err := exchange(addr, []byte("x"), false); err != nil {
			t.Fatal(err)
		}
	}
	// Add c: from now on, round robin over three.
	if got := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(bs...)}); got != addr {
		t.Fatalf("after adding a backend the listener moved from %s to %s", addr, got)
	}
	counts := map[string]int{}
	for range 9 {
		name, err := exchange(addr, []byte("x"), false)
		if err != nil {
			t.Fatal(err)
		}
		counts[name]++
	}
	for _, b := range bs {
		if counts[b.name] != 3 {
			t.Errorf("after adding c, backend %s got %d of 9 connections, want 3 (%v)", b.name, counts[b.name], counts)
		}
	}

	// Hold a connection to some backend, then remove that backend: the
	// held connection goes on, new ones go elsewhere.
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	held, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	held = strings.TrimSuffix(held, "\n")
	var rest []*backend
	for _, b := range bs {
		if b.name != held {
			rest = append(rest, b)
		}
	}
	applyOne(t, p, Listener{Name: "web", Backends: addrsOf(rest...)})
	for range 6 {
		name, err := exchange(addr, []byte("x"), false)
		if err != nil {
			t.Fatal(err)
		}
		if name == held {
			t.Fatalf("removed backend %s got a new connection", held)
		}
	}
	if _, err := io.WriteString(c, "still here"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(r); err != nil || string(b) != "still here" {
		t.Errorf("held connection to the removed backend read %q, %v; want the echo", b, err)
	}
}

func TestTCPNoBackends(t *testing.T) {
	checkNoLeaks(t)
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "empty"})
	// The listener accepts, then resets: the reset may come before the
	// dial returns.
	c, err := net.Dial("tcp", addr.String())
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || !isReset(err) {
		t.Errorf("connection to a listener without backends: %v, want a reset", err)
	}
	if s := statsOf(t, p, "empty"); s.Refused != 1 || s.Accepted != 1 {
		t.Errorf("Stats() = %+v, want 1 accepted, 1 refused", s)
	}
	// Backends arrive: the same listener serves.
	b := startBackend(t, "a")
	applyOne(t, p, Listener{Name: "empty", Backends: addrsOf(b)})
	if _, err := exchange(addr, []byte("x"), false); err != nil {
		t.Errorf("exchange once a backend arrived: %v", err)
	}
}

func TestTCPAffinity(t *testing.T) {
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "sticky", Backends: addrsOf(bs...), AffinityTimeout: time.Hour})
	first := ""
	for i := range 12 {
		name, err := exchange(addr, []byte("x"), false)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = name
		} else if name != first {
			t.Fatalf("connection %d went to %s, want %s (affinity)", i, name, first)
		}
	}
}

func TestTCPConcurrent(t *testing.T) {
	const n = 1000
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c"), startBackend(t, "d")}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(bs...)})
	payload := randomBytes(16 << 10)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	names := make(chan string, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			name, err := exchange(addr, payload, false)
			if err != nil {
				errs <- err
			}
			names <- name
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	close(names)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("exchange: %v", err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent connections failed", failed, n)
	}
	counts := map[string]int{}
	for name := range names {
		counts[name]++
	}
	settle(t, "connections still active", func() (bool, string) {
		s := statsOf(t, p, "web")
		return s.Active == 0, fmt.Sprintf("%+v", s)
	})
	s := statsOf(t, p, "web")
	if s.Accepted != n || s.BytesIn != n*uint64(len(payload)) {
		t.Errorf("Stats() = %+v, want %d accepted, %d bytes in", s, n, n*len(payload))
	}
	// Round robin gives each backend a quarter, give or take the dials
	// that timed out under load (250 ms first) and moved on.
	for _, b := range bs {
		if got := counts[b.name]; got < n/4-int(s.FailedDials) || got > n/4+int(s.FailedDials) {
			t.Errorf("backend %s served %d connections, want %d ± %d failed dials (%v)", b.name, got, n/4, s.FailedDials, counts)
		}
	}
	if s.FailedDials > 0 {
		t.Logf("%d dials timed out and went to the next backend", s.FailedDials)
	}
}

func TestUDPFlood(t *testing.T) {
	const clients, perClient = 4, 500
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a", withUDP), startBackend(t, "b", withUDP)}
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "dns", Protocol: ProtocolUDP, Backends: addrsOf(bs...), UDPIdleTimeout: 5 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	seen := make([]string, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := net.Dial("udp", addr.String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			buf := make([]byte, 2048)
			for j := range perClient {
				msg := fmt.Sprintf("client %d query %d", i, j)
				if _, err := c.Write([]byte(msg)); err != nil {
					errs <- err
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("client %d query %d: %w", i, j, err)
					return
				}
				name, body, _ := strings.Cut(string(buf[:n]), ":")
				if body != msg {
					errs <- fmt.Errorf("client %d: reply %q to %q", i, buf[:n], msg)
					return
				}
				// One session per client: every reply from one backend.
				if seen[i] == "" {
					seen[i] = name
				} else if name != seen[i] {
					errs <- fmt.Errorf("client %d: reply from %s, earlier from %s", i, name, seen[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := statsOf(t, p, "dns")
	if s.Accepted != clients || s.Active != clients {
		t.Errorf("Stats() = %+v, want %d sessions accepted and active", s, clients)
	}
	for _, b := range bs {
		if h := b.hits.Load(); h != clients/2*perClient {
			t.Errorf("backend %s answered %d datagrams, want %d (two sessions each)", b.name, h, clients/2*perClient)
		}
	}
}

func TestUDPIdleTimeout(t *testing.T) {
	checkNoLeaks(t)
	bs := []*backend{startBackend(t, "a", withUDP), startBackend(t, "b", withUDP)}
	for _, tc := range []struct {
		name     string
		affinity time.Duration
	}{{"round robin", 0}, {"affinity", time.Hour}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProxy(t)
			addr := applyOne(t, p, Listener{Name: "dns", Protocol: ProtocolUDP, Backends: addrsOf(bs...),
				UDPIdleTimeout: 100 * time.Millisecond, AffinityTimeout: tc.affinity})
			c, err := net.Dial("udp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ask := func() string {
				t.Helper()
				if _, err := c.Write([]byte("q")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				name, _, _ := strings.Cut(string(buf[:n]), ":")
				return name
			}
			first := ask()
			// Within the idle timeout: same session.
			for range 5 {
				time.Sleep(30 * time.Millisecond)
				if got := ask(); got != first {
					t.Fatalf("reply within the session from %s, want %s", got, first)
				}
			}
			settle(t, "session not ended", func() (bool, string) {
				s := statsOf(t, p, "dns")
				return s.Active == 0, fmt.Sprintf("%+v", s)
			})
			second := ask()
			if s := statsOf(t, p, "dns"); s.Accepted != 2 {
				t.Errorf("Stats() = %+v, want 2 sessions", s)
			}
			if (second == first) != (tc.affinity > 0) {
				t.Errorf("new session went to %s, the first to %s; affinity %v", second, first, tc.affinity)
			}
		})
	}
}

func TestUDPNoBackends(t *testing.T) {
	checkNoLeaks(t)
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "dns", Protocol: ProtocolUDP})
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("q"))
	settle(t, "datagram not refused", func() (bool, string) {
		s := statsOf(t, p, "dns")
		return s.Refused == 1, fmt.Sprintf("%+v", s)
	})
}

func TestApplyPortInUse(t *testing.T) {
	checkNoLeaks(t)
	taken, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := taken.Addr().(*net.TCPAddr).AddrPort()
	b := startBackend(t, "a")
	p := newTestProxy(t)
	plan := &Plan{Listeners: []Listener{
		{Name: "ns/busy:http", Addr: port, Backends: addrsOf(b)},
		{Name: "ns/free:http", Addr: ap("127.0.0.1:0"), Backends: addrsOf(b)},
	}}
	err = p.Apply(context.Background(), plan)
	var e *Error
	if !errors.As(err, &e) || e.Listener != "ns/busy:http" || e.Addr != port || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Apply() = %v, want an *Error for ns/busy:http on %s wrapping EADDRINUSE", err, port)
	}
	if msg := err.Error(); !strings.Contains(msg, "ns/busy:http") || !strings.Contains(msg, port.String()) {
		t.Errorf("Apply() error %q, want it to name the listener and %s", msg, port)
	}
	stats := p.Stats()
	if len(stats) != 1 || stats[0].Name != "ns/free:http" {
		t.Fatalf("Stats() = %+v, want only ns/free:http open", stats)
	}
	if _, err := exchange(stats[0].Addr, []byte("x"), false); err != nil {
		t.Errorf("the other listener does not serve: %v", err)
	}
	// Once the port is free, the next Apply opens the listener.
	taken.Close()
	if err := p.Apply(context.Background(), plan); err != nil {
		t.Fatalf("Apply() once the port is free = %v", err)
	}
	if _, err := exchange(port, []byte("x"), false); err != nil {
		t.Errorf("the listener on the freed port does not serve: %v", err)
	}
}

func TestApplyInvalidPlan(t *testing.T) {
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "keep"})
	bad := &Plan{Listeners: []Listener{{Name: "bad", Protocol: "SCTP", Addr: ap("127.0.0.1:0")}}}
	if err := p.Apply(context.Background(), bad); !errors.Is(err, ErrInvalidPlan) {
		t.Fatalf("Apply(invalid) = %v, want ErrInvalidPlan", err)
	}
	if got := listenAddr(t, p, "keep"); got != addr {
		t.Errorf("after a refused plan the listener is at %s, want %s still", got, addr)
	}
}

// TestApplyRemovesListener checks that a removed listener stops accepting
// while its open connection finishes.
func TestApplyRemovesListener(t *testing.T) {
	checkNoLeaks(t)
	b := startBackend(t, "a")
	p := newTestProxy(t)
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(b)})
	c, r := openHeld(t, addr)
	if err := p.Apply(context.Background(), &Plan{}); err != nil {
		t.Fatal(err)
	}
	if len(p.Stats()) != 0 {
		t.Errorf("Stats() = %+v after removing every listener", p.Stats())
	}
	if c2, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c2.Close()
		t.Errorf("dial to the removed listener succeeded")
	}
	finishHeld(t, c, r)
}

// openHeld opens a connection through addr and reads the greeting.
func openHeld(t *testing.T, addr netip.AddrPort) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return c, r
}

// finishHeld sends a message on a held echo connection, half-closes and
// checks the echo.
func finishHeld(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(r); err != nil || string(b) != "bye" {
		t.Errorf("held connection read %q, %v; want the echo", b, err)
	}
}

func TestCloseWaitsForConnections(t *testing.T) {
	checkNoLeaks(t)
	b := startBackend(t, "a")
	p := NewProxy()
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(b)})
	c, r := openHeld(t, addr)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- p.Close(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a connection was open", err)
	default:
	}
	if err := p.Apply(context.Background(), &Plan{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
	finishHeld(t, c, r)
	c.Close()
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v once the connection finished, want nil", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func TestCloseDeadline(t *testing.T) {
	checkNoLeaks(t)
	b := startBackend(t, "a")
	p := NewProxy()
	addr := applyOne(t, p, Listener{Name: "web", Backends: addrsOf(b)})
	c, r := openHeld(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cut 1 connections") {
		t.Errorf("Close() = %v, want the deadline error, cutting 1 connection", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("Close took %s, want about the 200ms deadline", d)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Errorf("held connection still open after Close's deadline")
	}
	c.Close()
}
