package proxier_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// udpService is ns/dns on 10.96.0.53:53/udp with endpoints at port 5353.
func udpService(node netip.Addr, eps ...netip.Addr) *proxy.State {
	st := &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{node}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{podCIDR}},
		Services: []proxy.Service{{Namespace: "ns", Name: "dns", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.53")},
			Ports: []proxy.ServicePort{{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53}}}},
	}
	for _, a := range eps {
		st.Services[0].Endpoints = append(st.Services[0].Endpoints,
			proxy.Endpoint{Addr: a, Ready: true, Ports: []proxy.EndpointPort{{Name: "dns", Port: 5353}}})
	}
	return st
}

// TestKernelConntrackUDP shows why the cleanup exists: a UDP client that
// keeps its source port keeps its conntrack entry, whose DNAT still
// leads to the endpoint that was removed, until the entry is deleted.
func TestKernelConntrackUDP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cleanup bool
	}{{"without cleanup", false}, {"with cleanup", true}} {
		t.Run(tc.name, func(t *testing.T) {
			netnstest.Require(t, "iptables", "iptables-restore", "iptables-save")
			tp := netnstest.New(t, netnstest.WithoutIPv6())
			oldPod, newPod := tp.AddPod(t, netnstest.Remote), tp.AddPod(t, netnstest.Remote)
			oldEP := netip.AddrPortFrom(oldPod.V4, 5353)
			newEP := netip.AddrPortFrom(newPod.V4, 5353)
			oldPod.Serve(t, "udp", oldEP)
			newPod.Serve(t, "udp", newEP)
			opts := []proxier.Option{proxier.WithNetNS("/run/netns/" + tp.Node().Name())}
			if !tc.cleanup {
				opts = append(opts, proxier.WithoutConntrackCleanup())
			}
			p, err := proxier.New(translate.ModeIPTables, opts...)
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
			r := tp.Client().Dial(ctx, "udp", svc, netnstest.FromPort(srcPort))
			if r.Err != nil || r.Backend != oldEP {
				t.Fatalf("before the change: %v, want an answer from %s", r, oldEP)
			}
			// The endpoint moves: the old pod leaves the service (it
			// still runs, as a terminating pod's process may), a new one
			// joins.
			if err := p.Sync(ctx, udpService(node, newPod.V4)); err != nil {
				t.Fatal(err)
			}
			r = tp.Client().Dial(ctx, "udp", svc, netnstest.FromPort(srcPort))
			if r.Err != nil {
				t.Fatalf("after the change: %v", r)
			}
			want := newEP
			if !tc.cleanup {
				want = oldEP // the flow's NAT binding outlives the rules
			}
			if r.Backend != want {
				t.Errorf("after the change the same client reached %s, want %s", r.Backend, want)
			}
			t.Logf("%s: the client's next datagram reached %s", tc.name, r.Backend)
		})
	}
}

// TestKernelCleanupSwitchingModes applies iptables mode, cleans up,
// applies nftables mode and cleans up: nothing owned is left and other
// programs' rules and tables stay.
func TestKernelCleanupSwitchingModes(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-save", "ip6tables-save", "nft")
	ns := netnstest.NewNS(t)
	ctx := context.Background()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := ns.Exec(ctx, name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("iptables", "-t", "nat", "-N", "FOREIGN")
	run("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN")
	run("nft", "add", "table", "inet", "foreign")
	path := "/run/netns/" + ns.Name()
	st := state(epLocal)
	st.Services[1].Type = proxy.ServiceTypeNodePort
	st.Services[1].Ports[0].NodePort = 30053

	ipt, err := proxier.New(translate.ModeIPTables, proxier.WithNetNS(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := ipt.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if out := run("iptables-save"); !strings.Contains(out, ":KUBE-SERVICES") {
		t.Fatalf("iptables mode wrote no KUBE-SERVICES:\n%s", out)
	}
	if err := ipt.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	checkClean(t, run)

	nft, err := proxier.New(translate.ModeNFTables, proxier.WithNetNS(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := nft.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if out := run("nft", "list", "ruleset"); !strings.Contains(out, "table ip kube-proxy") {
		t.Fatalf("nftables mode wrote no kube-proxy table:\n%s", out)
	}
	// Switching back without a cleanup in between: iptables mode's
	// Cleanup removes the nftables mode's table too.
	if err := ipt.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	checkClean(t, run)
	if err := nft.Cleanup(ctx); err != nil {
		t.Fatalf("a second Cleanup, with nothing left: %v", err)
	}
	checkClean(t, run)
}

func checkClean(t *testing.T, run func(string, ...string) string) {
	t.Helper()
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if out := run(tool); strings.Contains(out, "KUBE-") {
			t.Errorf("after Cleanup %s shows owned chains:\n%s", tool, out)
		}
	}
	if out := run("iptables-save", "-t", "nat"); !strings.Contains(out, "-A PREROUTING -j FOREIGN") || !strings.Contains(out, ":FOREIGN") {
		t.Errorf("after Cleanup the foreign chain is gone:\n%s", out)
	}
	out := run("nft", "list", "ruleset")
	if strings.Contains(out, "kube-proxy") {
		t.Errorf("after Cleanup nft shows a kube-proxy table:\n%s", out)
	}
	if !strings.Contains(out, "table inet foreign") {
		t.Errorf("after Cleanup the foreign nft table is gone:\n%s", out)
	}
}

// TestKernelHealthCheckInNetNS checks that a service's health check
// server listens inside the proxier's namespace: the client reaches it on
// the node's address.
func TestKernelHealthCheckInNetNS(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "iptables-save")
	tp := netnstest.New(t, netnstest.WithoutIPv6())
	p, err := proxier.New(translate.ModeIPTables, proxier.WithNetNS("/run/netns/"+tp.Node().Name()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { p.Close(ctx) })
	st := localState(true)
	st.Node.IPs = []netip.Addr{tp.NodeIP(netnstest.IPv4)}
	if err := p.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := tp.Client().Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	url := "http://" + netip.AddrPortFrom(tp.NodeIP(netnstest.IPv4), 30999).String() + "/"
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s from the client: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"localEndpoints": 1`) {
		t.Errorf("GET %s = %d %s, want 200 with one local endpoint", url, resp.StatusCode, body)
	}
}
