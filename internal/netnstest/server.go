package netnstest

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// maxDatagram is the largest UDP payload a server or client reads.
const maxDatagram = 65535

// Server is a backend server started by [NS.Serve]. Over TCP it greets
// each connection with one line, "backend=ADDR:PORT peer=ADDR:PORT\n" (its
// own address and the source it sees, as netip.AddrPort text), then echoes
// everything it reads until the client closes. Over UDP it answers each
// datagram with that line followed by the datagram's payload.
type Server struct {
	network string
	addr    netip.AddrPort
	ln      net.Listener   // tcp
	pc      net.PacketConn // udp
	hits    atomic.Int64
	wg      sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Serve starts a backend server for network, "tcp" or "udp", listening on
// ap inside ns, and stops it in t's Cleanup. A zero port picks a free one
// ([Server.Addr] tells which). A TCP server may listen on the unspecified
// address; a UDP server needs a specific one, because the address it reports
// is the one it is bound to. It fails t if the socket cannot be made.
func (ns *NS) Serve(t testing.TB, network string, ap netip.AddrPort) *Server {
	t.Helper()
	s, err := ns.serve(network, ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// serve makes the listening socket inside ns and starts serving it.
func (ns *NS) serve(network string, ap netip.AddrPort) (*Server, error) {
	s := &Server{network: network, conns: map[net.Conn]struct{}{}}
	var err error
	switch network {
	case "tcp":
		err = ns.Do(func() error {
			ln, lerr := net.Listen("tcp", ap.String())
			s.ln = ln
			return lerr
		})
	case "udp":
		if ap.Addr().IsUnspecified() {
			return nil, fmt.Errorf("serve udp %s in netns %s: needs a specific address", ap, ns.name)
		}
		err = ns.Do(func() error {
			pc, lerr := net.ListenPacket("udp", ap.String())
			s.pc = pc
			return lerr
		})
	default:
		return nil, fmt.Errorf("serve %s %s in netns %s: network must be tcp or udp", network, ap, ns.name)
	}
	if err != nil {
		return nil, fmt.Errorf("serve %s %s in netns %s: %w", network, ap, ns.name, err)
	}
	s.wg.Add(1)
	if s.ln != nil {
		s.addr = addrPortOf(s.ln.Addr())
		go s.acceptLoop()
	} else {
		s.addr = addrPortOf(s.pc.LocalAddr())
		go s.packetLoop()
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Hits returns how many connections (TCP) or datagrams (UDP) the server
// has received.
func (s *Server) Hits() int { return int(s.hits.Load()) }

// Close stops the server, closing its socket and any open connections, and
// waits for its goroutines to end. It may be called more than once, for
// example to make an endpoint vanish in the middle of a test.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	} else {
		s.pc.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// acceptLoop accepts connections until the listener is closed.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.hits.Add(1)
		go s.handle(c)
	}
}

// handle greets one TCP connection and echoes it.
func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	if _, err := io.WriteString(c, greeting(addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr()))); err != nil {
		return
	}
	// The wrappers hide ReadFrom and WriteTo, so that copying a socket onto
	// itself takes the plain read/write path.
	buf := make([]byte, 32<<10)
	io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
}

// packetLoop answers datagrams until the socket is closed.
func (s *Server) packetLoop() {
	defer s.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			// Closed by Close; an unconnected UDP socket reports no ICMP
			// errors, so nothing else is expected.
			return
		}
		s.hits.Add(1)
		reply := append([]byte(greeting(s.addr, addrPortOf(from))), buf[:n]...)
		s.pc.WriteTo(reply, from)
	}
}

// greeting is the line a server sends first.
func greeting(backend, peer netip.AddrPort) string {
	return fmt.Sprintf("backend=%s peer=%s\n", backend, peer)
}

// addrPortOf converts a TCP or UDP socket address, unmapping IPv4-mapped
// addresses.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
