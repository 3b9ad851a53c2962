package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// BenchmarkFirstPacket needs root, ip, nft and iptables, and
// SVCPLAN_BENCH=1, because applying 10 000 services takes minutes:
//
//	SVCPLAN_BENCH=1 go test -run '^$' -bench FirstPacket -benchtime 2000x ./internal/datapath/
//
// SVCPLAN_BENCH_SIZES (default "10,1000,10000") lists the cluster sizes.
// Each iteration is one new TCP connection from the client namespace to
// the last service; hack/bench-datapath.sh runs it and draws the plot.

const (
	benchEnv      = "SVCPLAN_BENCH"
	benchSizesEnv = "SVCPLAN_BENCH_SIZES"
	// backendPort is the port the measured service's server listens on.
	backendPort = 8080
	// connectTimeout bounds one sample; a SYN retransmission (1 s) would
	// already be a failure.
	connectTimeout = 2 * time.Second
)

// benchSizes returns the cluster sizes to measure.
func benchSizes(b *testing.B) []int {
	text := os.Getenv(benchSizesEnv)
	if text == "" {
		return []int{10, 1000, 10000}
	}
	var sizes []int
	for _, f := range strings.Split(text, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > MaxServices {
			b.Fatalf("%s=%q: %q is not a number of services 1..%d", benchSizesEnv, text, f, MaxServices)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// mode applies a compiled plan to the node namespace of a topology, with
// the mode's real applier.
type mode struct {
	name string
	// tools are what the mode's applier needs on PATH.
	tools []string
	// newApplier returns the function that applies plans in the namespace
	// at path; it is called once per topology.
	newApplier func(path string) (func(context.Context, *translate.Plan) error, error)
}

// modes returns the modes compared.
func modes() []mode {
	return []mode{
		{
			name:  "nftables",
			tools: []string{"nft"},
			newApplier: func(path string) (func(context.Context, *translate.Plan) error, error) {
				// A new Kernel per plan sends each size as one full batch,
				// which the kernel takes far faster than a partial batch
				// adding thousands of services.
				if _, err := nftables.New(nftables.WithNetNS(path)); err != nil {
					return nil, err
				}
				return func(ctx context.Context, p *translate.Plan) error {
					k, err := nftables.New(nftables.WithNetNS(path))
					if err != nil {
						return err
					}
					return k.Apply(ctx, p.NFTables[0])
				}, nil
			},
		},
		{
			name:  "iptables",
			tools: []string{"iptables", "iptables-restore"},
			newApplier: func(path string) (func(context.Context, *translate.Plan) error, error) {
				// BackendAuto: the system's iptables, iptables-nft here.
				k, err := iptables.New(iptables.IPv4, iptables.WithNetNS(path))
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context, p *translate.Plan) error { return k.Apply(ctx, p.IPTables[0]) }, nil
			},
		},
	}
}

// rig is one mode's topology: client, node, and one pod serving the
// measured service.
type rig struct {
	topo   *netnstest.Topology
	pod    netnstest.Pod
	apply  func(context.Context, *translate.Plan) error
	prober *Prober
	mode   translate.Mode
}

// newRig builds the topology for m and starts the backend server.
func newRig(tb testing.TB, m mode) *rig {
	tb.Helper()
	netnstest.Require(tb, append([]string{"ip"}, m.tools...)...)
	topo := netnstest.New(tb, netnstest.WithoutIPv6())
	pod := topo.AddPod(tb, netnstest.Local)
	pod.Serve(tb, "tcp", netip.AddrPortFrom(pod.V4, backendPort))
	apply, err := m.newApplier("/run/netns/" + topo.Node().Name())
	if err != nil {
		tb.Fatalf("%s applier: %v", m.name, err)
	}
	// Ports 10000..60999: a port comes round only after 51 000 samples.
	prober, err := NewProber(10000, 60999)
	if err != nil {
		tb.Fatal(err)
	}
	return &rig{topo: topo, pod: pod, apply: apply, prober: prober, mode: translate.Mode(m.name)}
}

// cluster returns the cluster of n services that r measures.
func (r *rig) cluster(n int) Cluster {
	return Cluster{
		Services:    n,
		Node:        proxy.Node{Name: "node-a", IPs: []netip.Addr{r.topo.NodeIP(netnstest.IPv4)}},
		ClusterCIDR: r.topo.PodCIDR(netnstest.Local, netnstest.IPv4),
		Backend:     netip.AddrPortFrom(r.pod.V4, backendPort),
	}
}

// load compiles and applies the cluster of n services and checks that a
// connection to the last one reaches the real backend. It returns the
// cluster and how long the apply took.
func (r *rig) load(tb testing.TB, n int) (Cluster, time.Duration) {
	tb.Helper()
	c := r.cluster(n)
	st, err := c.State()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := translate.Compile(st, r.mode)
	if err != nil {
		tb.Fatalf("Compile(%d services, %s) = %v", n, r.mode, err)
	}
	start := time.Now()
	if err := r.apply(tb.Context(), p); err != nil {
		tb.Fatalf("apply %d services in %s mode: %v", n, r.mode, err)
	}
	took := time.Since(start)
	reply := r.topo.Client().Dial(tb.Context(), "tcp", c.Target())
	if !reply.OK() || reply.Backend != c.Backend {
		tb.Fatalf("%s mode, %d services: dial %s = %v, want backend %s", r.mode, n, c.Target(), reply, c.Backend)
	}
	return c, took
}

// sample runs fn in the client namespace, where fn may call
// r.prober.Connect, and fails tb with fn's error.
func (r *rig) sample(tb testing.TB, fn func() error) {
	tb.Helper()
	if err := r.topo.Client().Do(fn); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkFirstPacket measures, for each mode and cluster size, the set-up
// time of new TCP connections from the client to the last service, DNATed
// by the node to a pod. Besides ns/op (one socket's whole life) it reports
// the connect times' p50-µs, p99-µs and mean-µs, and apply-s, the time the
// applier took to write the rules.
func BenchmarkFirstPacket(b *testing.B) {
	if os.Getenv(benchEnv) != "1" {
		b.Skipf("set %s=1 to run the datapath benchmark (it applies up to 10 000 services per mode)", benchEnv)
	}
	sizes := benchSizes(b)
	for _, m := range modes() {
		b.Run(m.name, func(b *testing.B) {
			r := newRig(b, m)
			for _, n := range sizes {
				c, took := r.load(b, n)
				b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
					samples := make([]time.Duration, 0, b.N)
					r.sample(b, func() error {
						for b.Loop() {
							d, err := r.prober.Connect(c.Target(), connectTimeout)
							if err != nil {
								return err
							}
							samples = append(samples, d)
						}
						return nil
					})
					s := Summarize(samples)
					b.ReportMetric(float64(s.P50.Nanoseconds())/1e3, "p50-µs")
					b.ReportMetric(float64(s.P99.Nanoseconds())/1e3, "p99-µs")
					b.ReportMetric(float64(s.Mean.Nanoseconds())/1e3, "mean-µs")
					b.ReportMetric(took.Seconds(), "apply-s")
				})
			}
		})
	}
}

// TestFirstPacket runs the benchmark's set-up at small sizes in both modes:
// the last service reaches the real backend, every probe connects, and a
// service address without rules is not reached.
func TestFirstPacket(t *testing.T) {
	for _, m := range modes() {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, m)
			for _, n := range []int{1, 30} {
				c, _ := r.load(t, n)
				var samples []time.Duration
				r.sample(t, func() error {
					for range 20 {
						d, err := r.prober.Connect(c.Target(), connectTimeout)
						if err != nil {
							return err
						}
						samples = append(samples, d)
					}
					return nil
				})
				if s := Summarize(samples); s.N != 20 || s.Min <= 0 || s.P99 > connectTimeout {
					t.Errorf("%d services: summary of 20 probes = %+v", n, s)
				}
			}
			// 10.96.0.40 is the 40th service's address: no rules, so the
			// client's packets die there (the client does not forward).
			var err error
			r.sample(t, func() error {
				_, err = r.prober.Connect(netip.AddrPortFrom(ServiceIP(39), ServicePort), 300*time.Millisecond)
				return nil
			})
			if err == nil {
				t.Errorf("connect to %s, which has no rules, succeeded", ServiceIP(39))
			}
		})
	}
}
