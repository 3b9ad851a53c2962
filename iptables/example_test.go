package iptables_test

import (
	"context"
	"fmt"

	"github.com/svcplan/svcplan/iptables"
)

// A Fake applies plans like the kernel applier, in memory: it refuses what
// iptables-restore would refuse, leaves other programs' rules alone and
// writes nothing when the plan did not change.
func ExampleFake() {
	ctx := context.Background()
	fake := iptables.NewFake(iptables.IPv4)
	fake.AddForeign(iptables.TableNAT, "PREROUTING", "-m addrtype --dst-type LOCAL -j RETURN")

	svc, _ := iptables.NewChain("KUBE-SVC-WEB",
		[]string{"-p", "tcp", "-m", "tcp", "-j", "DNAT", "--to-destination", "10.244.1.2:8080"})
	services, _ := iptables.NewChain("KUBE-SERVICES",
		[]string{"-d", "10.96.0.10/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "KUBE-SVC-WEB"})
	plan := &iptables.Plan{
		Tables: []iptables.TableChains{{Table: iptables.TableNAT, Chains: []iptables.Chain{services, svc}}},
		Jumps: []iptables.Jump{{Table: iptables.TableNAT, Chain: "PREROUTING",
			Comment: "kubernetes service portals", Target: "KUBE-SERVICES"}},
	}
	if err := fake.Apply(ctx, plan); err != nil {
		fmt.Println(err)
	}
	if err := fake.Apply(ctx, plan); err != nil {
		fmt.Println(err)
	}
	fmt.Print(fake.Dump())
	fmt.Println("restores:", fake.Restores())

	if err := fake.Cleanup(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Print(fake.Dump())
	// Output:
	// *nat
	// :PREROUTING ACCEPT [0:0]
	// :INPUT ACCEPT [0:0]
	// :OUTPUT ACCEPT [0:0]
	// :POSTROUTING ACCEPT [0:0]
	// :KUBE-SERVICES - [0:0]
	// :KUBE-SVC-WEB - [0:0]
	// -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
	// -A PREROUTING -m addrtype --dst-type LOCAL -j RETURN
	// -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-WEB
	// -A KUBE-SVC-WEB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080
	// COMMIT
	// restores: 1
	// *nat
	// :PREROUTING ACCEPT [0:0]
	// :INPUT ACCEPT [0:0]
	// :OUTPUT ACCEPT [0:0]
	// :POSTROUTING ACCEPT [0:0]
	// -A PREROUTING -m addrtype --dst-type LOCAL -j RETURN
	// COMMIT
}
