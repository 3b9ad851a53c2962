package proxier_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/translate"
)

// TestVM boots the VM tier's kernel, which has IPVS and dummy links, and
// runs this package's TestGuest tests there. It skips without root, qemu
// or the VM assets (fails under SVCPLAN_REQUIRE_VM=1).
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 8 * time.Minute})
}

// TestGuestIPVS runs a proxier in IPVS mode in a node namespace: real TCP
// connections from the client to a cluster IP reach the pod, an endpoint
// change moves new connections to the new pod, and Cleanup leaves no
// virtual server, kube-ipvs0, KUBE- set or KUBE- chain.
func TestGuestIPVS(t *testing.T) {
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm", "ipset", "iptables-save", "ip6tables-save")
	tp := netnstest.New(t, netnstest.WithoutIPv6())
	oldPod, newPod := tp.AddPod(t, netnstest.Remote), tp.AddPod(t, netnstest.Remote)
	oldEP, newEP := netip.AddrPortFrom(oldPod.V4, 8080), netip.AddrPortFrom(newPod.V4, 8080)
	oldPod.Serve(t, "tcp", oldEP)
	newPod.Serve(t, "tcp", newEP)
	reg := prometheus.NewPedanticRegistry()
	p, err := proxier.New(translate.ModeIPVS, proxier.WithNetNS("/run/netns/"+tp.Node().Name()), proxier.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := state(oldPod.V4)
	st.Node.IPs = []netip.Addr{tp.NodeIP(netnstest.IPv4)}
	if err := p.Sync(ctx, st); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	svc := netip.MustParseAddrPort("10.96.0.10:80")
	for i := range 3 {
		if r := tp.Client().Dial(ctx, "tcp", svc); r.Err != nil || r.Backend != oldEP {
			t.Fatalf("connection %d to %s = %v, want the pod %s\n%s", i, svc, r, oldEP, nodeState(t, tp.Node()))
		}
	}
	if got := testutil.ToFloat64(p.MetricsForTest().IPVSObjects("IPv4", "virtual_servers")); got != 2 {
		t.Errorf("virtual servers metric = %v, want 2", got)
	}

	st = state(newPod.V4)
	st.Node.IPs = []netip.Addr{tp.NodeIP(netnstest.IPv4)}
	if err := p.Sync(ctx, st); err != nil {
		t.Fatalf("Sync after the endpoint change = %v", err)
	}
	for i := range 3 {
		if r := tp.Client().Dial(ctx, "tcp", svc); r.Err != nil || r.Backend != newEP {
			t.Fatalf("after the change, connection %d to %s = %v, want the new pod %s\n%s", i, svc, r, newEP, nodeState(t, tp.Node()))
		}
	}
	// The old pod's real server had connections (now in TIME_WAIT): it
	// drains with weight 0, or is gone already.
	if out := runIn(t, tp.Node(), "ipvsadm", "-S", "-n"); strings.Contains(out, oldEP.String()) && !strings.Contains(out, "-r "+oldEP.String()+" -m -w 0") {
		t.Errorf("after the change the old real server still takes connections:\n%s", out)
	}

	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	checkNoIPVSObjects(t, tp.Node())
}

// checkNoIPVSObjects fails t if ns holds a virtual server, kube-ipvs0, a
// KUBE- set or a KUBE- chain.
func checkNoIPVSObjects(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	if out := runIn(t, ns, "ipvsadm", "-S", "-n"); strings.TrimSpace(out) != "" {
		t.Errorf("after Cleanup ipvsadm -S -n shows:\n%s", out)
	}
	if out, err := ns.Exec(context.Background(), "ip", "link", "show", "kube-ipvs0"); err == nil {
		t.Errorf("after Cleanup kube-ipvs0 exists:\n%s", out)
	}
	if out := runIn(t, ns, "ipset", "list", "-n"); strings.Contains(out, "KUBE-") {
		t.Errorf("after Cleanup ipset list -n shows:\n%s", out)
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if out := runIn(t, ns, tool); strings.Contains(out, "KUBE-") {
			t.Errorf("after Cleanup %s shows:\n%s", tool, out)
		}
	}
}

// runIn runs a tool in ns and returns its output, failing t on an error.
func runIn(t *testing.T, ns *netnstest.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nodeState returns what the node holds, for a failure message.
func nodeState(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{{"ipvsadm", "-S", "-n"}, {"ip", "addr", "show", "kube-ipvs0"}, {"ipset", "save"}, {"iptables-save"}} {
		out, err := ns.Exec(context.Background(), cmd[0], cmd[1:]...)
		b.WriteString("# " + strings.Join(cmd, " ") + "\n")
		b.Write(out)
		if err != nil {
			b.WriteString(err.Error() + "\n")
		}
	}
	return b.String()
}

// TestGuestIPVSConntrackUDP: in IPVS mode the UDP flows of a removed
// endpoint go too, and a client that keeps its source port reaches the
// new endpoint. The proxier's conntrack cleanup deletes them, as
// kube-proxy's IPVS mode does; IPVS may also drop them itself first
// (the UDP real server is deleted at once, and with vs/conntrack=1 and
// expire_nodest_conn IPVS expires its connection with its conntrack
// entry), so the test checks what is left, not who deleted it.
func TestGuestIPVSConntrackUDP(t *testing.T) {
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm", "ipset", "iptables-save", "conntrack")
	tp := netnstest.New(t, netnstest.WithoutIPv6())
	oldPod, newPod := tp.AddPod(t, netnstest.Remote), tp.AddPod(t, netnstest.Remote)
	oldEP, newEP := netip.AddrPortFrom(oldPod.V4, 5353), netip.AddrPortFrom(newPod.V4, 5353)
	oldPod.Serve(t, "udp", oldEP)
	newPod.Serve(t, "udp", newEP)
	p, err := proxier.New(translate.ModeIPVS, proxier.WithNetNS("/run/netns/"+tp.Node().Name()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := tp.NodeIP(netnstest.IPv4)
	if err := p.Sync(ctx, udpService(node, oldPod.V4)); err != nil {
		t.Fatal(err)
	}
	svc := netip.MustParseAddrPort("10.96.0.53:53")
	const srcPort = 40053
	if r := tp.Client().Dial(ctx, "udp", svc, netnstest.FromPort(srcPort)); r.Err != nil || r.Backend != oldEP {
		t.Fatalf("before the change: %v, want an answer from %s\n%s", r, oldEP, nodeState(t, tp.Node()))
	}
	if err := p.Sync(ctx, udpService(node, newPod.V4)); err != nil {
		t.Fatal(err)
	}
	t.Logf("the proxier deleted %v conntrack entries", testutil.ToFloat64(p.MetricsForTest().ConntrackDeleted("IPv4")))
	if out := runIn(t, tp.Node(), "conntrack", "-L", "-p", "udp"); strings.Contains(out, "src="+oldPod.V4.String()+" ") {
		t.Errorf("after the change a conntrack entry still leads to %s:\n%s", oldPod.V4, out)
	}
	if r := tp.Client().Dial(ctx, "udp", svc, netnstest.FromPort(srcPort)); r.Err != nil || r.Backend != newEP {
		t.Errorf("after the change the same client got %v, want an answer from %s\n%s", r, newEP, nodeState(t, tp.Node()))
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	checkNoIPVSObjects(t, tp.Node())
}
