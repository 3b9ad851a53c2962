package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is the userspace proxy: it keeps one socket open per listener of
// the last applied [Plan] and forwards what arrives on it to the
// listener's backends. Create it with [NewProxy]; its methods are safe
// for concurrent use.
type Proxy struct {
	log          *slog.Logger
	dialTimeouts []time.Duration
	netnsPath    string

	// ctx is cancelled when Close stops waiting: it ends dials in flight.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	ns        *nsHandle // nil unless WithNetNS, opened by the first Apply
	listeners map[ID]*listener

	// wg counts every goroutine the proxy starts.
	wg sync.WaitGroup

	connMu sync.Mutex
	conns  map[*net.TCPConn]bool // both ends of every TCP connection; true for the client's
	cut    bool                  // Close has closed conns; close new ones at once
}

// Option configures a [Proxy].
type Option func(*config)

type config struct {
	logger       *slog.Logger
	dialTimeouts []time.Duration
	netnsPath    string
}

// WithLogger sets the logger; the default discards. Connection-level
// events log at Debug, trouble with a listener at Warn.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithDialTimeouts sets the timeouts of the successive attempts to reach
// a backend for one new TCP connection; each attempt goes to the next
// backend in turn (leaving the client's affinity). The default is old
// kube-proxy's 250 ms, 500 ms, 1 s, 2 s. No timeouts restores the default.
func WithDialTimeouts(ts ...time.Duration) Option {
	ts = slices.Clone(ts)
	return func(c *config) { c.dialTimeouts = ts }
}

// WithNetNS makes the proxy open its listeners and dial its backends in
// the network namespace at path (such as /run/netns/NAME or
// /proc/PID/ns/net), whatever namespace its caller runs in. It needs
// Linux; elsewhere Apply fails.
func WithNetNS(path string) Option { return func(c *config) { c.netnsPath = path } }

// NewProxy returns a proxy without listeners; [Proxy.Apply] opens them.
func NewProxy(opts ...Option) *Proxy {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if len(c.dialTimeouts) == 0 {
		c.dialTimeouts = defaultDialTimeouts[:]
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		log:          c.logger,
		dialTimeouts: c.dialTimeouts,
		netnsPath:    c.netnsPath,
		ctx:          ctx,
		cancel:       cancel,
		listeners:    map[ID]*listener{},
		conns:        map[*net.TCPConn]bool{},
	}
}

// ErrClosed is returned by [Proxy.Apply] after [Proxy.Close].
var ErrClosed = errors.New("userspace proxy closed")

// Error is a listener that could not be opened.
type Error struct {
	// Op is the operation, "listen".
	Op string
	// Listener, Protocol and Addr are the listener's name, protocol and
	// address.
	Listener string
	Protocol Protocol
	Addr     netip.AddrPort
	// Err is the cause, such as a *net.OpError wrapping EADDRINUSE.
	Err error
}

// Error returns "userspace listener NAME (PROTO ADDR): OP: CAUSE".
func (e *Error) Error() string {
	cause := e.Err
	var oe *net.OpError
	if errors.As(cause, &oe) && oe.Err != nil {
		cause = oe.Err
	}
	return fmt.Sprintf("userspace listener %s (%s %s): %s: %v", e.Listener, lowerProto(e.Protocol), e.Addr, e.Op, cause)
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// Apply makes the proxy's listeners those of plan. Listeners whose
// [Listener.ID] is in plan stay open and take plan's name, backends and
// timeouts at once, without disturbing their connections; a removed
// backend gets no new connections while its open ones finish. Listeners
// not in plan are closed: they accept no more connections and their UDP
// sessions end, but their open TCP connections finish. New listeners are
// opened. A listener that cannot be opened (its port in use, say) does
// not stop the others: Apply returns every such failure joined, each an
// [*Error] naming the listener and its address, and the next Apply tries
// it again. ctx bounds opening the listeners.
//
// Apply refuses an invalid plan (see [Plan.Validate]) without changing
// anything, and returns [ErrClosed] after Close.
func (p *Proxy) Apply(ctx context.Context, plan *Plan) error {
	if plan == nil {
		plan = &Plan{}
	}
	if err := plan.Validate(); err != nil {
		return fmt.Errorf("applying userspace plan: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.netnsPath != "" && p.ns == nil {
		ns, err := openNetNS(p.netnsPath)
		if err != nil {
			return fmt.Errorf("applying userspace plan: %w", err)
		}
		p.ns = ns
	}
	want := make(map[ID]bool, len(plan.Listeners))
	for i := range plan.Listeners {
		want[plan.Listeners[i].ID()] = true
	}
	// Close first, so that an address a new listener takes is free.
	for id, l := range p.listeners {
		if !want[id] {
			l.stop()
			delete(p.listeners, id)
		}
	}
	var errs []error
	for i := range plan.Listeners {
		spec := plan.Listeners[i].clone()
		id := spec.ID()
		if l, ok := p.listeners[id]; ok {
			l.set(&spec)
			continue
		}
		l, err := p.open(ctx, &spec)
		if err != nil {
			p.log.Warn("userspace proxy: cannot open listener", "listener", spec.Name, "addr", spec.Addr, "err", err)
			errs = append(errs, err)
			continue
		}
		p.listeners[id] = l
	}
	return errors.Join(errs...)
}

// Close closes every listener and ends every UDP session at once, then
// waits for open TCP connections to finish until ctx is done, when it
// closes those left and returns an error wrapping ctx's. Close returns
// only when every goroutine and socket of the proxy is gone. A second
// Close returns nil.
func (p *Proxy) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for id, l := range p.listeners {
		l.stop()
		delete(p.listeners, id)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		n := p.cutConns()
		<-done
		err = fmt.Errorf("closing userspace proxy: cut %d connections at the deadline: %w", n, context.Cause(ctx))
	}
	p.cancel()
	if p.ns != nil {
		if cerr := p.ns.close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing userspace proxy: %w", cerr)
		}
	}
	return err
}

// cutConns cancels dials in flight and closes every TCP connection; it
// returns how many client connections it closed.
func (p *Proxy) cutConns() int {
	p.cancel()
	p.connMu.Lock()
	defer p.connMu.Unlock()
	p.cut = true
	n := 0
	for c, client := range p.conns {
		if client {
			n++
		}
		_ = c.Close()
	}
	return n
}

// track registers c (a client's connection, or one to a backend) so that
// Close can cut it; it reports false, and c must be closed, when Close
// already has.
func (p *Proxy) track(c *net.TCPConn, client bool) bool {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = client
	return true
}

func (p *Proxy) untrack(c *net.TCPConn) {
	p.connMu.Lock()
	delete(p.conns, c)
	p.connMu.Unlock()
}

// inNetNS runs fn in the proxy's network namespace.
func (p *Proxy) inNetNS(fn func() error) error {
	if p.ns == nil {
		return fn()
	}
	return p.ns.do(fn)
}

// listener is one open proxy socket.
type listener struct {
	p     *Proxy
	proto Protocol
	addr  netip.AddrPort // as bound
	spec  atomic.Pointer[Listener]
	lb    balancer
	stats counters

	tcp *net.TCPListener
	udp *udpSocket
}

// open opens a listener for spec and starts serving it.
func (p *Proxy) open(ctx context.Context, spec *Listener) (*listener, error) {
	l := &listener{p: p, proto: spec.ProtocolOrDefault()}
	l.set(spec)
	var lc net.ListenConfig
	err := p.inNetNS(func() error {
		if l.proto == ProtocolUDP {
			pc, err := lc.ListenPacket(ctx, spec.network(), spec.Addr.String())
			if err != nil {
				return err
			}
			l.udp = newUDPSocket(pc.(*net.UDPConn))
			l.addr = unmapAddrPort(l.udp.conn.LocalAddr().(*net.UDPAddr).AddrPort())
			return nil
		}
		ln, err := lc.Listen(ctx, spec.network(), spec.Addr.String())
		if err != nil {
			return err
		}
		l.tcp = ln.(*net.TCPListener)
		l.addr = unmapAddrPort(l.tcp.Addr().(*net.TCPAddr).AddrPort())
		return nil
	})
	if err != nil {
		return nil, &Error{Op: "listen", Listener: spec.Name, Protocol: l.proto, Addr: spec.Addr, Err: err}
	}
	p.log.Debug("userspace proxy: listening", "listener", spec.Name, "protocol", l.proto, "addr", l.addr)
	p.wg.Add(1)
	if l.udp != nil {
		go l.serveUDP()
	} else {
		go l.serveTCP()
	}
	return l, nil
}

// set takes spec's name, backends and timeouts.
func (l *listener) set(spec *Listener) {
	l.spec.Store(spec)
	l.lb.update(spec.Backends, spec.AffinityTimeout)
}

// stop closes the socket; the serving goroutine then ends, and for UDP
// every session.
func (l *listener) stop() {
	l.p.log.Debug("userspace proxy: closing listener", "listener", l.spec.Load().Name, "addr", l.addr)
	if l.udp != nil {
		l.udp.close()
		return
	}
	_ = l.tcp.Close()
}

func lowerProto(p Protocol) string {
	if p == ProtocolUDP {
		return "udp"
	}
	return "tcp"
}
