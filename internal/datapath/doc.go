// Package datapath measures what a proxy mode's rules cost a packet: the
// time a new TCP connection takes to be set up (SYN out, SYN/ACK back)
// through the node's DNAT to a service, as the number of services grows.
//
// [Cluster] describes the synthetic cluster the benchmarks compile
// ([github.com/svcplan/svcplan/translate]) and apply with the real
// appliers ([github.com/svcplan/svcplan/nftables] and
// [github.com/svcplan/svcplan/iptables]) in the node namespace of a
// [github.com/svcplan/svcplan/internal/netnstest] topology: many ClusterIP
// services whose endpoints are addresses nobody holds, and last, in the
// order every mode's plan lists services, the measured one, whose only
// endpoint is a real server in a pod. In iptables mode the first packet of
// a connection to the last service walks every service's dispatch rule
// before its own; in nftables mode it takes one verdict-map lookup.
//
// [Prober] opens the connections: each from a source port it has not used
// recently, so that every sample is a new conntrack entry whose first
// packet goes through the nat hooks, and each closed with a reset, so that
// neither side keeps TIME_WAIT state. [Summarize] turns the samples into
// the figures the benchmark reports: mean, median and 99th percentile.
//
// The benchmark itself, BenchmarkFirstPacket, runs only as root with
// SVCPLAN_BENCH=1; hack/bench-datapath.sh runs it, and writes the table
// and plot of docs/BENCHMARKS.md from its output.
package datapath
