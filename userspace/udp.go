package userspace

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// udpSocket is a UDP listener's socket and its sessions, one per client
// address, each with a socket of its own connected to the client's
// backend.
type udpSocket struct {
	conn *net.UDPConn

	mu       sync.Mutex
	closed   bool
	sessions map[netip.AddrPort]*session
}

// session is one client's traffic through a UDP listener.
type session struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the backend
	// last is when a datagram last went either way, in Unix nanoseconds.
	last atomic.Int64
}

func newUDPSocket(c *net.UDPConn) *udpSocket {
	return &udpSocket{conn: c, sessions: map[netip.AddrPort]*session{}}
}

func (s *session) touch(now time.Time) { s.last.Store(now.UnixNano()) }

func (s *session) lastActive() time.Time { return time.Unix(0, s.last.Load()) }

// close closes the socket and every session's.
func (u *udpSocket) close() {
	_ = u.conn.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for _, s := range u.sessions {
		_ = s.conn.Close()
	}
}

// serveUDP reads datagrams from clients until the listener is closed and
// forwards each through its client's session.
func (l *listener) serveUDP() {
	defer l.p.wg.Done()
	buf := make([]byte, maxDatagram)
	var delay time.Duration
	for {
		n, client, err := l.udp.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
			l.p.log.Warn("userspace proxy: udp read", "listener", l.spec.Load().Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		l.forwardUDP(unmapAddrPort(client), buf[:n])
	}
}

// forwardUDP sends a client's datagram to its backend, starting a session
// if the client has none (or its session just ended).
func (l *listener) forwardUDP(client netip.AddrPort, b []byte) {
	for range 2 {
		s := l.session(client)
		if s == nil {
			return
		}
		if _, err := s.conn.Write(b); err != nil {
			if errors.Is(err, net.ErrClosed) {
				continue
			}
			l.p.log.Debug("userspace proxy: udp write to backend", "listener", l.spec.Load().Name, "client", client, "err", err)
			return
		}
		l.stats.bytesIn.Add(uint64(len(b)))
		return
	}
}

// session returns the client's live session, marked active now, or
// starts one with a backend the balancer picks; nil if that fails.
func (l *listener) session(client netip.AddrPort) *session {
	u := l.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	now := time.Now()
	if s := u.sessions[client]; s != nil {
		s.touch(now)
		return s
	}
	attempts := max(1, len(l.p.dialTimeouts))
	for i := range attempts {
		be, ok := l.lb.pick(client.Addr(), now, i > 0)
		if !ok {
			l.stats.refused.Add(1)
			return nil
		}
		c, err := l.p.dialUDP(be)
		if err != nil {
			l.stats.failedDials.Add(1)
			l.p.log.Debug("userspace proxy: udp dial", "listener", l.spec.Load().Name, "backend", be, "err", err)
			continue
		}
		s := &session{client: client, conn: c}
		s.touch(now)
		u.sessions[client] = s
		l.stats.accepted.Add(1)
		l.stats.active.Add(1)
		l.p.wg.Add(1)
		go l.serveSession(s)
		return s
	}
	return nil
}

// dialUDP returns a UDP socket connected to be, in the proxy's namespace.
func (p *Proxy) dialUDP(be netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := p.inNetNS(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(be))
		return err
	})
	return c, err
}

// serveSession relays the backend's replies to the client until the
// session has been idle for the listener's UDP idle timeout, or its socket
// fails (the backend refused) or is closed.
func (l *listener) serveSession(s *session) {
	defer l.p.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		idle := l.spec.Load().UDPIdleTimeoutOrDefault()
		_ = s.conn.SetReadDeadline(s.lastActive().Add(idle))
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && l.keepSession(s, idle) {
				continue
			}
			break
		}
		s.touch(time.Now())
		if _, err := l.udp.conn.WriteToUDPAddrPort(buf[:n], s.client); err != nil {
			l.p.log.Debug("userspace proxy: udp write to client", "listener", l.spec.Load().Name, "client", s.client, "err", err)
			if errors.Is(err, net.ErrClosed) {
				break
			}
			continue
		}
		l.stats.bytesOut.Add(uint64(n))
	}
	l.endSession(s)
}

// keepSession reports whether a session whose read deadline passed saw a
// client datagram meanwhile; if not, it removes the session, so that the
// client's next datagram starts a new one.
func (l *listener) keepSession(s *session, idle time.Duration) bool {
	u := l.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.closed && time.Since(s.lastActive()) < idle {
		return true
	}
	if u.sessions[s.client] == s {
		delete(u.sessions, s.client)
	}
	return false
}

// endSession removes s if still present and closes its socket.
func (l *listener) endSession(s *session) {
	u := l.udp
	u.mu.Lock()
	if u.sessions[s.client] == s {
		delete(u.sessions, s.client)
	}
	u.mu.Unlock()
	_ = s.conn.Close()
	l.stats.active.Add(-1)
}
