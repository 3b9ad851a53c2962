package proxy

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchState returns n ClusterIP services with one TCP port and 10 ready
// endpoints each, the shape of the compile benchmarks.
func benchState(n int) *State {
	st := &State{Node: Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		Config: Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	for i := range n {
		svc := Service{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})},
			Ports:      []ServicePort{{Name: "http", Port: 80}}}
		for j := range 10 {
			k := i*10 + j
			svc.Endpoints = append(svc.Endpoints, Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}),
				Ready: true, NodeName: "node-b", Ports: []EndpointPort{{Name: "http", Port: 8080}}})
		}
		st.Services = append(st.Services, svc)
	}
	return st
}

func BenchmarkValidate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := st.Validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSelectEndpoints(b *testing.B) {
	st := benchState(10000)
	b.ReportAllocs()
	var sel Selector
	for b.Loop() {
		for i := range st.Services {
			s := &st.Services[i]
			sel.Select(st, s, &s.Ports[0], false)
		}
	}
}
