package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
	"github.com/svcplan/svcplan/userspace"
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
	fmt.Fprintf(e.stdout, "packet %s -> %s/%s (%s)\n", pkt.Src, pkt.Dst, strings.ToLower(string(pkt.Protocol)), hookName(pkt))
	out, err := tracePlan(p, st, pkt)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	fmt.Fprint(e.stdout, out)
	return nil
}

func hookName(pkt proxy.Packet) string {
	if pkt.FromNode {
		return "sent by the node: output"
	}
	return "arriving: prerouting"
}

// tracePlan walks the plan of the packet's family in the plan's mode and
// describes where the packet goes.
func tracePlan(p *translate.Plan, st *proxy.State, pkt proxy.Packet) (string, error) {
	ipv6 := pkt.Dst.Addr().Is6()
	proto := strings.ToLower(string(pkt.Protocol))
	if p.Mode == translate.ModeIPVS {
		return traceIPVS(p, st, pkt)
	}
	if p.Mode == translate.ModeNFTables {
		i := slices.IndexFunc(p.NFTables, func(np *nftables.Plan) bool { return (np.FamilyOrDefault() == nftables.IPv6) == ipv6 })
		if i < 0 {
			return "", fmt.Errorf("the plan has no rules of the packet's family")
		}
		tr, err := nftables.NewTracer(p.NFTables[i], nftables.WithLocalAddrs(st.Node.IPs))
		if err != nil {
			return "", err
		}
		hook := nftables.HookPrerouting
		if pkt.FromNode {
			hook = nftables.HookOutput
		}
		res, err := tr.Trace(nftables.Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: proto, Hook: hook})
		if err != nil {
			return "", err
		}
		return res.String(), nil
	}
	i := slices.IndexFunc(p.IPTables, func(ip *iptables.Plan) bool { return (ip.FamilyOrDefault() == iptables.IPv6) == ipv6 })
	if i < 0 {
		return "", fmt.Errorf("the plan has no rules of the packet's family")
	}
	tr, err := iptables.NewTracer(p.IPTables[i], iptables.WithLocalAddrs(st.Node.IPs))
	if err != nil {
		return "", err
	}
	hook := iptables.HookPrerouting
	if pkt.FromNode {
		hook = iptables.HookOutput
	}
	res, err := tr.Trace(iptables.Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: proto, Hook: hook})
	if err != nil {
		return "", err
	}
	out := res.String()
	if p.Userspace != nil {
		out += listenerFor(p.Userspace, res, pkt)
	}
	return out, nil
}

// traceIPVS answers from the IPVS-mode plan: its rules, sets and virtual
// servers.
func traceIPVS(p *translate.Plan, st *proxy.State, pkt proxy.Packet) (string, error) {
	tr, err := translate.NewIPVSTracer(p, st.Node.IPs)
	if err != nil {
		return "", err
	}
	res, err := tr.Trace(pkt)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, s := range res.Steps {
		fmt.Fprintf(&b, "# %s\n", s)
	}
	if len(res.Answer.Choices) == 0 {
		fmt.Fprintf(&b, "%s\n", res.Answer.Verdict)
	}
	for _, c := range res.Answer.Choices {
		masq := ""
		if c.Masquerade {
			masq = " masquerade"
		}
		fmt.Fprintf(&b, "%6.2f%% forward %s%s via ipvs %s\n", 100*c.Probability, c.Endpoint, masq, res.VirtualServer.Addr)
	}
	return b.String(), nil
}

// listenerFor says which userspace listener a packet the portal rules
// redirected reaches, and its backends.
func listenerFor(us *userspace.Plan, res iptables.Result, pkt proxy.Packet) string {
	var b strings.Builder
	for _, o := range res.Outcomes {
		if !o.DNAT {
			continue
		}
		for i := range us.Listeners {
			l := &us.Listeners[i]
			if l.Addr.Port() == o.Dst.Port() && l.Addr.Addr().Is6() == pkt.Dst.Addr().Is6() &&
				strings.EqualFold(string(l.ProtocolOrDefault()), string(pkt.Protocol)) {
				fmt.Fprintf(&b, "proxy port %d is listener %q; it balances over %d backends:", o.Dst.Port(), l.Name, len(l.Backends))
				for _, be := range l.Backends {
					fmt.Fprintf(&b, " %s", be)
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
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
