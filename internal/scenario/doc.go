// Package scenario is the shared table of real-traffic kernel tests of
// svcplan's proxy modes. Each [Scenario] builds, in a fresh
// [netnstest.Topology], the pods and the [proxy.State] of node "node-a"
// for one feature (cluster IPs, NodePorts, external IPs, load balancer
// source ranges, ClientIP affinity, even balancing, externalTrafficPolicy
// Local, hairpin traffic, services without endpoints, UDP, IPv6, an
// endpoint change under an open connection), lets the [Mode] under test
// apply it in the node namespace, and sends real TCP and UDP traffic.
//
// Every connection is checked twice: against what kube-proxy does (the
// scenario's own [Want]: which backends, whether the source is
// masqueraded, refusal or silence), and against the reference model,
// [proxy.Resolve] on the same State and packet ([Env.CheckModel]), which
// must predict a forward to the backend observed (with nonzero
// probability and the observed masquerade), a drop for a timeout and a
// reject for a refusal. That ties the kernel to the model that the
// tracers of every compiled plan are tested against.
//
// The scenarios do not know the mode: a mode's kernel test implements
// [Mode] (compile the State, apply the plan in the node namespace) and
// calls [Run], which runs every scenario as a parallel subtest. The
// iptables mode's runner is in this package's tests; the IPVS, nftables
// and userspace modes plug in the same way.
//
// Like netnstest, the scenarios need root, Linux and the mode's tools;
// without them they skip, and SVCPLAN_REQUIRE_KERNEL=1 makes them fail.
package scenario
