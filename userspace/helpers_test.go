package userspace

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is an in-process TCP and UDP server on 127.0.0.1. A TCP
// connection first gets the backend's name and a newline, then, in echo
// mode, an echo of everything sent until EOF, or, in digest mode, the
// SHA-256 of everything sent, once the client half-closes. A UDP datagram
// gets "name:" followed by its payload.
type backend struct {
	name   string
	addr   netip.AddrPort
	digest bool
	udp    bool
	hits   atomic.Int64

	ln *net.TCPListener
	pc *net.UDPConn
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

type backendOpt func(*backend)

func digestMode(b *backend) { b.digest = true }

// withUDP makes the backend serve UDP on the same port too.
func withUDP(b *backend) { b.udp = true }

// startBackend starts a backend and closes it in t's Cleanup.
func startBackend(t testing.TB, name string, opts ...backendOpt) *backend {
	t.Helper()
	b := &backend{name: name, conns: map[net.Conn]struct{}{}}
	for _, o := range opts {
		o(b)
	}
	for range 20 {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		b.ln = ln
		b.addr = ln.Addr().(*net.TCPAddr).AddrPort()
		if !b.udp {
			break
		}
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(b.addr))
		if err != nil {
			ln.Close()
			continue
		}
		b.pc = pc
		break
	}
	if b.udp && b.pc == nil {
		t.Fatal("no port free for both TCP and UDP")
	}
	b.wg.Add(1)
	go b.acceptLoop()
	if b.udp {
		b.wg.Add(1)
		go b.udpLoop()
	}
	t.Cleanup(b.close)
	return b
}

func (b *backend) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.AcceptTCP()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.conns == nil {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.hits.Add(1)
		b.wg.Add(1)
		go b.handle(c)
	}
}

func (b *backend) handle(c *net.TCPConn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	if _, err := io.WriteString(c, b.name+"\n"); err != nil {
		return
	}
	if b.digest {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		_, _ = c.Write(h.Sum(nil))
		return
	}
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}
}

func (b *backend) udpLoop() {
	defer b.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := b.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b.hits.Add(1)
		reply := append([]byte(b.name+":"), buf[:n]...)
		_, _ = b.pc.WriteToUDPAddrPort(reply, from)
	}
}

// close stops the backend and closes its connections.
func (b *backend) close() {
	b.ln.Close()
	if b.pc != nil {
		b.pc.Close()
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}

// addrsOf returns the backends' addresses.
func addrsOf(bs ...*backend) []netip.AddrPort {
	out := make([]netip.AddrPort, len(bs))
	for i, b := range bs {
		out[i] = b.addr
	}
	return out
}

// newTestProxy returns a proxy closed in t's Cleanup.
func newTestProxy(t testing.TB, opts ...Option) *Proxy {
	t.Helper()
	p := NewProxy(opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// applyOne applies a plan of one listener on 127.0.0.1 with a
// kernel-chosen port and returns the address it listens on.
func applyOne(t testing.TB, p *Proxy, l Listener) netip.AddrPort {
	t.Helper()
	if !l.Addr.IsValid() {
		l.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	}
	if err := p.Apply(context.Background(), &Plan{Listeners: []Listener{l}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return listenAddr(t, p, l.Name)
}

// listenAddr returns the address of the open listener named name.
func listenAddr(t testing.TB, p *Proxy, name string) netip.AddrPort {
	t.Helper()
	for _, s := range p.Stats() {
		if s.Name == name {
			return s.Addr
		}
	}
	t.Fatalf("no listener %q in Stats", name)
	return netip.AddrPort{}
}

// statsOf returns the stats of the listener named name.
func statsOf(t testing.TB, p *Proxy, name string) ListenerStats {
	t.Helper()
	for _, s := range p.Stats() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no listener %q in Stats", name)
	return ListenerStats{}
}

// exchange connects to addr, reads the backend's name, sends payload,
// half-closes and reads the answer to EOF. In echo mode the answer must
// be the payload; it returns the backend's name.
func exchange(addr netip.AddrPort, payload []byte, digest bool) (string, error) {
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the backend's name: %w", err)
	}
	name = strings.TrimSuffix(name, "\n")
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		return name, fmt.Errorf("reading the answer: %w", err)
	}
	if err := <-werr; err != nil {
		return name, fmt.Errorf("writing: %w", err)
	}
	want := payload
	if digest {
		sum := sha256.Sum256(payload)
		want = sum[:]
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		return name, fmt.Errorf("answer of %d bytes does not match what was expected (%d bytes)", len(got), len(want))
	}
	return name, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// openFDs returns the number of open file descriptors of the process.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// settle waits until cond holds, collecting garbage meanwhile (Go keeps
// splice pipes in a pool that the collector empties), or fails after a
// while with what describes the last state.
func settle(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, state)
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoLeaks records the goroutines and file descriptors now and, in
// t's Cleanup (after the proxy's Close, registered later), checks that
// both come back to those numbers.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	t.Cleanup(func() {
		settle(t, "goroutines leaked", func() (bool, string) {
			g := runtime.NumGoroutine()
			return g <= g0, fmt.Sprintf("%d goroutines, %d before", g, g0)
		})
		settle(t, "file descriptors leaked", func() (bool, string) {
			fd := openFDs(t)
			return fd <= fd0, fmt.Sprintf("%d open, %d before", fd, fd0)
		})
	})
}

// isReset reports whether err is a connection reset or an EOF, what a
// client of a listener without backends sees.
func isReset(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset")
}
