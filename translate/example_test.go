package translate_test

import (
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func ExampleCompile() {
	st := &proxy.State{
		Node:   proxy.Node{Name: "node1", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		Services: []proxy.Service{{
			Namespace:  "ns1",
			Name:       "svc1",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.41")},
			Ports:      []proxy.ServicePort{{Name: "p80", Port: 80}},
			Endpoints: []proxy.Endpoint{
				{Addr: netip.MustParseAddr("10.180.0.1"), Ports: []proxy.EndpointPort{{Name: "p80", Port: 80}}, Ready: true},
				{Addr: netip.MustParseAddr("10.180.0.2"), Ports: []proxy.EndpointPort{{Name: "p80", Port: 80}}, Ready: true},
			},
		}},
	}
	plan, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		fmt.Println(err)
		return
	}
	svc := translate.ServicePortChainName(translate.PrefixServiceCluster, "ns1/svc1:p80", "tcp")
	for _, r := range plan.IPTables[0].Chain(iptables.TableNAT, svc).Rules() {
		fmt.Println("-A", svc, r)
	}
	// Output:
	// -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
	// -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
	// -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-LXVODXWDISEETFEF
}

func ExampleServicePortChainName() {
	fmt.Println(translate.ServicePortChainName(translate.PrefixServiceCluster, "default/kubernetes:https", "TCP"))
	fmt.Println(translate.EndpointChainName("ns1/svc1:p80", "tcp", "10.180.0.1:80"))
	// Output:
	// KUBE-SVC-NPX46M4PTMTKRN6Y
	// KUBE-SEP-SXIVWICOYRO3J4NJ
}
