package userspace

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"time"
)

// maxAcceptDelay bounds the pause after a failing accept or UDP read (out
// of file descriptors, say) before the next try.
const maxAcceptDelay = time.Second

// serveTCP accepts connections until the listener is closed.
func (l *listener) serveTCP() {
	defer l.p.wg.Done()
	var delay time.Duration
	for {
		c, err := l.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
			l.p.log.Warn("userspace proxy: accept", "listener", l.spec.Load().Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		l.stats.accepted.Add(1)
		l.stats.active.Add(1)
		l.p.wg.Add(1)
		go l.handleTCP(c)
	}
}

// handleTCP proxies one accepted connection: it finds a backend that
// answers, then copies both ways until both are done.
func (l *listener) handleTCP(in *net.TCPConn) {
	defer l.p.wg.Done()
	defer l.stats.active.Add(-1)
	if !l.p.track(in, true) {
		_ = in.Close()
		return
	}
	defer l.p.untrack(in)
	client := unmapAddrPort(in.RemoteAddr().(*net.TCPAddr).AddrPort())
	out := l.dialBackend(client.Addr())
	if out == nil {
		// Reset rather than close gracefully: the client sees a refusal.
		_ = in.SetLinger(0)
		_ = in.Close()
		return
	}
	if !l.p.track(out, false) {
		_ = out.Close()
		_ = in.Close()
		return
	}
	defer l.p.untrack(out)
	l.pipe(in, out)
}

// dialBackend connects to a backend for a client, trying the next backend
// after each failed attempt, with the proxy's dial timeouts. It returns nil
// when there is no backend or no attempt succeeded.
func (l *listener) dialBackend(client netip.Addr) *net.TCPConn {
	for i, timeout := range l.p.dialTimeouts {
		be, ok := l.lb.pick(client, time.Now(), i > 0)
		if !ok {
			l.stats.refused.Add(1)
			return nil
		}
		c, err := l.p.dialTCP(be, timeout)
		if err == nil {
			return c
		}
		l.stats.failedDials.Add(1)
		l.p.log.Debug("userspace proxy: dial", "listener", l.spec.Load().Name, "backend", be, "err", err)
		if l.p.ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// dialTCP connects to be within timeout, in the proxy's namespace.
func (p *Proxy) dialTCP(be netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	if p.ns != nil && be.Addr().Zone() == "" {
		return p.ns.dialTCP(p.ctx, be, timeout)
	}
	d := net.Dialer{Timeout: timeout}
	var c net.Conn
	err := p.inNetNS(func() error {
		var err error
		c, err = d.DialContext(p.ctx, "tcp", be.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// pipe copies in to out and out to in until both directions end, then
// closes both. Both ends are *net.TCPConn and io.Copy is given them
// unwrapped, so that (*net.TCPConn).ReadFrom moves the bytes with
// splice(2) on Linux, without copying them through user space. When one
// direction reaches EOF, the half-close is passed on (CloseWrite) and the
// other direction goes on; when one fails, both connections are closed.
func (l *listener) pipe(in, out *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := io.Copy(out, in)
		l.stats.bytesIn.Add(uint64(n))
		endHalf(out, in, err)
	}()
	n, err := io.Copy(in, out)
	l.stats.bytesOut.Add(uint64(n))
	endHalf(in, out, err)
	<-done
	_ = in.Close()
	_ = out.Close()
}

// endHalf ends the direction src to dst: after EOF it half-closes dst;
// after an error it closes both, which ends the other direction too.
func endHalf(dst, src *net.TCPConn, err error) {
	if err == nil {
		if dst.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}
