package nftables_test

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// The benchmarks here need root, nft and SVCPLAN_BENCH=1 (they make
// tables of hundreds of thousands of rules in a fresh namespace). Run
//
//	SVCPLAN_BENCH=1 go test -run '^$' -bench 'Apply' -benchtime 3x ./nftables/
//
// BenchmarkApplyFull compares a full apply over netlink with "nft -f" of
// the same plan's text; BenchmarkApplyPartial measures the partial batch
// of one endpoint change. A full apply at 10 000 services takes minutes,
// most of it in the kernel, which walks the whole transaction for each
// anonymous set a rule binds (one numgen map per service), nft -f alike.

const benchEnv = "SVCPLAN_BENCH"

func requireBench(b *testing.B) {
	b.Helper()
	if os.Getenv(benchEnv) != "1" {
		b.Skipf("set %s=1 to run the nftables kernel benchmarks", benchEnv)
	}
	requireNFT(b)
}

// benchState returns a cluster of n ClusterIP services with eps endpoints
// each; endpoint j of service i is at 10.x.y.z, moved by one when bump
// is i (a one-endpoint change when bump is 0; -1 for none).
func benchState(n, eps, bump int) *proxy.State {
	st := &proxy.State{
		Node:     proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.10")}},
		Config:   proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		Services: make([]proxy.Service, n),
	}
	pod := uint32(10<<24 | 1<<16)
	for i := range st.Services {
		svc := &st.Services[i]
		svc.Namespace, svc.Name = fmt.Sprintf("ns%d", i%100), fmt.Sprintf("svc%d", i)
		svc.ClusterIPs = []netip.Addr{addr4(172<<24 | 30<<16 + uint32(i))}
		svc.Ports = []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, TargetPort: 8080}}
		svc.Endpoints = make([]proxy.Endpoint, eps)
		for j := range svc.Endpoints {
			pod++
			a := pod
			if i == bump && j == 0 {
				a = 11<<24 | 1
			}
			svc.Endpoints[j] = proxy.Endpoint{Addr: addr4(a), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}},
				Ready: true, Serving: true, NodeName: fmt.Sprintf("node-%d", j%7)}
		}
	}
	return st
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BenchmarkApplyFull writes a table of 1 000 or 10 000 services with 10
// endpoints each from scratch, over netlink and with nft -f.
func BenchmarkApplyFull(b *testing.B) {
	requireBench(b)
	for _, n := range []int{1000, 10000} {
		p := compile(b, benchState(n, 10, -1))[0]
		text := p.String()
		ns := netnstest.NewNS(b)
		b.Run(fmt.Sprintf("services=%d/netlink", n), func(b *testing.B) {
			var msgs int
			for b.Loop() {
				k := newKernel(b, ns)
				if err := k.Apply(b.Context(), p); err != nil {
					b.Fatal(err)
				}
				msgs = k.Stats().Messages
			}
			b.ReportMetric(float64(msgs), "messages")
		})
		b.Run(fmt.Sprintf("services=%d/nft-f", n), func(b *testing.B) {
			for b.Loop() {
				if out, err := nftTimeout(ns, 2*time.Hour, text, "-f", "-"); err != nil {
					b.Fatalf("nft -f: %v\n%s", err, out)
				}
			}
			b.ReportMetric(float64(len(text)), "bytes")
		})
	}
}

// BenchmarkApplyPartial applies, to a table of 10 000 services with 10
// endpoints each, the partial batch of one endpoint change, back and
// forth (the service chain flushed and refilled, the new endpoint chain
// added, the old one flushed and deleted: about ten messages). Its other
// sub-benchmarks show where the time goes, with one-message batches sent
// to the same table with google/nftables directly:
//
//   - commit-validating: add one "accept" rule to a chain of its own.
//     Any new rule holding a verdict, a verdict map, dnat or masquerade
//     (every endpoint change adds some) makes the kernel re-validate the
//     whole table on commit (nft_table_validate walks every chain and
//     every verdict-map element reachable from the base chains), so this
//     is the floor for a partial batch of this table.
//   - commit-plain: add one "counter" rule, which needs no validation: the
//     cost of a commit as such.
func BenchmarkApplyPartial(b *testing.B) {
	requireBench(b)
	plans := [2]*nftables.Plan{compile(b, benchState(10000, 10, -1))[0], compile(b, benchState(10000, 10, 0))[0]}
	ns := netnstest.NewNS(b)
	k := newKernel(b, ns)
	if err := k.Apply(b.Context(), plans[0]); err != nil {
		b.Fatal(err)
	}
	b.Run("netlink", func(b *testing.B) {
		before := k.Stats()
		i := 0
		for b.Loop() {
			i++
			if err := k.Apply(b.Context(), plans[i%2]); err != nil {
				b.Fatal(err)
			}
		}
		s := k.Stats()
		if s.FullBatches != before.FullBatches || s.Verifications != before.Verifications {
			b.Errorf("partial applies took %d full batches and %d verifications", s.FullBatches-before.FullBatches, s.Verifications-before.Verifications)
		}
		b.ReportMetric(float64(s.Messages-before.Messages)/float64(i), "messages/op")
	})
	b.Run("commit-validating", func(b *testing.B) { benchOneRule(b, ns, &expr.Verdict{Kind: expr.VerdictAccept}) })
	b.Run("commit-plain", func(b *testing.B) { benchOneRule(b, ns, &expr.Counter{}) })
}

// benchOneRule commits, per iteration, a batch that flushes a chain of
// its own in table ip kube-proxy of ns and adds one rule of e to it.
func benchOneRule(b *testing.B, ns *netnstest.NS, e expr.Any) {
	f, err := os.Open(netnsPath(ns))
	if err != nil {
		b.Fatal(err)
	}
	// f stays referenced until the end, so its descriptor stays the
	// namespace's for every connection made on it.
	defer f.Close()
	conn, err := gnft.New(gnft.WithNetNSFd(int(f.Fd())))
	if err != nil {
		b.Fatal(err)
	}
	t := &gnft.Table{Name: nftables.DefaultTableName, Family: gnft.TableFamilyIPv4}
	c := conn.AddChain(&gnft.Chain{Table: t, Name: "bench-one-rule"})
	if err := conn.Flush(); err != nil {
		b.Fatalf("add chain: %v", err)
	}
	for b.Loop() {
		conn.FlushChain(c)
		conn.AddRule(&gnft.Rule{Table: t, Chain: c, Exprs: []expr.Any{e}})
		if err := conn.Flush(); err != nil {
			b.Fatalf("commit one rule: %v", err)
		}
	}
	conn.FlushChain(c)
	conn.DelChain(c)
	if err := conn.Flush(); err != nil {
		b.Fatalf("delete chain: %v", err)
	}
}
