package userspace

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// destOOBSize is the size of the buffer that receives a datagram's
// control messages: room for one IPV6_PKTINFO (the larger of the two
// packet-information messages).
var destOOBSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// enableDest asks the kernel to tell, with each datagram c receives, the
// local address it was sent to and the interface it arrived on: IP_PKTINFO
// for an IPv4 socket, IPV6_RECVPKTINFO for an IPv6 one.
func enableDest(c *net.UDPConn, ipv4 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("enabling packet information: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if ipv4 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("enabling packet information: %w", err)
	}
	return nil
}

// parseDest returns the destination that the IP_PKTINFO or IPV6_PKTINFO
// control message in oob reports, or the zero dest if oob has none. It
// does not allocate.
func parseDest(oob []byte) dest {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return dest{}
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ipi_ifindex, ipi_spec_dst, ipi_addr.
			// ipi_spec_dst is the local address the datagram reached (for
			// a broadcast, the address a reply should come from).
			return newDest(netip.AddrFrom4([4]byte(data[4:8])), binary.NativeEndian.Uint32(data[0:4]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: ipi6_addr, ipi6_ifindex.
			return newDest(netip.AddrFrom16([16]byte(data[0:16])), binary.NativeEndian.Uint32(data[16:20]))
		}
		oob = rest
	}
	return dest{}
}

// destOOB returns the control message that makes a reply leave from d:
// IP_PKTINFO with d as ipi_spec_dst, or IPV6_PKTINFO with d as ipi6_addr,
// and d's interface, if any. It returns nil for the zero dest.
func destOOB(d dest) []byte {
	switch {
	case d.addr.Is4():
		return unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: int32(d.ifindex), Spec_dst: d.addr.As4()})
	case d.addr.Is6():
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: d.addr.As16(), Ifindex: d.ifindex})
	}
	return nil
}
