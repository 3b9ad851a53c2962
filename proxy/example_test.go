package proxy_test

import (
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/proxy"
)

func ExampleResolve() {
	st := &proxy.State{
		Node: proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		Services: []proxy.Service{{
			Namespace:  "default",
			Name:       "web",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")},
			Ports:      []proxy.ServicePort{{Name: "http", Port: 80}},
			Endpoints: []proxy.Endpoint{
				{Addr: netip.MustParseAddr("10.244.1.2"), Ready: true, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}},
				{Addr: netip.MustParseAddr("10.244.2.2"), Ready: true, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}},
				{Addr: netip.MustParseAddr("10.244.2.3"), Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}}, // not ready
			},
		}},
	}
	if err := st.Validate(); err != nil {
		panic(err)
	}
	a := proxy.Resolve(st, proxy.Packet{
		Src: netip.MustParseAddr("10.244.1.9"),
		Dst: netip.MustParseAddrPort("10.96.0.20:80"),
	})
	fmt.Println(a.Verdict, a.ServicePort)
	for _, c := range a.Choices {
		fmt.Printf("%s %.2f masquerade=%v\n", c.Endpoint, c.Probability, c.Masquerade)
	}
	// Output:
	// forward default/web:http
	// 10.244.1.2:8080 0.50 masquerade=false
	// 10.244.2.2:8080 0.50 masquerade=false
}

func ExampleState_Validate() {
	st := &proxy.State{Services: []proxy.Service{{
		Namespace: "default",
		Name:      "web",
		Type:      proxy.ServiceTypeNodePort,
		Ports:     []proxy.ServicePort{{Name: "http", Port: 80, NodePort: 99999}},
	}}}
	fmt.Println(st.Validate())
	// Output:
	// services[default/web].ports[http].nodePort: 99999 out of range 30000-32767
}
