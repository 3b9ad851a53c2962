package scenario_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// The IPVS-mode apply benchmarks run in the VM, behind SVCPLAN_BENCH=1:
//
//	SVCPLAN_BENCH=1 go test -count=1 -run '^TestVMBench$' -v ./internal/scenario/
//
// runs BenchmarkIPVSApplyFromEmpty and BenchmarkIPVSOneEndpointChange
// there; their figures appear in the host test's log.

// TestVMBench runs this package's IPVS benchmarks in the VM when
// SVCPLAN_BENCH=1.
func TestVMBench(t *testing.T) {
	if os.Getenv("SVCPLAN_BENCH") != "1" {
		t.Skip("the IPVS apply benchmarks run with SVCPLAN_BENCH=1")
	}
	vmtest.Run(t, vmtest.Config{
		Run:     "^$",
		Args:    []string{"-test.bench=^BenchmarkIPVS", "-test.benchtime=3x", "-test.benchmem"},
		Timeout: 20 * time.Minute,
		Memory:  1536,
	})
}

// Size of the benchmark cluster.
const (
	benchServices  = 1000
	benchEndpoints = 10
)

// benchState returns node-a's State with n ClusterIP services of m
// endpoints each, every other endpoint on node-a; with changed, service
// 0's first endpoint has another address.
func benchState(n, m int, changed bool) proxy.State {
	st := proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
	}
	vip := netip.MustParseAddr("10.96.0.0")
	pod := netip.MustParseAddr("10.244.0.0")
	for i := range n {
		vip = vip.Next()
		svc := proxy.Service{
			Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), ClusterIPs: []netip.Addr{vip},
			Ports: []proxy.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}},
		}
		for j := range m {
			pod = pod.Next()
			node := "node-a"
			if j%2 == 1 {
				node = "node-b"
			}
			addr := pod
			if changed && i == 0 && j == 0 {
				addr = netip.MustParseAddr("10.244.255.1")
			}
			svc.Endpoints = append(svc.Endpoints, proxy.Endpoint{Addr: addr, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, NodeName: node})
		}
		st.Services = append(st.Services, svc)
	}
	return st
}

// compileBench compiles benchState for IPVS mode.
func compileBench(tb testing.TB, changed bool) *translate.Plan {
	tb.Helper()
	st := benchState(benchServices, benchEndpoints, changed)
	return compileIPVS(tb, &st)
}

// applySetsAndIPVS applies p's ipsets and IPVS plan with n's appliers.
func (n *ipvsNode) applySetsAndIPVS(tb testing.TB, p *translate.Plan) {
	tb.Helper()
	ctx := context.Background()
	if err := n.sets.Apply(ctx, p.IPSets); err != nil {
		tb.Fatalf("ipset Kernel.Apply = %v", err)
	}
	if err := n.ipvs.Apply(ctx, p.IPVS); err != nil {
		tb.Fatalf("ipvs Kernel.Apply = %v", err)
	}
}

// lastOps returns the kernel writes of n's ipset and IPVS appliers' last
// Apply.
func (n *ipvsNode) lastOps() int {
	return n.sets.Stats().LastOperations + n.ipvs.Stats().LastOperations
}

// BenchmarkIPVSApplyFromEmpty applies the IPVS-mode plan of 1 000
// services × 10 endpoints (1 000 virtual servers, 10 000 real servers,
// 1 000 addresses on kube-ipvs0, the 17 ipsets with 7 000 members) into a
// fresh namespace, twice per iteration: with the netlink appliers (the
// sysctls included), and with the plan's text fed to "ipset restore",
// "ip -batch" (which also sets the link up, as the applier does) and
// "ipvsadm -R". It reports each one's time and their ratio; ns/op is the
// sum. The fixed iptables rules, loaded by iptables-restore either way,
// are left out.
func BenchmarkIPVSApplyFromEmpty(b *testing.B) {
	requireIPVS(b)
	p := compileBench(b, false)
	setText, ipvsText := p.IPSets.String(), p.IPVS.String()
	addrText := p.IPVS.AddressText() + "link set " + p.IPVS.InterfaceOrDefault() + " up\n"
	var appliers, tools time.Duration
	ops := 0
	for b.Loop() {
		b.StopTimer()
		n := newIPVSNode(b, netnsPath(netnstest.NewNS(b)))
		raw := netnstest.NewNS(b)
		b.StartTimer()
		start := time.Now()
		n.applySetsAndIPVS(b, p)
		appliers += time.Since(start)
		start = time.Now()
		runStdin(b, raw, setText, "ipset", "restore")
		runStdin(b, raw, addrText, "ip", "-batch", "-")
		runStdin(b, raw, ipvsText, "ipvsadm", "-R")
		tools += time.Since(start)
		ops = n.sets.Stats().Operations + n.ipvs.Stats().Operations
	}
	b.ReportMetric(float64(appliers.Milliseconds())/float64(b.N), "appliers-ms/op")
	b.ReportMetric(float64(tools.Milliseconds())/float64(b.N), "tools-ms/op")
	b.ReportMetric(float64(appliers)/float64(tools), "appliers/tools")
	b.ReportMetric(float64(ops), "writes/apply")
}

// BenchmarkIPVSOneEndpointChange applies, at 1 000 services × 10
// endpoints, plans that differ in one endpoint of one service, alternately,
// with the ipset and IPVS appliers, and reports the kernel writes of each
// Apply (target: at most 10).
func BenchmarkIPVSOneEndpointChange(b *testing.B) {
	requireIPVS(b)
	plans := [2]*translate.Plan{compileBench(b, false), compileBench(b, true)}
	n := newIPVSNode(b, netnsPath(netnstest.NewNS(b)))
	n.applySetsAndIPVS(b, plans[0])
	i, ops := 0, 0
	for b.Loop() {
		i++
		n.applySetsAndIPVS(b, plans[i%2])
		ops += n.lastOps()
	}
	b.ReportMetric(float64(ops)/float64(b.N), "writes/op")
}

// TestGuestIPVSOneEndpointChange checks the target for the
// appliers: at 1 000 services × 10 endpoints, changing one endpoint's
// address takes at most 10 kernel writes (the real server added and
// deleted, the local endpoint's KUBE-LOOP-BACK member added and deleted),
// and leaves the kernel holding the new plan; applying it again writes
// nothing.
func TestGuestIPVSOneEndpointChange(t *testing.T) {
	requireIPVS(t)
	before, after := compileBench(t, false), compileBench(t, true)
	ns := netnstest.NewNS(t)
	n := newIPVSNode(t, netnsPath(ns))
	n.applySetsAndIPVS(t, before)
	n.applySetsAndIPVS(t, after)
	if ops := n.lastOps(); ops == 0 || ops > 10 {
		t.Errorf("one changed endpoint at %d services took %d kernel writes (ipset %+v, ipvs %+v), want 1 to 10",
			benchServices, ops, n.sets.Stats(), n.ipvs.Stats())
	}
	wantVS := after.IPVS.VirtualServer(ipvs.TCP, netip.MustParseAddrPort("10.96.0.1:80"))
	got := realWeights(t, ns, wantVS.Addr)
	want := map[netip.AddrPort]int{}
	for _, r := range wantVS.RealServers {
		want[r.Addr] = r.Weight
	}
	if !maps.Equal(got, want) {
		t.Errorf("real servers of %s after the change = %v, want %v", wantVS.Addr, got, want)
	}
	if _, err := ns.Exec(context.Background(), "ipset", "test", "KUBE-LOOP-BACK", "10.244.255.1,tcp:8080,10.244.255.1"); err != nil {
		t.Errorf("KUBE-LOOP-BACK lacks the new local endpoint: %v", err)
	}
	n.applySetsAndIPVS(t, after)
	if ops := n.lastOps(); ops != 0 {
		t.Errorf("applying the same plan again took %d kernel writes, want 0", ops)
	}
}
