package netnstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout bounds a [NS.Dial] without a [Timeout] option. It leaves
// room for one TCP SYN retransmission (after 1 s). A test that expects
// packets to be dropped should pass a shorter Timeout, such as one second.
const DefaultTimeout = 3 * time.Second

// Reply is what one [NS.Dial] learnt. Err is nil when the backend answered
// with a well-formed greeting (and, with [Payload], the echo arrived).
type Reply struct {
	// Backend is the backend's own address as it reported it: the pod
	// address and port the traffic was finally delivered to.
	Backend netip.AddrPort
	// Peer is the source address and port the backend saw, which tells
	// whether the traffic was masqueraded.
	Peer netip.AddrPort
	// Local is the dialing socket's own address and port.
	Local netip.AddrPort
	// Echo is what came back of the [Payload]; nil without one.
	Echo []byte
	// Err says why the exchange failed; nil means it did not.
	Err error
}

// OK reports whether the exchange succeeded.
func (r Reply) OK() bool { return r.Err == nil }

// Refused reports whether the destination refused: a TCP reset, or an ICMP
// port unreachable (REJECT's default), which the socket reports as
// ECONNREFUSED.
func (r Reply) Refused() bool { return errors.Is(r.Err, syscall.ECONNREFUSED) }

// Unreachable reports whether an ICMP host, network or administratively
// prohibited unreachable came back (EHOSTUNREACH or ENETUNREACH).
func (r Reply) Unreachable() bool {
	return errors.Is(r.Err, syscall.EHOSTUNREACH) || errors.Is(r.Err, syscall.ENETUNREACH)
}

// TimedOut reports whether nothing came back before the deadline, as when
// packets are dropped.
func (r Reply) TimedOut() bool {
	if r.Err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(r.Err, os.ErrDeadlineExceeded) || errors.Is(r.Err, context.DeadlineExceeded) ||
		(errors.As(r.Err, &ne) && ne.Timeout())
}

// String describes r in one line, for test messages.
func (r Reply) String() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	return fmt.Sprintf("backend=%s peer=%s local=%s", r.Backend, r.Peer, r.Local)
}

// DialOption changes one [NS.Dial].
type DialOption func(*dialConfig)

// dialConfig is what Dial does.
type dialConfig struct {
	src     netip.Addr
	srcPort uint16
	timeout time.Duration
	payload []byte
}

// From binds the dialing socket to source address a, which must be an
// address of the dialing namespace (see [Topology.AddClientAddr]).
func From(a netip.Addr) DialOption { return func(c *dialConfig) { c.src = a } }

// FromPort binds the dialing socket to source port p, with SO_REUSEADDR,
// so that successive dials belong to one conntrack flow (UDP) or reuse a
// port (TCP).
func FromPort(p uint16) DialOption { return func(c *dialConfig) { c.srcPort = p } }

// Timeout bounds the whole exchange, connect and replies, by d instead of
// [DefaultTimeout].
func Timeout(d time.Duration) DialOption { return func(c *dialConfig) { c.timeout = d } }

// Payload sends b after the greeting (TCP) or as the datagram (UDP) and
// puts what the backend echoes in [Reply.Echo], for data integrity checks.
// Over TCP b may be of any size; over UDP it must fit in one datagram.
func Payload(b []byte) DialOption { return func(c *dialConfig) { c.payload = b } }

// Dial sends traffic from ns to dst over network ("tcp" or "udp") and
// reports what came back. Over TCP it connects, reads the backend's
// greeting and, with [Payload], sends the payload and reads its echo. Over
// UDP it sends one datagram from a connected socket, so that an ICMP port
// unreachable shows as [Reply.Refused], and reads one answer. Dial never
// fails the test itself; the caller checks the Reply.
func (ns *NS) Dial(ctx context.Context, network string, dst netip.AddrPort, opts ...DialOption) Reply {
	cfg := dialConfig{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	conn, err := ns.connect(ctx, network, dst, cfg)
	if err != nil {
		return Reply{Err: err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	r := Reply{Local: addrPortOf(conn.LocalAddr())}
	if network == "udp" {
		err = r.exchangeUDP(conn, cfg.payload)
	} else {
		err = r.exchangeTCP(conn, cfg.payload)
	}
	if err != nil {
		r.Err = fmt.Errorf("%s %s from %s in netns %s: %w", network, dst, r.Local, ns.name, err)
	}
	return r
}

// connect makes the dialing socket inside ns and connects it to dst.
func (ns *NS) connect(ctx context.Context, network string, dst netip.AddrPort, cfg dialConfig) (net.Conn, error) {
	if network != "tcp" && network != "udp" {
		return nil, fmt.Errorf("dial %s %s: network must be tcp or udp", network, dst)
	}
	d := net.Dialer{}
	if cfg.src.IsValid() || cfg.srcPort != 0 {
		src := cfg.src
		if !src.IsValid() {
			src = netip.IPv4Unspecified()
			if FamilyOf(dst.Addr()) == IPv6 {
				src = netip.IPv6Unspecified()
			}
		}
		local := netip.AddrPortFrom(src, cfg.srcPort)
		if network == "tcp" {
			d.LocalAddr = net.TCPAddrFromAddrPort(local)
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(local)
		}
		if cfg.srcPort != 0 {
			d.Control = reuseAddr
		}
	}
	var conn net.Conn
	err := ns.Do(func() error {
		c, err := d.DialContext(ctx, network, dst.String())
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from netns %s: %w", network, dst, ns.name, err)
	}
	return conn, nil
}

// exchangeTCP reads the greeting and, with a payload, its echo.
func (r *Reply) exchangeTCP(conn net.Conn, payload []byte) error {
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if err := r.parseGreeting(line); err != nil {
		return err
	}
	if payload == nil {
		return nil
	}
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		werr <- err
	}()
	echo := make([]byte, len(payload))
	n, rerr := io.ReadFull(br, echo)
	r.Echo = echo[:n]
	if rerr != nil {
		conn.Close() // unblock the writer
	}
	if err := <-werr; err != nil {
		return errors.Join(fmt.Errorf("write payload: %w", err), rerr)
	}
	if rerr != nil {
		return fmt.Errorf("read echo (%d of %d bytes): %w", n, len(payload), rerr)
	}
	return nil
}

// exchangeUDP sends one datagram and reads the answer.
func (r *Reply) exchangeUDP(conn net.Conn, payload []byte) error {
	msg := payload
	if msg == nil {
		msg = []byte("ping")
	}
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("send datagram: %w", err)
	}
	buf := make([]byte, maxDatagram)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	line, rest, ok := bytes.Cut(buf[:n], []byte("\n"))
	if !ok {
		return fmt.Errorf("answer %q has no greeting line", buf[:n])
	}
	if err := r.parseGreeting(string(line)); err != nil {
		return err
	}
	if payload != nil {
		r.Echo = bytes.Clone(rest)
	}
	return nil
}

// parseGreeting reads "backend=ADDR:PORT peer=ADDR:PORT" into r.
func (r *Reply) parseGreeting(line string) error {
	fields := strings.Fields(line)
	if len(fields) != 2 {
		return fmt.Errorf("greeting %q: want backend=... peer=...", line)
	}
	for i, key := range []string{"backend=", "peer="} {
		text, ok := strings.CutPrefix(fields[i], key)
		if !ok {
			return fmt.Errorf("greeting %q: field %d does not start with %s", line, i+1, key)
		}
		ap, err := netip.ParseAddrPort(text)
		if err != nil {
			return fmt.Errorf("greeting %q: %w", line, err)
		}
		if i == 0 {
			r.Backend = ap
		} else {
			r.Peer = ap
		}
	}
	return nil
}
