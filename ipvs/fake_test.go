package ipvs_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/svcplan/svcplan/ipvs"
)

var cmpAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// plan returns n TCP services with m endpoints each, plus one UDP
// service, sorted; IPv6 too when v6 is set.
func plan(n, m int) *ipvs.Plan {
	p := &ipvs.Plan{}
	for i := range n {
		vip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		p.Addresses = append(p.Addresses, vip)
		v := ipvs.VirtualServer{Protocol: ipvs.TCP, Addr: netip.AddrPortFrom(vip, 80)}
		for j := range m {
			v.RealServers = append(v.RealServers, ipvs.RealServer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(244 + i>>8), byte(j), byte(i)}), 8080), Weight: 1})
		}
		sortReals(v.RealServers)
		p.VirtualServers = append(p.VirtualServers, v)
	}
	p.Addresses = append(p.Addresses, netip.MustParseAddr("fd00:96::a"))
	p.VirtualServers = append(p.VirtualServers,
		ipvs.VirtualServer{Protocol: ipvs.UDP, Addr: ap("[fd00:96::a]:53"), Scheduler: ipvs.LeastConnection, Timeout: 3 * time.Hour,
			RealServers: []ipvs.RealServer{{Addr: ap("[fd00:244::5]:53"), Weight: 1}, {Addr: ap("[fd00:244::6]:53"), Weight: 1}}})
	p.Sort()
	return p
}

func sortReals(rs []ipvs.RealServer) {
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			if rs[j].Addr.Compare(rs[i].Addr) < 0 {
				rs[i], rs[j] = rs[j], rs[i]
			}
		}
	}
}

func checkDump(t *testing.T, f *ipvs.Fake, want *ipvs.Plan) {
	t.Helper()
	got := f.Dump(want.Interface)
	w := *want
	if w.Interface == "" {
		w.Interface = ipvs.DefaultInterface
	}
	if diff := cmp.Diff(&w, got, cmpAddrs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Fake.Dump() (-plan +fake):\n%s", diff)
	}
}

func TestFakeApply(t *testing.T) {
	ctx := context.Background()
	f := ipvs.NewFake()
	p := plan(3, 2)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, p)
	for _, sc := range f.Sysctls() {
		if sc.Value != "1" {
			t.Errorf("sysctl %s = %q after Apply, want 1", sc.Name, sc.Value)
		}
	}
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.LastOperations != 0 {
		t.Errorf("no-op Apply: LastOperations = %d, want 0 (Stats %+v)", st.LastOperations, st)
	}
}

// TestFakeOneEndpoint checks the target: one changed endpoint at
// 1000 services takes at most 10 kernel operations.
func TestFakeOneEndpoint(t *testing.T) {
	ctx := context.Background()
	f := ipvs.NewFake()
	p := plan(1000, 10)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.VirtualServers[500].RealServers[3].Addr = ap("10.250.0.1:8080")
	sortReals(p.VirtualServers[500].RealServers)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, p)
	st := f.Stats()
	if st.LastOperations > 10 || st.LastOperations != 2 {
		t.Errorf("one endpoint changed at 1000 services: %d kernel operations, want 2 (add, delete)", st.LastOperations)
	}
	t.Logf("one endpoint changed at 1000 services × 10: %d kernel writes, %d reads in total", st.LastOperations, st.Reads)
}

func TestFakeGracefulTermination(t *testing.T) {
	ctx := context.Background()
	f := ipvs.NewFake()
	p := plan(1, 2)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	tcp := p.VirtualServers[0]
	gone := tcp.RealServers[0].Addr
	if err := f.SetConnections(ipvs.TCP, tcp.Addr, gone, 3); err != nil {
		t.Fatal(err)
	}
	udp := p.VirtualServers[1]
	if err := f.SetConnections(ipvs.UDP, udp.Addr, udp.RealServers[0].Addr, 3); err != nil {
		t.Fatal(err)
	}
	p.VirtualServers[0].RealServers = p.VirtualServers[0].RealServers[1:]
	p.VirtualServers[1].RealServers = p.VirtualServers[1].RealServers[1:]
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	want := plan(1, 2)
	want.VirtualServers[0].RealServers[0].Weight = 0 // draining
	want.VirtualServers[1].RealServers = want.VirtualServers[1].RealServers[1:]
	checkDump(t, f, want)
	if st := f.Stats(); st.Draining != 1 {
		t.Errorf("Draining = %d, want 1", st.Draining)
	}
	// Still connected: the next Apply keeps it, writing nothing.
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.LastOperations != 0 || st.Draining != 1 {
		t.Errorf("Apply while draining: Stats = %+v, want no write and 1 draining", st)
	}
	if err := f.SetConnections(ipvs.TCP, tcp.Addr, gone, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, p)
	if st := f.Stats(); st.Draining != 0 || st.LastOperations != 1 {
		t.Errorf("Apply after the connections closed: Stats = %+v, want the real server deleted", st)
	}
}

func TestFakeDriftAndCleanup(t *testing.T) {
	ctx := context.Background()
	f := ipvs.NewFake()
	p := plan(2, 2)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteService(ipvs.TCP, p.VirtualServers[0].Addr); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteAddress(ipvs.DefaultInterface, p.Addresses[1]); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, p)
	if st := f.Stats(); st.Repairs != 2 {
		t.Errorf("Repairs = %d, want 2", st.Repairs)
	}
	f.AddLink("eth0")
	if err := f.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.Dump(""); len(got.VirtualServers) != 0 || len(got.Addresses) != 0 {
		t.Errorf("after Cleanup: %+v, want nothing", got)
	}
	if got := f.Dump("eth0"); got == nil {
		t.Errorf("Cleanup removed a foreign link")
	}
}

func TestFakeRefuses(t *testing.T) {
	f := ipvs.NewFake()
	f.AddLink(ipvs.DefaultInterface)
	err := f.Apply(context.Background(), plan(1, 1))
	if !errors.Is(err, ipvs.ErrForeignLink) {
		t.Errorf("Apply over a non-dummy kube-ipvs0 = %v, want ErrForeignLink", err)
	}
	bad := &ipvs.Plan{VirtualServers: []ipvs.VirtualServer{{Protocol: ipvs.TCP, Addr: ap("10.0.0.1:80"),
		RealServers: []ipvs.RealServer{{Addr: ap("[fd00::1]:80"), Weight: 1}}}}}
	if err := f.Load(bad); !errors.Is(err, ipvs.ErrRealFamily) {
		t.Errorf("Load(IPv6 real server of an IPv4 service) = %v, want ErrRealFamily", err)
	}
	if err := f.Apply(context.Background(), bad); err == nil {
		t.Errorf("Apply(IPv6 real server of an IPv4 service) = nil, want an error")
	}
}
