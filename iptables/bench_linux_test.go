package iptables

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// The benchmarks below apply kube-proxy-shaped plans to real kernels in
// fresh namespaces. They take minutes, so they run only with
// SVCPLAN_BENCH=1:
//
//	SVCPLAN_BENCH=1 go test -run '^$' -bench 'Kernel|RawRestore' -benchtime 1x ./iptables/
//
// (use -benchtime 20x for the partial and no-op ones).

// ktRequireBench skips b unless SVCPLAN_BENCH=1 and the kernel tools are
// there.
func ktRequireBench(b *testing.B, backend Backend) {
	b.Helper()
	if os.Getenv("SVCPLAN_BENCH") != "1" {
		b.Skip("kernel benchmark skipped: set SVCPLAN_BENCH=1 to run it (takes minutes)")
	}
	ktRequireKernel(b, backend, IPv4)
}

// ktHashName returns a kube-proxy style chain name: prefix and 16
// characters of base32(sha256(key)).
func ktHashName(prefix, key string) string {
	h := sha256.Sum256([]byte(key))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// ktSyntheticPlan returns a plan shaped like kube-proxy's for services
// ClusterIP services of endpoints endpoints each: per service a KUBE-SVC
// chain (a masquerade rule and one statistic rule per endpoint) and per
// endpoint a KUBE-SEP chain of two rules, with the dispatch rules in
// KUBE-SERVICES. A variant other than 0 moves the first endpoint of
// service 0 to another address, as an endpoint update does.
func ktSyntheticPlan(tb testing.TB, services, endpoints, variant int) *Plan {
	tb.Helper()
	nat := []Chain{}
	b := NewChainBuilder("KUBE-SERVICES")
	for i := range services {
		svc := "ns/svc-" + strconv.Itoa(i) + ":http"
		b.Rule("-d", ktServiceIP(i)+"/32", "-p", "tcp", "-m", "comment", "--comment", svc+" cluster IP",
			"-m", "tcp", "--dport", "80", "-j", ktHashName("KUBE-SVC-", svc+"tcp"))
	}
	b.Rule("-m", "comment", "--comment", "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
		"-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS")
	nat = append(nat, ktBuilt(tb, b),
		ktMustChain(tb, "KUBE-NODEPORTS"),
		ktMustChain(tb, "KUBE-MARK-MASQ", []string{"-j", "MARK", "--or-mark", "0x4000"}),
		ktMustChain(tb, "KUBE-POSTROUTING",
			[]string{"-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"},
			[]string{"-j", "MARK", "--xor-mark", "0x4000"},
			[]string{"-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE", "--random-fully"}))
	sepB := NewChainBuilder("X")
	for i := range services {
		svc := "ns/svc-" + strconv.Itoa(i) + ":http"
		name := ktHashName("KUBE-SVC-", svc+"tcp")
		b.Reset(name)
		b.Rule("!", "-s", "10.0.0.0/8", "-d", ktServiceIP(i)+"/32", "-p", "tcp", "-m", "comment", "--comment", svc+" cluster IP",
			"-m", "tcp", "--dport", "80", "-j", "KUBE-MARK-MASQ")
		var seps []Chain
		for j := range endpoints {
			ep := ktEndpointIP(i, j)
			if i == 0 && j == 0 && variant != 0 {
				ep = fmt.Sprintf("10.255.%d.%d", variant/250, variant%250+1)
			}
			sep := ktHashName("KUBE-SEP-", svc+"tcp"+ep+":8080")
			args := []string{"-m", "comment", "--comment", svc + " -> " + ep + ":8080"}
			if j < endpoints-1 {
				args = append(args, "-m", "statistic", "--mode", "random", "--probability",
					strconv.FormatFloat(1/float64(endpoints-j), 'f', 10, 64))
			}
			b.Rule(append(args, "-j", sep)...)
			sepB.Reset(sep)
			sepB.Rule("-s", ep+"/32", "-m", "comment", "--comment", svc, "-j", "KUBE-MARK-MASQ")
			sepB.Rule("-p", "tcp", "-m", "comment", "--comment", svc, "-m", "tcp", "-j", "DNAT", "--to-destination", ep+":8080")
			seps = append(seps, ktBuilt(tb, sepB))
		}
		nat = append(nat, ktBuilt(tb, b))
		nat = append(nat, seps...)
	}
	filter := []Chain{
		ktMustChain(tb, "KUBE-FORWARD",
			[]string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"},
			[]string{"-m", "comment", "--comment", "kubernetes forwarding rules", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "ACCEPT"}),
	}
	return &Plan{
		Tables: []TableChains{{Table: TableNAT, Chains: nat}, {Table: TableFilter, Chains: filter}},
		Jumps: []Jump{
			{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "POSTROUTING", Comment: "kubernetes postrouting rules", Target: "KUBE-POSTROUTING"},
			{Table: TableFilter, Chain: "FORWARD", Comment: "kubernetes forwarding rules", Target: "KUBE-FORWARD"},
		},
	}
}

func ktServiceIP(i int) string { return fmt.Sprintf("10.96.%d.%d", i/250, i%250+1) }

func ktEndpointIP(i, j int) string {
	n := i*16 + j
	return fmt.Sprintf("10.%d.%d.%d", 128+n/65536, n/256%256, n%256)
}

func ktBuilt(tb testing.TB, b *ChainBuilder) Chain {
	tb.Helper()
	c, err := b.Chain()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

var ktBenchSizes = []int{1000, 10000}

// BenchmarkKernelFullApply applies a plan to an empty namespace.
func BenchmarkKernelFullApply(b *testing.B) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		for _, n := range ktBenchSizes {
			b.Run(fmt.Sprintf("%s/%d", backend, n), func(b *testing.B) {
				ktRequireBench(b, backend)
				p := ktSyntheticPlan(b, n, 10, 0)
				ctx := context.Background()
				for b.Loop() {
					b.StopTimer()
					ns := ktNewTestNS(b)
					k, err := New(IPv4, WithNetNS(ns.path), WithBackend(backend))
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if err := k.Apply(ctx, p); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRawRestore feeds the same plan's text to iptables-restore
// --noflush in an empty namespace, for comparison with
// BenchmarkKernelFullApply.
func BenchmarkRawRestore(b *testing.B) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		for _, n := range ktBenchSizes {
			b.Run(fmt.Sprintf("%s/%d", backend, n), func(b *testing.B) {
				ktRequireBench(b, backend)
				text := []byte(ktSyntheticPlan(b, n, 10, 0).String())
				for b.Loop() {
					b.StopTimer()
					ns := ktNewTestNS(b)
					b.StartTimer()
					cmd := exec.Command("ip", "netns", "exec", ns.name, ktTool(backend, IPv4, "-restore"), "--noflush")
					cmd.Stdin = bytes.NewReader(text)
					if out, err := cmd.CombinedOutput(); err != nil {
						b.Fatalf("restore: %v: %s", err, out)
					}
				}
			})
		}
	}
}

// ktAppliedKernel returns a Kernel in a new namespace holding plan p.
func ktAppliedKernel(b *testing.B, backend Backend, p *Plan) *Kernel {
	ns := ktNewTestNS(b)
	k, err := New(IPv4, WithNetNS(ns.path), WithBackend(backend))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := k.Apply(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: full Apply took %v", time.Since(start))
	return k
}

// BenchmarkKernelPartialApply changes one endpoint of 10 000 services per
// Apply.
func BenchmarkKernelPartialApply(b *testing.B) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		b.Run(string(backend)+"/10000", func(b *testing.B) {
			ktRequireBench(b, backend)
			plans := []*Plan{ktSyntheticPlan(b, 10000, 10, 0), ktSyntheticPlan(b, 10000, 10, 1)}
			k := ktAppliedKernel(b, backend, plans[0])
			ctx := context.Background()
			before := k.Stats()
			i := 0
			for b.Loop() {
				i++
				if err := k.Apply(ctx, plans[i%2]); err != nil {
					b.Fatal(err)
				}
			}
			s := k.Stats()
			b.ReportMetric(float64(s.Restores-before.Restores)/float64(i), "restores/op")
			b.ReportMetric(float64(s.RestoreBytes-before.RestoreBytes)/float64(i), "restore-bytes/op")
			b.ReportMetric(float64(s.FullRestores-before.FullRestores), "full-restores")
		})
	}
}

// BenchmarkKernelNoOpApply applies the same plan of 10 000 services again.
func BenchmarkKernelNoOpApply(b *testing.B) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		b.Run(string(backend)+"/10000", func(b *testing.B) {
			ktRequireBench(b, backend)
			p := ktSyntheticPlan(b, 10000, 10, 0)
			k := ktAppliedKernel(b, backend, p)
			plans := []*Plan{p, ktSyntheticPlanCopy(p)}
			ctx := context.Background()
			before := k.Stats()
			i := 0
			for b.Loop() {
				i++
				if err := k.Apply(ctx, plans[i%2]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(k.Stats().Restores-before.Restores)/float64(i), "restores/op")
		})
	}
}

// ktSyntheticPlanCopy returns a copy of p whose rule text is not shared
// with p, as a compiler makes a new plan each time.
func ktSyntheticPlanCopy(p *Plan) *Plan {
	c := copyPlan(p)
	for i := range c.Tables {
		for j := range c.Tables[i].Chains {
			ch := &c.Tables[i].Chains[j]
			ch.body = string([]byte(ch.body))
		}
	}
	return c
}

// BenchmarkValidate10000 measures Plan.Validate on the 10 000 service plan.
func BenchmarkValidate10000(b *testing.B) {
	p := ktSyntheticPlan(b, 10000, 10, 0)
	for b.Loop() {
		if err := p.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullRestore measures building the restore input of the
// 1 000 and 10 000 service plans' nat table.
func BenchmarkFullRestore(b *testing.B) {
	for _, n := range ktBenchSizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			p := ktSyntheticPlan(b, n, 10, 0)
			var size int
			for b.Loop() {
				in, err := FullRestore(p, TableNAT, RestoreOptions{Canary: "KUBE-PROXY-CANARY"})
				if err != nil {
					b.Fatal(err)
				}
				size = len(in)
			}
			b.SetBytes(int64(size))
		})
	}
}
