package translate

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkCompileIPVS measures compiling a cluster of ClusterIP services
// with ten endpoints each into the IPVS plan: virtual servers, set
// members, addresses and the fixed rules (the target at 10 000
// services: at most 40 ms and 30 MB allocated).
func BenchmarkCompileIPVS(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n, 10)
		b.Run(fmt.Sprintf("services=%d/endpoints=10", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(st, ModeIPVS); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompileIPVSText measures compiling the IPVS plan of 10 000
// services with ten endpoints each and rendering all its texts, as
// "svcplan plan --mode ipvs" prints them: the ipsets, the virtual servers,
// the kube-ipvs0 addresses and the fixed iptables rules.
func BenchmarkCompileIPVSText(b *testing.B) {
	st := benchState(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		p, err := Compile(st, ModeIPVS)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.IPSets.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		if _, err := p.IPVS.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		if _, err := io.WriteString(io.Discard, p.IPVS.AddressText()); err != nil {
			b.Fatal(err)
		}
		for _, ip := range p.IPTables {
			if _, err := ip.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkWriteToIPVS measures rendering the ipset and ipvsadm texts of
// 10 000 services with ten endpoints each.
func BenchmarkWriteToIPVS(b *testing.B) {
	p, err := Compile(benchState(10000, 10), ModeIPVS)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.IPSets.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		if _, err := p.IPVS.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
