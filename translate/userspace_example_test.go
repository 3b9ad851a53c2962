package translate_test

import (
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// ExampleWithUserspacePorts compiles a state in userspace mode twice: the
// second time a service is added, and with the first plan's ports every
// existing listener keeps its proxy port.
func ExampleWithUserspacePorts() {
	svc := func(name, ip string) proxy.Service {
		return proxy.Service{
			Namespace:  "default",
			Name:       name,
			ClusterIPs: []netip.Addr{netip.MustParseAddr(ip)},
			Ports:      []proxy.ServicePort{{Name: "http", Port: 80}},
			Endpoints: []proxy.Endpoint{{Addr: netip.MustParseAddr("10.244.1.2"),
				Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}, Ready: true}},
		}
	}
	st := &proxy.State{
		Node:     proxy.Node{Name: "node1", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}},
		Services: []proxy.Service{svc("web", "10.96.0.10")},
	}
	first, err := translate.Compile(st, translate.ModeUserspace)
	if err != nil {
		fmt.Println(err)
		return
	}
	st.Services = append(st.Services, svc("api", "10.96.0.20"))
	second, err := translate.Compile(st, translate.ModeUserspace, translate.WithUserspacePorts(first.Userspace.Ports()))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(second.Userspace)
	for _, r := range second.IPTables[0].Chain(iptables.TableNAT, "KUBE-PORTALS-CONTAINER").Rules() {
		fmt.Println("-A KUBE-PORTALS-CONTAINER", r)
	}
	// Output:
	// LISTENER          PROTOCOL  ADDRESS        AFFINITY  UDP IDLE  BACKENDS
	// default/api:http  tcp       0.0.0.0:20001  -         -         10.244.1.2:8080
	// default/web:http  tcp       0.0.0.0:20000  -         -         10.244.1.2:8080
	// -A KUBE-PORTALS-CONTAINER -m comment --comment "default/api:http" -p tcp -m tcp -d 10.96.0.20/32 --dport 80 -j REDIRECT --to-ports 20001
	// -A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp -d 10.96.0.10/32 --dport 80 -j REDIRECT --to-ports 20000
}
