package netnstest

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestTopologyWithDNAT applies a few hand-written service-like iptables
// rules in the node and checks that the topology carries what kernel
// tests of the proxy modes need: DNAT from the client, from the node itself
// (OUTPUT), from another pod and back to the same pod (hairpin, with
// masquerade), a localhost NodePort (route_localnet), and REJECT and DROP
// told apart.
func TestTopologyWithDNAT(t *testing.T) {
	Require(t, "ip", "iptables-restore", "ip6tables-restore")
	tp := New(t)
	a := tp.AddPod(t, Local)
	b := tp.AddPod(t, Local)
	for _, f := range tp.Families() {
		tp.Serve(t, "tcp", netip.AddrPortFrom(a.Addr(f), 8080))
		tp.Serve(t, "udp", netip.AddrPortFrom(a.Addr(f), 8080))
	}
	restore(t, tp.Node(), "iptables-restore", fmt.Sprintf(`*nat
:SVC - [0:0]
-A PREROUTING -j SVC
-A OUTPUT -j SVC
-A SVC -d 10.96.0.10/32 -p tcp --dport 80 -j DNAT --to-destination %[1]s:8080
-A SVC -d 10.96.0.10/32 -p udp --dport 53 -j DNAT --to-destination %[1]s:8080
-A SVC -d 127.0.0.1/32 -p tcp --dport 30080 -j DNAT --to-destination %[1]s:8080
-A POSTROUTING -s %[1]s/32 -d %[1]s/32 -j MASQUERADE
-A POSTROUTING -s 127.0.0.0/8 -j MASQUERADE
COMMIT
*filter
-A FORWARD -d 10.96.0.20/32 -j REJECT
-A FORWARD -d 10.96.0.21/32 -p tcp -j REJECT --reject-with tcp-reset
-A FORWARD -d 10.96.0.22/32 -j DROP
COMMIT
`, a.V4))
	restore(t, tp.Node(), "ip6tables-restore", fmt.Sprintf(`*nat
-A PREROUTING -d fd00:96::10/128 -p tcp --dport 80 -j DNAT --to-destination [%[1]s]:8080
-A OUTPUT -d fd00:96::10/128 -p tcp --dport 80 -j DNAT --to-destination [%[1]s]:8080
COMMIT
`, a.V6))
	gw := tp.PodCIDR(Local, IPv4).Addr().Next()
	tests := []struct {
		name     string
		from     *NS
		network  string
		dst      string
		wantPeer netip.Addr // zero: the dialer's own address
		want     func(Reply) bool
	}{
		{name: "client", from: tp.Client(), network: "tcp", dst: "10.96.0.10:80"},
		{name: "client udp", from: tp.Client(), network: "udp", dst: "10.96.0.10:53"},
		{name: "node", from: tp.Node(), network: "tcp", dst: "10.96.0.10:80"},
		{name: "other pod", from: b.NS, network: "tcp", dst: "10.96.0.10:80"},
		{name: "hairpin", from: a.NS, network: "tcp", dst: "10.96.0.10:80", wantPeer: gw},
		{name: "localhost nodeport", from: tp.Node(), network: "tcp", dst: "127.0.0.1:30080", wantPeer: gw},
		{name: "client v6", from: tp.Client(), network: "tcp", dst: "[fd00:96::10]:80"},
		{name: "node v6", from: tp.Node(), network: "tcp", dst: "[fd00:96::10]:80"},
		{name: "other pod v6", from: b.NS, network: "tcp", dst: "[fd00:96::10]:80"},
		{name: "reject", from: tp.Client(), network: "tcp", dst: "10.96.0.20:80", want: Reply.Refused},
		{name: "reject udp", from: tp.Client(), network: "udp", dst: "10.96.0.20:53", want: Reply.Refused},
		{name: "tcp reset", from: tp.Client(), network: "tcp", dst: "10.96.0.21:80", want: Reply.Refused},
		{name: "drop", from: tp.Client(), network: "tcp", dst: "10.96.0.22:80", want: Reply.TimedOut},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := netip.MustParseAddrPort(tc.dst)
			r := tc.from.Dial(t.Context(), tc.network, dst, Timeout(time.Second))
			if tc.want != nil {
				if !tc.want(r) || r.OK() {
					t.Errorf("Dial(%s %s) = %v, want the other outcome", tc.network, dst, r)
				}
				return
			}
			wantBackend := netip.AddrPortFrom(a.Addr(FamilyOf(dst.Addr())), 8080)
			if !r.OK() || r.Backend != wantBackend {
				t.Fatalf("Dial(%s %s) = %v, want backend %s", tc.network, dst, r, wantBackend)
			}
			if want := tc.wantPeer; want.IsValid() && r.Peer.Addr() != want {
				t.Errorf("Dial(%s %s).Peer = %s, want masqueraded to %s", tc.network, dst, r.Peer, want)
			}
			if !tc.wantPeer.IsValid() && r.Peer != r.Local {
				t.Errorf("Dial(%s %s).Peer = %s, want the dialer's %s", tc.network, dst, r.Peer, r.Local)
			}
		})
	}
}

// restore feeds rules to an iptables-restore tool in ns.
func restore(t *testing.T, ns *NS, tool, rules string) {
	t.Helper()
	cmd := ns.Command(t.Context(), tool)
	cmd.Stdin = bytes.NewBufferString(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v: %s", tool, ns, err, out)
	}
}
