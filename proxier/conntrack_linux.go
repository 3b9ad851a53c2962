package proxier

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/svcplan/svcplan/proxy"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkConntrack deletes conntrack entries through netlink, in the
// namespace at netnsPath (empty: the caller's).
type netlinkConntrack struct {
	netnsPath string
}

func newConntrack(netnsPath string) Conntrack { return netlinkConntrack{netnsPath: netnsPath} }

// DeleteStale dumps the conntrack table of one family and deletes the
// entries s matches.
func (c netlinkConntrack) DeleteStale(ctx context.Context, ipv6 bool, s *StaleFlows) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var h *netlink.Handle
	var err error
	if c.netnsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	} else {
		ns, nerr := netns.GetFromPath(c.netnsPath)
		if nerr != nil {
			return 0, fmt.Errorf("opening network namespace %s: %w", c.netnsPath, nerr)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return 0, fmt.Errorf("opening a netlink socket: %w", err)
	}
	defer h.Close()
	fam := netlink.InetFamily(unix.AF_INET)
	if ipv6 {
		fam = netlink.InetFamily(unix.AF_INET6)
	}
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flowFilter{s})
	if err != nil {
		return int(n), fmt.Errorf("deleting conntrack entries: %w", err)
	}
	return int(n), nil
}

// flowFilter is a netlink conntrack filter over StaleFlows.
type flowFilter struct{ s *StaleFlows }

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	return f.s.Match(Flow{
		Protocol: proxy.ProtocolUDP,
		OrigDst:  addrPort(flow.Forward.DstIP, flow.Forward.DstPort),
		ReplySrc: addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort),
	})
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}
