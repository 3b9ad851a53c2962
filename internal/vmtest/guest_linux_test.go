package vmtest_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
)

// hostTest names the host test that runs the guest tests of this file.
const hostTest = "TestVM"

// netlinkHandle returns a netlink handle inside ns, closed in t's Cleanup.
func netlinkHandle(t *testing.T, ns *netnstest.NS) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns.Name())
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

// addDummy adds a dummy link named name, up, with the addresses addrs,
// in the namespace of h.
func addDummy(t *testing.T, h *netlink.Handle, name string, addrs ...netip.Prefix) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("add dummy link %s: %v", name, err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find link %s: %v", name, err)
	}
	for _, p := range addrs {
		ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatalf("add %s to %s: %v", p, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
	return link
}

// TestGuestDummyLink creates kube-ipvs0 with vishvananda/netlink, adds
// service addresses to it and reads them back.
func TestGuestDummyLink(t *testing.T) {
	vmtest.RequireGuest(t, hostTest)
	ns := netnstest.NewNS(t)
	h := netlinkHandle(t, ns)
	want := []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32"), netip.MustParsePrefix("10.96.0.10/32")}
	link := addDummy(t, h, "kube-ipvs0", want...)
	if got := link.Type(); got != "dummy" {
		t.Errorf("link type = %q, want dummy", got)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	var got []netip.Prefix
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		got = append(got, netip.PrefixFrom(ip.Unmap(), ones))
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("addresses on kube-ipvs0 (-want +got):\n%s", diff)
	}
}

// ipvsService is the fields of an IPVS virtual server the tests compare.
type ipvsService struct {
	Addr      netip.AddrPort
	Protocol  uint16
	Scheduler string
	Family    uint16
	Netmask   uint32
	Flags     uint32
	Timeout   uint32
}

// ipvsDest is the fields of an IPVS real server the tests compare.
type ipvsDest struct {
	Addr    netip.AddrPort
	Weight  int
	Forward uint32
}

// svcFlagHashed is IP_VS_SVC_F_HASHED, which the kernel sets on every
// virtual server it lists.
const svcFlagHashed = 0x2

func serviceOf(s *ipvs.Service) ipvsService {
	a, _ := netip.AddrFromSlice(s.Address)
	return ipvsService{netip.AddrPortFrom(a.Unmap(), s.Port), s.Protocol, s.SchedName, s.AddressFamily,
		s.Netmask, s.Flags &^ svcFlagHashed, s.Timeout}
}

func destOf(d *ipvs.Destination) ipvsDest {
	a, _ := netip.AddrFromSlice(d.Address)
	return ipvsDest{netip.AddrPortFrom(a.Unmap(), d.Port), d.Weight, d.ConnectionFlags & ipvs.ConnFwdMask}
}

// newIPVS returns a moby/ipvs handle inside ns, closed in t's Cleanup.
func newIPVS(t *testing.T, ns *netnstest.NS) *ipvs.Handle {
	t.Helper()
	h, err := ipvs.New("/run/netns/" + ns.Name())
	if err != nil {
		t.Fatalf("ipvs handle in %s (is ip_vs loaded?): %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

// addVirtualServer creates vs with the real servers dests through h.
func addVirtualServer(t *testing.T, h *ipvs.Handle, vs ipvsService, dests ...ipvsDest) *ipvs.Service {
	t.Helper()
	svc := &ipvs.Service{Address: vs.Addr.Addr().AsSlice(), Port: vs.Addr.Port(), Protocol: vs.Protocol,
		SchedName: vs.Scheduler, AddressFamily: vs.Family, Netmask: vs.Netmask, Flags: vs.Flags, Timeout: vs.Timeout}
	if err := h.NewService(svc); err != nil {
		t.Fatalf("add virtual server %s: %v", vs.Addr, err)
	}
	for _, d := range dests {
		dst := &ipvs.Destination{Address: d.Addr.Addr().AsSlice(), Port: d.Addr.Port(), Weight: d.Weight,
			ConnectionFlags: d.Forward, AddressFamily: vs.Family}
		if err := h.NewDestination(svc, dst); err != nil {
			t.Fatalf("add real server %s to %s: %v", d.Addr, vs.Addr, err)
		}
	}
	return svc
}

// TestGuestIPVS creates virtual and real servers with moby/ipvs in a fresh
// namespace and reads them back.
func TestGuestIPVS(t *testing.T) {
	vmtest.RequireGuest(t, hostTest)
	ns := netnstest.NewNS(t)
	h := newIPVS(t, ns)
	wantVS := []ipvsService{
		{netip.MustParseAddrPort("10.96.0.10:80"), syscall.IPPROTO_TCP, "rr", syscall.AF_INET, 0xffffffff, 0, 0},
		{netip.MustParseAddrPort("10.96.0.11:53"), syscall.IPPROTO_UDP, "sh", syscall.AF_INET, 0xffffffff, 0, 0},
	}
	wantDests := [][]ipvsDest{
		{{netip.MustParseAddrPort("10.244.1.5:8080"), 1, ipvs.ConnFwdMasq}, {netip.MustParseAddrPort("10.244.2.5:8080"), 0, ipvs.ConnFwdMasq}},
		{{netip.MustParseAddrPort("10.244.1.6:53"), 1, ipvs.ConnFwdMasq}},
	}
	for i, vs := range wantVS {
		addVirtualServer(t, h, vs, wantDests[i]...)
	}
	svcs, err := h.GetServices()
	if err != nil {
		t.Fatalf("list virtual servers: %v", err)
	}
	slices.SortFunc(svcs, func(a, b *ipvs.Service) int { return serviceOf(a).Addr.Compare(serviceOf(b).Addr) })
	var gotVS []ipvsService
	var gotDests [][]ipvsDest
	for _, s := range svcs {
		gotVS = append(gotVS, serviceOf(s))
		dests, err := h.GetDestinations(s)
		if err != nil {
			t.Fatalf("list real servers of %s: %v", serviceOf(s).Addr, err)
		}
		var ds []ipvsDest
		for _, d := range dests {
			ds = append(ds, destOf(d))
		}
		slices.SortFunc(ds, func(a, b ipvsDest) int { return a.Addr.Compare(b.Addr) })
		gotDests = append(gotDests, ds)
	}
	byAddr := cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })
	if diff := cmp.Diff(wantVS, gotVS, byAddr); diff != "" {
		t.Errorf("virtual servers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDests, gotDests, byAddr); diff != "" {
		t.Errorf("real servers (-want +got):\n%s", diff)
	}
}

// run runs a tool in ns with stdin and returns its output, failing t if it
// fails.
func run(t *testing.T, ns *netnstest.NS, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := ns.Command(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}

// TestGuestTools runs ipset, ipvsadm, iptables-restore (nft and legacy)
// and nft in a fresh namespace, with the matches and targets kube-proxy's
// rules use, and reads each back.
func TestGuestTools(t *testing.T) {
	vmtest.RequireGuest(t, hostTest)
	netnstest.Require(t, "ipset", "ipvsadm", "iptables-nft-restore", "iptables-legacy-restore", "nft")
	ns := netnstest.NewNS(t)
	t.Run("ipset", func(t *testing.T) {
		run(t, ns, "", "ipset", "create", "KUBE-CLUSTER-IP", "hash:ip,port", "family", "inet", "hashsize", "1024", "maxelem", "65536")
		run(t, ns, "", "ipset", "add", "KUBE-CLUSTER-IP", "10.96.0.10,tcp:80")
		run(t, ns, "", "ipset", "create", "KUBE-NODE-PORT-TCP", "bitmap:port", "range", "0-65535")
		run(t, ns, "", "ipset", "add", "KUBE-NODE-PORT-TCP", "30080")
		got := run(t, ns, "", "ipset", "list", "-n")
		if diff := cmp.Diff("KUBE-CLUSTER-IP\nKUBE-NODE-PORT-TCP\n", got); diff != "" {
			t.Errorf("ipset list -n (-want +got):\n%s", diff)
		}
		if save := run(t, ns, "", "ipset", "save", "KUBE-CLUSTER-IP"); !strings.Contains(save, "add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n") {
			t.Errorf("ipset save lacks the member:\n%s", save)
		}
	})
	t.Run("ipvsadm", func(t *testing.T) {
		in := "-A -t 10.96.0.20:443 -s rr -p 10800\n-a -t 10.96.0.20:443 -r 10.244.1.7:8443 -m -w 1\n"
		run(t, ns, in, "ipvsadm", "-R")
		got := run(t, ns, "", "ipvsadm", "-S", "-n")
		if diff := cmp.Diff(in, got); diff != "" {
			t.Errorf("ipvsadm -S -n after ipvsadm -R (-want +got):\n%s", diff)
		}
	})
	for _, backend := range []string{"nft", "legacy"} {
		t.Run("iptables-"+backend, func(t *testing.T) {
			run(t, ns, iptablesRules, "iptables-"+backend+"-restore", "--noflush")
			got := ruleLines(run(t, ns, "", "iptables-"+backend+"-save", "-t", "nat"))
			if diff := cmp.Diff(ruleLines(iptablesRules), got); diff != "" {
				t.Errorf("iptables-%s-save after restore (-want +got):\n%s", backend, diff)
			}
		})
	}
	t.Run("on-demand modules", func(t *testing.T) {
		// Neither xt_cpu nor ip_set_hash_mac is loaded at boot: the kernel
		// loads them through modprobe.
		run(t, ns, "", "iptables-legacy", "-t", "filter", "-A", "INPUT", "-m", "cpu", "--cpu", "0")
		run(t, ns, "", "ipset", "create", "svcplan-mac", "hash:mac")
		mods, err := os.ReadFile("/proc/modules")
		if err != nil {
			t.Fatal(err)
		}
		loaded := map[string]bool{}
		for _, l := range strings.Split(string(mods), "\n") {
			name, _, _ := strings.Cut(l, " ")
			loaded[name] = true
		}
		for _, m := range []string{"xt_cpu", "ip_set_hash_mac"} {
			if !loaded[m] {
				t.Errorf("module %s not loaded", m)
			}
		}
	})
	t.Run("nft", func(t *testing.T) {
		run(t, ns, nftRules, "nft", "-f", "-")
		got := run(t, ns, "", "nft", "list", "table", "inet", "svcplan-vm")
		for _, want := range []string{"numgen random mod 2 vmap", "ct state new", "fib daddr type local", "masquerade"} {
			if !strings.Contains(got, want) {
				t.Errorf("nft list table lacks %q:\n%s", want, got)
			}
		}
	})
}

// iptablesRules are restore input with the matches and targets of
// kube-proxy's iptables and IPVS modes; the KUBE-CLUSTER-IP set comes from
// the ipset subtest.
const iptablesRules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-A - [0:0]
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-SEP-A
-A KUBE-SERVICES -p tcp -m multiport --dports 80,443 -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A
-A KUBE-SERVICES -p tcp -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE --random-fully
-A KUBE-SEP-A -p tcp -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-A -p tcp -m tcp --dport 81 -j REDIRECT --to-ports 8081
COMMIT
`

// ruleLines returns the -A lines of iptables text, sorted.
func ruleLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "-A KUBE-") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// nftRules is nft -f input with the expressions kube-proxy's nftables mode
// uses.
const nftRules = `table inet svcplan-vm {
	map svc {
		type ipv4_addr . inet_proto . inet_service : verdict
	}
	chain ep1 {
		meta l4proto tcp dnat ip to 10.244.1.5:8080
	}
	chain ep2 {
		meta l4proto tcp dnat ip to 10.244.2.5:8080
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @svc
		numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ct state new jump services
		fib daddr type local tcp dport 30080 jump services
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x4000 == 0x4000 masquerade fully-random
	}
	chain filter {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
		ip daddr 10.96.0.99 tcp dport 80 reject with icmp host-unreachable
	}
}
`

// TestGuestTCP sends real TCP through a netnstest topology: straight to a
// pod, and to a service address on kube-ipvs0 that IPVS balances to the
// pod, checking in both cases which backend answered.
func TestGuestTCP(t *testing.T) {
	vmtest.RequireGuest(t, hostTest)
	tp := netnstest.New(t, netnstest.WithoutIPv6())
	pod := tp.AddPod(t, netnstest.Local)
	srv := pod.Serve(t, "tcp", netip.AddrPortFrom(pod.V4, 8080))
	ctx := context.Background()
	if r := tp.Client().Dial(ctx, "tcp", srv.Addr(), netnstest.Payload([]byte("hello"))); !r.OK() || r.Backend != srv.Addr() || string(r.Echo) != "hello" {
		t.Fatalf("client -> pod %s: %v, want an echo from %s", srv.Addr(), r, srv.Addr())
	}

	vip := netip.MustParseAddrPort("10.96.0.10:80")
	addDummy(t, netlinkHandle(t, tp.Node()), "kube-ipvs0", netip.PrefixFrom(vip.Addr(), 32))
	if err := os.WriteFile("/proc/sys/net/ipv4/vs/conntrack", []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
		t.Logf("net.ipv4.vs.conntrack in the guest's own namespace: %v", err)
	}
	addVirtualServer(t, newIPVS(t, tp.Node()),
		ipvsService{vip, syscall.IPPROTO_TCP, "rr", syscall.AF_INET, 0xffffffff, 0, 0},
		ipvsDest{srv.Addr(), 1, ipvs.ConnFwdMasq})
	for i := range 3 {
		r := tp.Client().Dial(ctx, "tcp", vip)
		if !r.OK() || r.Backend != srv.Addr() || r.Peer.Addr() != tp.ClientIP(netnstest.IPv4) {
			t.Errorf("client -> %s (IPVS) #%d: %v, want backend %s seeing the client %s", vip, i, r, srv.Addr(), tp.ClientIP(netnstest.IPv4))
		}
	}
	if hits := srv.Hits(); hits != 4 {
		t.Errorf("backend hits = %d, want 4", hits)
	}
}
