package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// Conn is a TCP connection a scenario keeps open across a change of
// State, to check that established connections survive it.
type Conn struct {
	// Reply is what the backend's greeting said when the connection
	// opened.
	Reply netnstest.Reply

	conn net.Conn
	br   *bufio.Reader
}

// Open connects from src to dst over TCP, reads the backend's greeting,
// checks it against the model as [Env.CheckModel] does, and keeps the
// connection open until t ends. It fails t if no greeting comes.
func (e *Env) Open(t testing.TB, src Source, dst netip.AddrPort) *Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src.Addr, 0)), Timeout: netnstest.DefaultTimeout}
	var nc net.Conn
	err := src.NS.Do(func() error {
		var derr error
		nc, derr = d.DialContext(t.Context(), "tcp", dst.String())
		return derr
	})
	if err != nil {
		t.Fatalf("open tcp %s -> %s: %v", src, dst, err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &Conn{conn: nc, br: bufio.NewReader(nc)}
	c.Reply.Local = nc.LocalAddr().(*net.TCPAddr).AddrPort()
	nc.SetReadDeadline(time.Now().Add(netnstest.DefaultTimeout))
	line, err := c.br.ReadString('\n')
	if err == nil {
		err = parseGreeting(line, &c.Reply)
	}
	if err != nil {
		t.Fatalf("open tcp %s -> %s: read greeting: %v", src, dst, err)
	}
	e.CheckModel(t, src, "tcp", dst, c.Reply)
	return c
}

// Echo sends payload over the connection and returns an error unless the
// backend echoes it back within DropTimeout.
func (c *Conn) Echo(payload []byte) error {
	if err := c.conn.SetDeadline(time.Now().Add(DropTimeout)); err != nil {
		return err
	}
	if _, err := c.conn.Write(payload); err != nil {
		return fmt.Errorf("write on open connection: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c.br, got); err != nil {
		return fmt.Errorf("read echo on open connection: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("open connection echoed %q, want %q", got, payload)
	}
	return nil
}

// parseGreeting reads a backend's "backend=ADDR:PORT peer=ADDR:PORT" line
// into r.
func parseGreeting(line string, r *netnstest.Reply) error {
	fields := strings.Fields(line)
	if len(fields) != 2 {
		return fmt.Errorf("greeting %q: want backend=... peer=...", line)
	}
	backend, okB := strings.CutPrefix(fields[0], "backend=")
	peer, okP := strings.CutPrefix(fields[1], "peer=")
	if !okB || !okP {
		return fmt.Errorf("greeting %q: want backend=... peer=...", line)
	}
	var err error
	if r.Backend, err = netip.ParseAddrPort(backend); err != nil {
		return fmt.Errorf("greeting %q: %w", line, err)
	}
	if r.Peer, err = netip.ParseAddrPort(peer); err != nil {
		return fmt.Errorf("greeting %q: %w", line, err)
	}
	return nil
}
