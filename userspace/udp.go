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
// address and local address the client sent to, each with a socket of its
// own connected to the client's backend.
type udpSocket struct {
	conn *net.UDPConn
	// oob receives each datagram's control messages; nil when the socket
	// does not report the local address datagrams were sent to.
	oob []byte
	// destErr is why the socket could not be made to report it.
	destErr error

	mu       sync.Mutex
	closed   bool
	sessions map[sessionKey]*session
}

// dest is the local address a client's datagram was sent to, after the
// portal rules' REDIRECT: the interface's primary address, or a loopback
// address for the node's own traffic. ifindex is the interface it arrived
// on, kept only for a link-local address, which needs it to be used as a
// source. The zero dest means unknown: replies leave from the address the
// kernel picks.
type dest struct {
	addr    netip.Addr
	ifindex uint32
}

// newDest returns the dest of a datagram that reached local address a
// through interface ifindex, or the zero dest if a cannot be a reply's
// source.
func newDest(a netip.Addr, ifindex uint32) dest {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() {
		return dest{}
	}
	if !a.IsLinkLocalUnicast() {
		ifindex = 0
	}
	return dest{addr: a, ifindex: ifindex}
}

// sessionKey identifies a session. The client's address alone is not
// enough: a client that sends from one port to two addresses of a
// listener (the service's cluster IP and its NodePort, say) has two flows
// in conntrack, and the replies of each must come from the address its
// datagrams went to.
type sessionKey struct {
	client netip.AddrPort
	dst    dest
}

// session is one client's traffic through a UDP listener to one of its
// local addresses.
type session struct {
	key  sessionKey
	conn *net.UDPConn // connected to the backend
	// oob is the control message that makes replies leave from key.dst;
	// nil when it is unknown.
	oob []byte
	// last is when a datagram last went either way, in Unix nanoseconds.
	last atomic.Int64
}

// newUDPSocket wraps c. When c is bound to the unspecified address, it
// asks the kernel to report each datagram's local destination, so that
// replies can leave from it: conntrack matches a reply to the client's
// flow, and undoes the REDIRECT, only if it does. Without that, a reply
// to a pod over IPv6 leaves from the node's global address rather than
// the link-local one the pod's datagram was redirected to, and is lost.
func newUDPSocket(c *net.UDPConn) *udpSocket {
	u := &udpSocket{conn: c, sessions: map[sessionKey]*session{}}
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if destOOBSize == 0 || !ok || !la.IP.IsUnspecified() {
		return u
	}
	if err := enableDest(c, la.IP.To4() != nil); err != nil {
		u.destErr = err
		return u
	}
	u.oob = make([]byte, destOOBSize)
	return u
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
	if err := l.udp.destErr; err != nil {
		l.p.log.Warn("userspace proxy: udp replies will leave from the address the kernel picks", "listener", l.spec.Load().Name, "err", err)
	}
	buf := make([]byte, maxDatagram)
	var delay time.Duration
	for {
		n, client, dst, err := l.udp.read(buf)
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
		l.forwardUDP(sessionKey{client: unmapAddrPort(client), dst: dst}, buf[:n])
	}
}

// read reads one datagram into buf and returns its length, its sender
// and, if the socket reports it, the local address it was sent to.
func (u *udpSocket) read(buf []byte) (int, netip.AddrPort, dest, error) {
	if u.oob == nil {
		n, client, err := u.conn.ReadFromUDPAddrPort(buf)
		return n, client, dest{}, err
	}
	n, oobn, _, client, err := u.conn.ReadMsgUDPAddrPort(buf, u.oob)
	if err != nil {
		return n, client, dest{}, err
	}
	return n, client, parseDest(u.oob[:oobn]), nil
}

// write sends a reply of s's backend to its client, from the local address
// the client sent to when it is known.
func (u *udpSocket) write(s *session, b []byte) error {
	var err error
	if s.oob == nil {
		_, err = u.conn.WriteToUDPAddrPort(b, s.key.client)
	} else {
		_, _, err = u.conn.WriteMsgUDPAddrPort(b, s.oob, s.key.client)
	}
	return err
}

// forwardUDP sends a client's datagram to its backend, starting a session
// if the client has none for the datagram's destination (or its session
// just ended).
func (l *listener) forwardUDP(key sessionKey, b []byte) {
	for range 2 {
		s := l.session(key)
		if s == nil {
			return
		}
		if _, err := s.conn.Write(b); err != nil {
			if errors.Is(err, net.ErrClosed) {
				continue
			}
			l.p.log.Debug("userspace proxy: udp write to backend", "listener", l.spec.Load().Name, "client", key.client, "err", err)
			return
		}
		l.stats.bytesIn.Add(uint64(len(b)))
		return
	}
}

// session returns the live session of key, marked active now, or starts
// one with a backend the balancer picks for the client; nil if that fails.
func (l *listener) session(key sessionKey) *session {
	u := l.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	now := time.Now()
	if s := u.sessions[key]; s != nil {
		s.touch(now)
		return s
	}
	attempts := max(1, len(l.p.dialTimeouts))
	for i := range attempts {
		be, ok := l.lb.pick(key.client.Addr(), now, i > 0)
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
		s := &session{key: key, conn: c, oob: destOOB(key.dst)}
		s.touch(now)
		u.sessions[key] = s
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
		if err := l.udp.write(s, buf[:n]); err != nil {
			l.p.log.Debug("userspace proxy: udp write to client", "listener", l.spec.Load().Name, "client", s.key.client, "from", s.key.dst.addr, "err", err)
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
	if u.sessions[s.key] == s {
		delete(u.sessions, s.key)
	}
	return false
}

// endSession removes s if still present and closes its socket.
func (l *listener) endSession(s *session) {
	u := l.udp
	u.mu.Lock()
	if u.sessions[s.key] == s {
		delete(u.sessions, s.key)
	}
	u.mu.Unlock()
	_ = s.conn.Close()
	l.stats.active.Add(-1)
}
