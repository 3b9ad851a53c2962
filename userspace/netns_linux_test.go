package userspace

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// TestNetNSDialTCP checks the proxy's dial in another namespace: the
// socket it makes there reaches a server only that namespace has, over
// IPv4 and IPv6; a closed port is refused at once; a backend that never
// answers times out after the dial's timeout, or as soon as the proxy's
// context is done.
func TestNetNSDialTCP(t *testing.T) {
	ns := netnstest.NewNS(t)
	ns.AddAddr(t, netip.MustParsePrefix("fd00:7::1/128"))
	// 192.0.2.0/24 is routed to lo but not local: SYNs to it vanish.
	if _, err := ns.Exec(t.Context(), "ip", "route", "add", "192.0.2.0/24", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	h, err := openNetNS("/run/netns/" + ns.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.close() })
	for _, a := range []string{"127.0.0.1", "fd00:7::1"} {
		srv := ns.Serve(t, "tcp", netip.AddrPortFrom(netip.MustParseAddr(a), 0))
		c, err := h.dialTCP(t.Context(), srv.Addr(), time.Second)
		if err != nil {
			t.Fatalf("dialTCP(%s) in %s: %v", srv.Addr(), ns, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := "backend=" + srv.Addr().String() + " "; err != nil || !strings.HasPrefix(line, want) {
			t.Errorf("greeting over dialTCP(%s) = %q, %v; want it to start with %q", srv.Addr(), line, err, want)
		}
		if got := unmapAddrPort(c.RemoteAddr().(*net.TCPAddr).AddrPort()); got != srv.Addr() {
			t.Errorf("dialTCP(%s).RemoteAddr() = %s", srv.Addr(), got)
		}
		srv.Close()
		_, err = h.dialTCP(t.Context(), srv.Addr(), time.Second)
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) {
			t.Errorf("dialTCP(%s) after the server closed = %v, want a *net.OpError for ECONNREFUSED", srv.Addr(), err)
		}
	}
	silent := netip.MustParseAddrPort("192.0.2.1:80")
	start := time.Now()
	_, err = h.dialTCP(t.Context(), silent, 200*time.Millisecond)
	if took := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("dialTCP(%s, 200ms) = %v after %v, want a deadline error after 200ms", silent, err, took)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = h.dialTCP(ctx, silent, time.Minute)
	if took := time.Since(start); !errors.Is(err, context.Canceled) || took > 2*time.Second {
		t.Errorf("dialTCP(%s) with its context cancelled after 100ms = %v after %v, want context.Canceled at once", silent, err, took)
	}
}
