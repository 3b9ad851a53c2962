// Package nftables is svcplan's nftables vocabulary: a [Plan] of one
// table's sets, verdict maps and chains, its text form (exactly the input
// of "nft -f"), a typed form of rules ([Rule], [ParseRule]), validation
// against what nft and the kernel refuse ([Plan.Validate]), a packet
// [Tracer] over a plan, and the appliers: on Linux the netlink one
// (google/nftables, one atomic batch per Apply, partial sync, drift
// repair), and a [Fake] that checks batches as the kernel would.
//
// It sits between translate, which compiles a proxy model into a Plan in
// kube-proxy's nftables layout, and the kernel. It knows tables, chains,
// sets and rules, not Kubernetes, and imports nothing else from svcplan
// but internal/netnsfd, which opens the network namespace of an apply the
// same way for every backend.
//
// # Data an applier walks
//
// A Plan is plain data, meant to be walked by an applier that programs
// the kernel over netlink in one batch:
//
//   - [Plan.Table] names the table (family "ip" or "ip6", name, comment).
//   - [Plan.Sets] are the sets and verdict maps: name, key types
//     ([DataType], concatenated in the order address, protocol, port),
//     value type (TypeVerdict for a map), flags, timeout, comment, and
//     typed elements ([Element]: address, protocol, port, verdict
//     [Action], comment). The applier encodes each key part as the kernel
//     stores it (4 or 16 address bytes, one protocol byte, two port bytes
//     in network order, each padded to 4 bytes in a concatenation).
//   - [Plan.Chains] are the chains, in order: a base chain carries a
//     [BaseChain] (type, hook, numeric priority; policy accept), a regular
//     chain none. Declare every chain before adding rules, since rules and
//     map elements refer to chains by name.
//
// A rule is stored as its nft text, one line per rule ([Chain.Rules]), so
// that a plan costs about as much memory as its text and renders by
// streaming; [Chain.ParsedRules] and [ParseRule] give the typed form, a
// list of [Expr] values evaluated left to right. The vocabulary is closed
// and small, and each expression maps onto a few kernel expressions:
//
//	CTState     ct state new                          ct load + bitwise + cmp
//	AddrMatch   ip saddr != 10.0.0.0/8, { a , b }     payload + cmp, or an anonymous interval set lookup
//	AddrInSet   ip daddr @cluster-ips                 payload + lookup
//	FibLocal    fib saddr type local                  fib (result type) + cmp
//	L4Proto     meta l4proto tcp                      meta + cmp
//	DPort       tcp dport 80                          meta l4proto + cmp, payload + cmp
//	MarkMatch   mark and 0x4000 == 0                  meta mark + bitwise + cmp
//	MarkSet     mark set mark or 0x4000               meta mark + bitwise + meta set
//	VMap        ip daddr . meta l4proto . th dport vmap @service-ips
//	                                                  payload/meta loads into consecutive registers + lookup (verdict)
//	Numgen      numgen random mod 2 vmap { 0 : goto a , 1 : goto b }
//	                                                  numgen + anonymous verdict map lookup
//	SetUpdate   update @affinity-x { ip saddr }       payload + dynset update
//	DNAT        dnat to 10.0.0.1:80                   immediate + nat
//	Masquerade  masquerade fully-random               masq
//	Reject      reject                                reject
//	Action      jump x, goto x, drop, accept, return  verdict
//
// Text and typed form cannot disagree: the text is the plan's, the typed
// form is parsed from it, and [Rule.String] writes the same text back
// (tests check the round trip over every compiled rule).
//
// # Text
//
// [Plan.WriteTo] writes "nft -f" input that replaces the table as a whole,
// in one transaction: "add table", "delete table", "add table", then the
// sets, chains, rules and elements, each as one "add" command in
// knftables' spelling (as kube-proxy's tests print them). It is idempotent:
// feeding it twice leaves the same table. Replacing the table empties the
// dynamic affinity sets; an applier that wants to keep them diffs the
// plan's data against the kernel instead. Priorities are written as
// numbers (-110, not "dstnat-10", which nft 1.0.6 refuses in "add chain").
//
// # Tracing
//
// A [Tracer] follows the first packet of a connection through the base
// chains of each hook, in priority order, as the kernel would: maps are
// looked up, numgen splits the packet into equally likely branches, "fib
// ... type local" consults the host's addresses, dnat and masquerade are
// recorded, and drop and reject end the walk. Its [Packet], [Outcome] and
// [Result] have the shape of the iptables tracer's, so that tests hold
// both modes to the same reference answer.
package nftables
