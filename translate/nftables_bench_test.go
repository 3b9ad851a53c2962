package translate

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkCompileNFTables measures compiling a cluster of ClusterIP
// services with ten endpoints each into nftables plans and rendering them:
// streamed with WriteTo, as an applier feeding nft does, and as one
// String.
func BenchmarkCompileNFTables(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n, 10)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(st, ModeNFTables)
				if err != nil {
					b.Fatal(err)
				}
				for _, np := range p.NFTables {
					if _, err := np.WriteTo(io.Discard); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(fmt.Sprintf("string/services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(st, ModeNFTables)
				if err != nil {
					b.Fatal(err)
				}
				for _, np := range p.NFTables {
					_ = np.String()
				}
			}
		})
	}
}

// BenchmarkCompileNFTablesOnly measures the nftables compiler alone: no
// validation, no rendering.
func BenchmarkCompileNFTablesOnly(b *testing.B) {
	st := benchState(10000, 10)
	o := defaultOptions()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compileNFTables(st, &o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteToNFTables measures rendering alone.
func BenchmarkWriteToNFTables(b *testing.B) {
	p, err := Compile(benchState(10000, 10), ModeNFTables)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, np := range p.NFTables {
			if _, err := np.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	}
}
