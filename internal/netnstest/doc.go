// Package netnstest builds, for one kernel test, a small network of Linux
// network namespaces joined by veth pairs, runs real TCP and UDP backend
// servers in it, sends real packets, and reports where they arrived. The
// kernel tests of every proxy mode use it: they apply a compiled plan in
// the node namespace and check, by traffic, that services reach the
// endpoints the model ([github.com/svcplan/svcplan/proxy]) says they should.
//
// # Topology
//
// [New] builds this (default addresses; [WithLAN] and [WithPodCIDR] change
// them, [WithoutIPv6] drops IPv6):
//
//	 client                      node                           pods
//	┌────────────┐ eth0   eth0 ┌──────────────────┐ vl2   eth0 ┌──────────────────┐
//	│ 10.0.0.2   ├─────────────┤ 10.0.0.10        ├────────────┤ 10.244.1.2/32    │ AddPod(t, Local)
//	│ fd00::2    │    LAN      │ fd00::10         │ vl3        │ fd00:244:1::2    │
//	│ default →  │             │ ip_forward=1     ├──── ...    └──────────────────┘
//	│   node     │             │ route_localnet=1 │ vr2   eth0 ┌──────────────────┐
//	└────────────┘             │ proxy rules here ├────────────┤ 10.244.2.2/32    │ AddPod(t, Remote)
//	                           └──────────────────┘            │ fd00:244:2::2    │
//	                                                           └──────────────────┘
//
// The node namespace is the one a test applies iptables, IPVS or nftables
// rules in. It forwards IPv4 and IPv6 and accepts 127.0.0.0/8 as a
// destination on every link (route_localnet), so NodePorts on localhost can
// be tested; it sends no ICMP redirects. Its eth0 faces the client
// namespace, a host on the same LAN whose default routes lead to the node,
// so that traffic to any address (cluster IPs, external IPs, load balancer
// IPs) reaches the node. The node's own default routes lead to the client,
// as to an upstream router: that makes the node's locally generated traffic
// to service addresses routable, so it reaches the OUTPUT hook and its
// DNAT. The client does not forward, so traffic to an address that nobody
// has is dropped there (a dial times out) rather than looping.
//
// Each pod is a namespace of its own behind its own veth pair, as with a
// point-to-point CNI plugin: the pod has a host address (/32, /128) and
// default routes to the node (IPv4 through the pod CIDR's first address,
// which the node holds on every pod link, IPv6 through fe80::1), and the
// node routes each pod address to its link. Because every pod is its own
// namespace, a reply between two pods always crosses the node, so a pod
// reaching another pod through a service sees its traffic un-NATed, as in
// a real cluster. [Local] pods use the node's pod CIDR (10.244.1.0/24,
// fd00:244:1::/64), [Remote] pods another node's (10.244.2.0/24,
// fd00:244:2::/64); the node reaches both directly, so remote endpoints
// differ from local ones only by address, which is what the proxy's
// masquerade and traffic-policy rules look at. IPv6 addresses are added
// with nodad, so they are usable at once.
//
// [Topology.AddClientAddr] gives the client more source addresses (say one
// inside and one outside a load balancer's source ranges) and routes them
// back from the node; [NS.Route] and [NS.AddAddr] add routes and addresses
// to any namespace. [NewNS] makes a lone namespace, for tests that apply
// rules and read them back without traffic.
//
// # Servers and traffic
//
// [NS.Serve] (or [Topology.Serve], which finds the namespace holding an
// address) starts a TCP or UDP server that names itself and the source it
// sees: TCP connections get "backend=ADDR:PORT peer=ADDR:PORT\n" and then an
// echo of what they send; UDP datagrams get that line followed by their
// payload. [NS.Dial], from the client, the node (locally generated traffic)
// or a pod (hairpin), returns a [Reply] with the backend, the peer (the
// source after any masquerade), and an error that tells a refusal
// ([Reply.Refused]: TCP reset or ICMP port unreachable) from an ICMP
// unreachable ([Reply.Unreachable]) and from silence ([Reply.TimedOut]:
// DROP; a dial waits [DefaultTimeout], 3 s, unless given a [Timeout], and
// one second suits an expected drop). [Spread], [Counts] and
// [ChiSquareUniform] check that a service balances evenly.
//
// # Isolation
//
// Namespace names are "svp-" followed by 8 random hex digits and a role
// (svp-1a2b3c4d-node, -client, -l2, -r2), unique across test processes
// running at once; a crashed test leaves only namespaces with that prefix.
// Every veth is created inside the node namespace with its peer placed
// straight into the other namespace, and every address, route and sysctl
// is set inside a test namespace: the host namespace is never changed.
// Everything is removed in t.Cleanup, servers before namespaces, and no
// goroutine outlives it. When a test fails, the teardown logs the node's
// addresses, routes and rules.
//
// New and NewNS need root, Linux and ip (iproute2). Without them they skip
// the test with the reason, unless SVCPLAN_REQUIRE_KERNEL=1, which makes
// them fail it; [Require] applies the same rule to other tools.
//
// Code runs inside a namespace with [NS.Do], which switches one locked OS
// thread (sockets made there keep the namespace; commands started there
// run in it), or with [NS.Exec], which runs a command through
// `ip netns exec`.
package netnstest
