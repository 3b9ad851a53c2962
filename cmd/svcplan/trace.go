package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

func (e *env) trace(args []string) error {
	var in inputFlags
	fs := e.newFlagSet("trace", "trace [-f FILE] --node NAME --src IP --dst IP:PORT[/tcp|/udp|/sctp] [--from-node]")
	in.register(fs, true)
	src := fs.String("src", "", "source `IP` of the packet")
	dst := fs.String("dst", "", "destination `IP:PORT[/PROTO]` of the packet (protocol tcp by default)")
	fromNode := fs.Bool("from-node", false, "the node itself sends the packet (OUTPUT) instead of receiving it (PREROUTING)")
	if err := parse(fs, args); err != nil {
		return err
	}
	pkt, err := parsePacket(*src, *dst, *fromNode)
	if err != nil {
		return err
	}
	if len(in.files) > 1 {
		return fmt.Errorf("trace takes one -f, got %d", len(in.files))
	}
	st, err := e.load(&in, first(in.files))
	if err != nil {
		return err
	}
	p, err := compile(st, in.mode)
	if err != nil {
		return err
	}
	fam := iptables.IPv4
	if pkt.Dst.Addr().Is6() {
		fam = iptables.IPv6
	}
	i := slices.IndexFunc(p.IPTables, func(ip *iptables.Plan) bool { return ip.FamilyOrDefault() == fam })
	if i < 0 {
		return fmt.Errorf("the plan has no %s rules", fam)
	}
	tr, err := iptables.NewTracer(p.IPTables[i], iptables.WithLocalAddrs(st.Node.IPs))
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	hook := iptables.HookPrerouting
	if pkt.FromNode {
		hook = iptables.HookOutput
	}
	res, err := tr.Trace(iptables.Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: strings.ToLower(string(pkt.Protocol)), Hook: hook})
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	fmt.Fprintf(e.stdout, "packet %s -> %s/%s (%s)\n", pkt.Src, pkt.Dst, strings.ToLower(string(pkt.Protocol)), hook)
	fmt.Fprint(e.stdout, res.String())
	return nil
}

func parsePacket(src, dst string, fromNode bool) (proxy.Packet, error) {
	if src == "" || dst == "" {
		return proxy.Packet{}, fmt.Errorf("trace needs --src and --dst")
	}
	s, err := netip.ParseAddr(src)
	if err != nil {
		return proxy.Packet{}, fmt.Errorf("--src: %w", err)
	}
	proto := proxy.ProtocolTCP
	if i := strings.LastIndexByte(dst, '/'); i >= 0 {
		switch strings.ToLower(dst[i+1:]) {
		case "tcp":
		case "udp":
			proto = proxy.ProtocolUDP
		case "sctp":
			proto = proxy.ProtocolSCTP
		default:
			return proxy.Packet{}, fmt.Errorf("--dst %q: unknown protocol %q; want tcp, udp or sctp", dst, dst[i+1:])
		}
		dst = dst[:i]
	}
	d, err := netip.ParseAddrPort(dst)
	if err != nil {
		return proxy.Packet{}, fmt.Errorf("--dst: %w", err)
	}
	if s.Is6() != d.Addr().Is6() {
		return proxy.Packet{}, fmt.Errorf("--src %s and --dst %s are of different families", s, d.Addr())
	}
	return proxy.Packet{Src: s, Dst: d, Protocol: proto, FromNode: fromNode}, nil
}
