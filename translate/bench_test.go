package translate

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/svcplan/svcplan/proxy"
)

// benchState returns a state with n ClusterIP services, each with one TCP
// port and eps ready endpoints, every pod IP distinct.
func benchState(n, eps int) *proxy.State {
	st := &proxy.State{
		Node: proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.10")}},
		Config: proxy.Config{
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		},
		Services: make([]proxy.Service, n),
	}
	pod := uint32(10<<24 | 1<<16)
	for i := range st.Services {
		svc := &st.Services[i]
		svc.Namespace = fmt.Sprintf("ns%d", i%100)
		svc.Name = fmt.Sprintf("svc%d", i)
		vip := uint32(172<<24|30<<16) + uint32(i)
		svc.ClusterIPs = []netip.Addr{addr4(vip)}
		svc.Ports = []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, TargetPort: 8080}}
		svc.Endpoints = make([]proxy.Endpoint, eps)
		for j := range svc.Endpoints {
			pod++
			svc.Endpoints[j] = proxy.Endpoint{
				Addr:     addr4(pod),
				Ports:    []proxy.EndpointPort{{Name: "http", Port: 8080}},
				Ready:    true,
				Serving:  true,
				NodeName: fmt.Sprintf("node-%d", j%7),
			}
		}
	}
	return st
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BenchmarkCompileIPTables measures compiling a cluster of ClusterIP
// services with ten endpoints each and rendering the plan as the applier
// does: streamed with WriteTo, and as one String.
func BenchmarkCompileIPTables(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n, 10)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(st, ModeIPTables)
				if err != nil {
					b.Fatal(err)
				}
				for _, ip := range p.IPTables {
					if _, err := ip.WriteTo(io.Discard); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(fmt.Sprintf("string/services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(st, ModeIPTables)
				if err != nil {
					b.Fatal(err)
				}
				for _, ip := range p.IPTables {
					_ = ip.String()
				}
			}
		})
	}
}

// BenchmarkCompileOnly measures Compile alone, without rendering.
func BenchmarkCompileOnly(b *testing.B) {
	st := benchState(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(st, ModeIPTables); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate measures the validation Compile starts with, to tell
// its share of the cost.
func BenchmarkValidate(b *testing.B) {
	st := benchState(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileUnvalidated measures the iptables compiler alone: no
// validation, no rendering.
func BenchmarkCompileUnvalidated(b *testing.B) {
	st := benchState(10000, 10)
	o := defaultOptions()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compileIPTables(st, &o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteToIPTables measures rendering alone, as the applier
// streams a plan to iptables-restore.
func BenchmarkWriteToIPTables(b *testing.B) {
	p, err := Compile(benchState(10000, 10), ModeIPTables)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, ip := range p.IPTables {
			if _, err := ip.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIncremental measures the Compiler recompiling a cluster of
// 10 000 services with ten endpoints each after one endpoint changed: each
// iteration compiles the other of two states that differ in one
// endpoint's readiness, and renders nothing.
func BenchmarkIncremental(b *testing.B) {
	for _, mode := range []Mode{ModeNFTables, ModeIPTables} {
		b.Run(string(mode), func(b *testing.B) {
			st := benchState(10000, 10)
			other := *st
			other.Services = slices.Clone(st.Services)
			svc := &other.Services[4321]
			svc.Endpoints = slices.Clone(svc.Endpoints)
			svc.Endpoints[7].Ready = false
			states := [2]*proxy.State{st, &other}
			c := NewCompiler(mode)
			if _, err := c.Compile(st); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Compile(states[i%2]); err != nil {
					b.Fatal(err)
				}
			}
			if c.incrementals != i {
				b.Fatalf("%d of %d compiles incremental", c.incrementals, i)
			}
		})
	}
}
