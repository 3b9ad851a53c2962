// Package userspace is svcplan's userspace proxy mode, the mode
// kube-proxy had first and removed in v1.26: a real TCP and UDP proxy in
// the process, one socket ("listener") per service port, with iptables
// rules ("portals") that send service traffic to it.
//
// It sits where the other backend packages sit: translate compiles a
// proxy.State with translate.ModeUserspace into a [Plan] (the listeners:
// name, protocol, address and proxy port, backends, ClientIP affinity, UDP
// idle timeout) and, beside it, iptables.Plans holding the portal rules.
// The caller applies the iptables plans with the iptables applier and this
// plan with [Proxy.Apply]. Like every backend package it knows sockets,
// not Kubernetes, and imports nothing else from svcplan.
//
// # Traffic
//
//	client ──▶ CLUSTER-IP:PORT ──(nat PREROUTING: REDIRECT --to-ports P)──▶ node:P ─┐
//	node   ──▶ CLUSTER-IP:PORT ──(nat OUTPUT: DNAT NODE-IP:P)───────────▶ node:P ─┤
//	                                                                               ▼
//	                                            Proxy listener P ──(dial)──▶ backend
//
// The backend sees the proxy's connection, from the node: the client's
// address is lost, as it always was in this mode.
//
// # Behaviour
//
// TCP: each accepted connection goes to the backend the listener's
// balancer picks: round robin over the backends in an order shuffled
// whenever the set changes, or, with ClientIP affinity, the backend the
// client address used last if it has not been idle longer than the
// timeout. A backend that does not answer in time is left for the next
// one, with old kube-proxy's timeouts (250 ms, 500 ms, 1 s, 2 s; see
// [WithDialTimeouts]). Bytes are copied with io.Copy between the two
// *net.TCPConn, which Linux does with splice(2), and a half-close by
// either side is passed on to the other. A listener without backends
// resets new connections at once (the portal rules do better: they reject
// such traffic before it reaches the proxy).
//
// UDP: each pair of client address and local address it sends to gets a
// session, with a socket of its own connected to its backend; replies come
// back to the client from the listener's socket, with that local address as
// their source. A session ends after [Listener.UDPIdleTimeout]
// (default [DefaultUDPIdleTimeout], 250 ms) without a datagram either way.
//
// [WithNetNS] makes the proxy listen and dial in another network
// namespace, such as a node or pod namespace a CNI plugin manages.
//
// [Proxy.Apply] changes the listeners in place: backends and timeouts
// are swapped without dropping connections, removed listeners close and
// new ones open; a listener that cannot open does not keep the others
// from it. [Proxy.Close] closes the listeners and lets connections finish
// until its context's deadline. [Proxy.Stats] gives per-listener counters.
package userspace
