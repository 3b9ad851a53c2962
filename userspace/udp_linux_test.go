package userspace

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// TestUDPRepliesLeaveFromDestinationIPv4 checks that a listener on
// 0.0.0.0 answers each datagram from the loopback address it was sent to,
// not from the one the kernel would pick (127.0.0.1 for all of them), and
// that a client sending from one port to two addresses has a session for
// each.
func TestUDPRepliesLeaveFromDestinationIPv4(t *testing.T) {
	tests := []struct {
		name   string
		listen netip.Addr
		dsts   []netip.Addr
	}{
		{
			name:   "wildcard listener",
			listen: netip.IPv4Unspecified(),
			dsts:   []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1")},
		},
		{
			name:   "listener bound to one address",
			listen: netip.MustParseAddr("127.0.0.2"),
			dsts:   []netip.Addr{netip.MustParseAddr("127.0.0.2")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := startBackend(t, "a", withUDP)
			p := newTestProxy(t)
			addr := applyOne(t, p, Listener{Name: "dns", Protocol: ProtocolUDP, Addr: netip.AddrPortFrom(tc.listen, 0),
				Backends: addrsOf(b), UDPIdleTimeout: 5 * time.Second})
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkReplySources(t, c, addr.Port(), tc.dsts)
			if s := statsOf(t, p, "dns"); s.Accepted != uint64(len(tc.dsts)) {
				t.Errorf("Stats().Accepted = %d, want %d: one session per address sent to", s.Accepted, len(tc.dsts))
			}
		})
	}
}

// TestUDPRepliesLeaveFromDestinationIPv6 checks the same for a listener
// on ::, in a namespace of its own whose loopback link has two more
// global addresses and a link-local one: a datagram sent to the
// link-local address from a global one, as a pod's datagram redirected to
// fe80::1 is, gets its answer from the link-local address.
func TestUDPRepliesLeaveFromDestinationIPv6(t *testing.T) {
	ns := netnstest.NewNS(t)
	for _, a := range []string{"fd00:5::1/128", "fd00:5::2/128", "fe80::5/64"} {
		ns.AddAddr(t, netip.MustParsePrefix(a))
	}
	backend := ns.Serve(t, "udp", netip.MustParseAddrPort("127.0.0.1:0"))
	p := newTestProxy(t, WithNetNS("/run/netns/"+ns.Name()))
	addr := applyOne(t, p, Listener{Name: "dns", Protocol: ProtocolUDP, Addr: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Backends: []netip.AddrPort{backend.Addr()}, UDPIdleTimeout: 5 * time.Second})
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd00:5::1")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dsts := []netip.Addr{
		netip.MustParseAddr("fe80::5%lo"),
		netip.MustParseAddr("fd00:5::2"),
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("fd00:5::1"),
	}
	checkReplySources(t, c, addr.Port(), dsts)
	if s := statsOf(t, p, "dns"); s.Accepted != uint64(len(dsts)) {
		t.Errorf("Stats().Accepted = %d, want %d: one session per address sent to", s.Accepted, len(dsts))
	}
}

// checkReplySources sends a datagram from c to port at each of dsts, twice
// (the second one through the session the first started), and checks that
// each answer comes from the address and port it was sent to.
func checkReplySources(t *testing.T, c *net.UDPConn, port uint16, dsts []netip.Addr) {
	t.Helper()
	buf := make([]byte, 2048)
	for round := range 2 {
		for _, a := range dsts {
			dst := netip.AddrPortFrom(a, port)
			if _, err := c.WriteToUDPAddrPort([]byte("ping"), dst); err != nil {
				t.Fatalf("send to %s: %v", dst, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("round %d: answer to %s: %v", round, dst, err)
			}
			from = unmapAddrPort(from)
			if got, want := netip.AddrPortFrom(from.Addr().WithZone(""), from.Port()), netip.AddrPortFrom(a.WithZone(""), port); got != want {
				t.Errorf("round %d: answer to a datagram sent to %s came from %s, want %s", round, dst, from, want)
			}
		}
	}
}

// TestParseDest checks the reading of packet-information control
// messages, and that the message written for a reply carries the address
// read.
func TestParseDest(t *testing.T) {
	pkt4 := func(ifindex int32, specDst, addr string) []byte {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: ifindex,
			Spec_dst: netip.MustParseAddr(specDst).As4(), Addr: netip.MustParseAddr(addr).As4()})
	}
	pkt6 := func(ifindex uint32, addr string) []byte {
		return unix.PktInfo6(&unix.Inet6Pktinfo{Ifindex: ifindex, Addr: netip.MustParseAddr(addr).As16()})
	}
	other := unix.UnixRights(0) // a control message of another kind
	tests := []struct {
		name string
		oob  []byte
		want dest
	}{
		{name: "none", oob: nil, want: dest{}},
		{name: "IPv4, ipi_spec_dst", oob: pkt4(3, "10.244.1.1", "10.244.1.1"), want: dest{addr: netip.MustParseAddr("10.244.1.1")}},
		{name: "IPv4 broadcast, its spec_dst", oob: pkt4(3, "10.0.0.1", "255.255.255.255"), want: dest{addr: netip.MustParseAddr("10.0.0.1")}},
		{name: "IPv4 link-local keeps the interface", oob: pkt4(3, "169.254.1.1", "169.254.1.1"), want: dest{addr: netip.MustParseAddr("169.254.1.1"), ifindex: 3}},
		{name: "IPv6 global, no interface", oob: pkt6(7, "fd00::10"), want: dest{addr: netip.MustParseAddr("fd00::10")}},
		{name: "IPv6 link-local keeps the interface", oob: pkt6(7, "fe80::1"), want: dest{addr: netip.MustParseAddr("fe80::1"), ifindex: 7}},
		{name: "IPv6 multicast is no source", oob: pkt6(7, "ff02::fb"), want: dest{}},
		{name: "IPv6 after another message", oob: append(other, pkt6(7, "fe80::1")...), want: dest{addr: netip.MustParseAddr("fe80::1"), ifindex: 7}},
		{name: "truncated", oob: pkt6(7, "fe80::1")[:10], want: dest{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseDest(tc.oob)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(dest{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("parseDest mismatch (-want +got):\n%s", diff)
			}
			if !got.addr.IsValid() {
				if oob := destOOB(got); oob != nil {
					t.Errorf("destOOB(zero dest) = %x, want nil", oob)
				}
				return
			}
			if back := parseDest(destOOB(got)); back != got {
				t.Errorf("parseDest(destOOB(%v)) = %v", got, back)
			}
		})
	}
	oob := pkt6(7, "fe80::1")
	if n := testing.AllocsPerRun(100, func() { parseDest(oob) }); n != 0 {
		t.Errorf("parseDest allocates %v times per call, want 0", n)
	}
}

// BenchmarkUDPRoundTrip measures one datagram through the proxy and its
// answer back, on a listener bound to 127.0.0.1 (replies leave from the
// bound address) and on one bound to 0.0.0.0 (the listener reads each
// datagram's destination and replies carry it as their source).
func BenchmarkUDPRoundTrip(b *testing.B) {
	for _, listen := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv4Unspecified()} {
		b.Run(fmt.Sprintf("listen=%s", listen), func(b *testing.B) {
			be := startBackend(b, "a", withUDP)
			p := newTestProxy(b)
			addr := applyOne(b, p, Listener{Name: "dns", Protocol: ProtocolUDP, Addr: netip.AddrPortFrom(listen, 0),
				Backends: addrsOf(be), UDPIdleTimeout: time.Minute})
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), addr.Port())))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, 512), make([]byte, 2048)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
