package ipvs_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/ipvs"
)

// The apply benchmarks run in the VM, behind SVCPLAN_BENCH=1:
//
//	SVCPLAN_BENCH=1 go test -run TestVMBench -v ./ipvs/
//
// runs BenchmarkApplyFromEmpty there (3 iterations each), whose figures
// appear in the host test's log.

func TestVMBench(t *testing.T) {
	if os.Getenv("SVCPLAN_BENCH") != "1" {
		t.Skip("benchmarks run with SVCPLAN_BENCH=1")
	}
	vmtest.Run(t, vmtest.Config{Run: "^$", Args: []string{"-test.bench=ApplyFromEmpty", "-test.benchtime=3x"}, Timeout: 20 * time.Minute})
}

// benchSets returns the ipsets kube-proxy keeps for plan(n, m): a cluster
// IP member per service and a hairpin member per endpoint.
func benchSets(p *ipvs.Plan) *ipset.Plan {
	cluster := ipset.Set{Name: "KUBE-CLUSTER-IP", Type: ipset.TypeHashIPPort, Family: ipset.IPv4}
	loop := ipset.Set{Name: "KUBE-LOOP-BACK", Type: ipset.TypeHashIPPortIP, Family: ipset.IPv4}
	for _, v := range p.VirtualServers {
		if !v.Addr.Addr().Is4() {
			continue
		}
		cluster.Entries = append(cluster.Entries, ipset.Entry{IP: v.Addr.Addr(), Protocol: ipset.TCP, Port: v.Addr.Port()})
		for _, r := range v.RealServers {
			loop.Entries = append(loop.Entries, ipset.Entry{IP: r.Addr.Addr(), Protocol: ipset.TCP, Port: r.Addr.Port(), IP2: r.Addr.Addr()})
		}
	}
	cluster.Entries = ipset.SortEntries(cluster.Entries)
	loop.Entries = ipset.SortEntries(loop.Entries)
	return &ipset.Plan{Sets: []ipset.Set{cluster, loop}}
}

// BenchmarkApplyFromEmpty applies 1000 services × 10 endpoints (IPVS
// virtual and real servers, the dummy interface and its addresses, the
// two ipsets) into an empty namespace: with the netlink appliers, and
// with the plans' text fed to "ipvsadm -R", "ip -batch" and
// "ipset restore".
func BenchmarkApplyFromEmpty(b *testing.B) {
	vmtest.RequireGuest(b, "TestVMBench")
	netnstest.Require(b, "ip", "ipvsadm", "ipset")
	p := plan(1000, 10)
	sets := benchSets(p)
	ctx := context.Background()
	b.Run("netlink", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			ns := netnstest.NewNS(b)
			path := "/run/netns/" + ns.Name()
			k, err := ipvs.New(ipvs.WithNetNS(path))
			if err != nil {
				b.Fatal(err)
			}
			ks, err := ipset.New(ipset.WithNetNS(path))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := ks.Apply(ctx, sets); err != nil {
				b.Fatal(err)
			}
			if err := k.Apply(ctx, p); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(k.Stats().LastOperations+ks.Stats().LastOperations), "writes/op")
			b.StartTimer()
		}
	})
	b.Run("restore", func(b *testing.B) {
		ipvsText := p.String()
		addrText := p.AddressText() + "link set " + ipvs.DefaultInterface + " up\n"
		setText := sets.String()
		for b.Loop() {
			b.StopTimer()
			ns := netnstest.NewNS(b)
			b.StartTimer()
			for _, c := range []struct {
				in   string
				name string
				args []string
			}{
				{setText, "ipset", []string{"restore"}},
				{addrText, "ip", []string{"-batch", "-"}},
				{ipvsText, "ipvsadm", []string{"-R"}},
			} {
				cmd := ns.Command(ctx, c.name, c.args...)
				cmd.Stdin = strings.NewReader(c.in)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%s: %v\n%s", c.name, err, out)
				}
			}
		}
	})
}
