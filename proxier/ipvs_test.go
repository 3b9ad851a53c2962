package proxier_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// callLog records the order in which the appliers are called.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(call string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, call)
}

// take returns the calls so far and forgets them.
func (l *callLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

// loggedSets is an ipset.Fake that logs its calls and can be made to
// fail.
type loggedSets struct {
	*ipset.Fake
	log  *callLog
	fail error
}

func (s *loggedSets) Apply(ctx context.Context, p *ipset.Plan) error {
	s.log.add("ipset apply")
	if s.fail != nil {
		return s.fail
	}
	return s.Fake.Apply(ctx, p)
}

func (s *loggedSets) Cleanup(ctx context.Context) error {
	s.log.add("ipset cleanup")
	return s.Fake.Cleanup(ctx)
}

// loggedIPVS is an ipvs.Fake that logs its calls; cleanupErr, when set,
// is what Cleanup returns instead of cleaning (a kernel without IPVS).
type loggedIPVS struct {
	*ipvs.Fake
	log        *callLog
	cleanupErr error
}

func (v *loggedIPVS) Apply(ctx context.Context, p *ipvs.Plan) error {
	v.log.add("ipvs apply")
	return v.Fake.Apply(ctx, p)
}

func (v *loggedIPVS) Cleanup(ctx context.Context) error {
	v.log.add("ipvs cleanup")
	if v.cleanupErr != nil {
		return v.cleanupErr
	}
	return v.Fake.Cleanup(ctx)
}

// loggedRules is an iptables.Fake that logs its calls.
type loggedRules struct {
	*iptables.Fake
	family iptables.Family
	log    *callLog
}

func (r *loggedRules) Apply(ctx context.Context, p *iptables.Plan) error {
	r.log.add("iptables apply " + string(p.FamilyOrDefault()))
	return r.Fake.Apply(ctx, p)
}

func (r *loggedRules) Cleanup(ctx context.Context) error {
	r.log.add("iptables cleanup " + string(r.family))
	return r.Fake.Cleanup(ctx)
}

// ipvsFakes are the fake appliers of an IPVS-mode proxier.
type ipvsFakes struct {
	log  *callLog
	sets *loggedSets
	vs   *loggedIPVS
	v4   *loggedRules
	v6   *loggedRules
}

func newIPVSFakes() *ipvsFakes {
	l := &callLog{}
	return &ipvsFakes{
		log:  l,
		sets: &loggedSets{Fake: ipset.NewFake(), log: l},
		vs:   &loggedIPVS{Fake: ipvs.NewFake(), log: l},
		v4:   &loggedRules{Fake: iptables.NewFake(iptables.IPv4), family: iptables.IPv4, log: l},
		v6:   &loggedRules{Fake: iptables.NewFake(iptables.IPv6), family: iptables.IPv6, log: l},
	}
}

func (f *ipvsFakes) options() []proxier.Option {
	return []proxier.Option{
		proxier.WithIPSetApplier(f.sets), proxier.WithIPVSApplier(f.vs),
		proxier.WithIPTablesApplier(iptables.IPv4, f.v4), proxier.WithIPTablesApplier(iptables.IPv6, f.v6),
		// Cleanup removes every mode's objects: a fake for nftables too,
		// so that no test touches the kernel.
		proxier.WithNFTablesApplier(nftables.NewFake()),
		proxier.WithoutConntrackCleanup(),
	}
}

func newIPVSProxier(t *testing.T, f *ipvsFakes, opts ...proxier.Option) *proxier.Proxier {
	t.Helper()
	p, err := proxier.New(translate.ModeIPVS, append(f.options(), opts...)...)
	if err != nil {
		t.Fatalf("New(ipvs) = %v", err)
	}
	return p
}

// netipCmp compares the netip types, whose fields are unexported.
var netipCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// checkHolds fails t unless the fakes hold exactly the plan the proxier
// applied last.
func (f *ipvsFakes) checkHolds(t *testing.T, p *proxier.Proxier) {
	t.Helper()
	plan := p.Plan()
	if diff := cmp.Diff(plan.IPVS, f.vs.Dump(plan.IPVS.InterfaceOrDefault()), netipCmp); diff != "" {
		t.Errorf("the ipvs fake differs from the plan (-plan +fake):\n%s", diff)
	}
	want := &ipset.Plan{Sets: append([]ipset.Set(nil), plan.IPSets.Sets...)}
	got := f.sets.Dump()
	byName := func(s *ipset.Plan) map[string]ipset.Set {
		m := map[string]ipset.Set{}
		for _, set := range s.Sets {
			m[set.Name] = set
		}
		return m
	}
	if diff := cmp.Diff(byName(want), byName(got), netipCmp); diff != "" {
		t.Errorf("the ipset fake differs from the plan (-plan +fake):\n%s", diff)
	}
}

func TestSyncIPVSFakes(t *testing.T) {
	ctx := context.Background()
	f := newIPVSFakes()
	reg := prometheus.NewPedanticRegistry()
	p := newIPVSProxier(t, f, proxier.WithRegistry(reg))
	if err := p.Sync(ctx, state(epLocal)); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if diff := cmp.Diff([]string{"ipset apply", "ipvs apply", "iptables apply ipv4"}, f.log.take()); diff != "" {
		t.Errorf("apply order (-want +got):\n%s", diff)
	}
	f.checkHolds(t, p)
	web := p.Plan().IPVS.VirtualServer(ipvs.TCP, netip.MustParseAddrPort("10.96.0.10:80"))
	if web == nil || len(web.RealServers) != 1 || web.RealServers[0].Addr != netip.MustParseAddrPort("10.244.1.2:8080") {
		t.Fatalf("plan's virtual server for ns/web = %+v, want one real server 10.244.1.2:8080", web)
	}
	if dump := f.v4.Dump(); !strings.Contains(dump, "--match-set KUBE-CLUSTER-IP dst,dst") {
		t.Errorf("the iptables fake lacks the KUBE-CLUSTER-IP match:\n%s", dump)
	}
	m := p.MetricsForTest()
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"virtual servers", m.IPVSObjects("IPv4", "virtual_servers"), 2},
		{"real servers", m.IPVSObjects("IPv4", "real_servers"), 2},
		{"addresses", m.IPVSObjects("IPv4", "addresses"), 2},
		{"IPv6 virtual servers", m.IPVSObjects("IPv6", "virtual_servers"), 0},
		{"KUBE-CLUSTER-IP members", m.IPSetEntries("KUBE-CLUSTER-IP"), 2},
		{"syncs", m.SyncCount("IPv4"), 1},
		{"full syncs", m.FullCount("IPv4"), 1},
		{"draining", m.IPVSDraining(), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("metric %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, name := range []string{"svcplan_proxier_ipvs_objects", "svcplan_proxier_ipset_entries", "kubeproxy_sync_proxy_rules_iptables_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("registry has %d series of %s (%v), want some", n, name, err)
		}
	}

	// The same state again: every applier is called (IPVS reads back,
	// which finishes drains), and none writes.
	if err := p.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ipset apply", "ipvs apply", "iptables apply ipv4"}, f.log.take()); diff != "" {
		t.Errorf("second sync's calls (-want +got):\n%s", diff)
	}
	if s := f.vs.Stats(); s.LastOperations != 0 {
		t.Errorf("ipvs writes of an unchanged sync = %d, want 0", s.LastOperations)
	}
	if s := f.sets.Stats(); s.LastOperations != 0 {
		t.Errorf("ipset writes of an unchanged sync = %d, want 0", s.LastOperations)
	}
}

// manyServices returns n TCP services, each with two remote endpoints;
// with moved, service 0's second endpoint is another pod.
func manyServices(n int, moved bool) *proxy.State {
	st := &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{nodeIP}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{podCIDR}},
	}
	for i := range n {
		svc := proxy.Service{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports:      []proxy.ServicePort{{Name: "http", Port: 80}}}
		for j := range 2 {
			a := netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j + 1)})
			if moved && i == 0 && j == 1 {
				a = netip.AddrFrom4([4]byte{10, 244, 200, 9})
			}
			svc.Endpoints = append(svc.Endpoints, proxy.Endpoint{Addr: a, Ready: true, NodeName: "node-b",
				Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}})
		}
		st.Services = append(st.Services, svc)
	}
	return st
}

func TestSyncIPVSOneEndpointChange(t *testing.T) {
	ctx := context.Background()
	f := newIPVSFakes()
	p := newIPVSProxier(t, f)
	if err := p.Sync(ctx, manyServices(200, false)); err != nil {
		t.Fatal(err)
	}
	restores := f.v4.Restores()
	if err := p.Sync(ctx, manyServices(200, true)); err != nil {
		t.Fatal(err)
	}
	f.checkHolds(t, p)
	// The endpoint is remote and not hairpinned: one real server added and
	// one deleted; no set member, no rule changes.
	if got := f.vs.Stats().LastOperations; got != 2 {
		t.Errorf("ipvs writes for one endpoint moved = %d, want 2 (add-real, delete-real)", got)
	}
	if got := f.sets.Stats().LastOperations; got != 0 {
		t.Errorf("ipset writes for one remote endpoint moved = %d, want 0", got)
	}
	if got := f.v4.Restores() - restores; got != 0 {
		t.Errorf("iptables restores for one endpoint moved = %d, want 0 (the rules are fixed)", got)
	}
}

func TestSyncIPVSDrift(t *testing.T) {
	ctx := context.Background()
	f := newIPVSFakes()
	p := newIPVSProxier(t, f, proxier.WithRegistry(prometheus.NewRegistry()))
	st := state(epLocal)
	if err := p.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := f.vs.DeleteService(ipvs.TCP, netip.MustParseAddrPort("10.96.0.10:80")); err != nil {
		t.Fatal(err)
	}
	if err := f.sets.Delete("KUBE-CLUSTER-IP", ipset.Entry{IP: netip.MustParseAddr("10.96.0.53"), Protocol: ipset.UDP, Port: 53}); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	f.checkHolds(t, p)
	if got := testutil.ToFloat64(p.MetricsForTest().DriftRepairs()); got != 1 {
		t.Errorf("drift repairs = %v, want 1", got)
	}
	// Drift makes the next sync a full one, from fresh appliers; with
	// the appliers given, the same ones.
	if err := p.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.MetricsForTest().FullCount("IPv4")); got != 2 {
		t.Errorf("full syncs = %v, want 2 (the first, and the one after drift)", got)
	}
}

// TestSyncIPVSDrain: a TCP endpoint removed while it has connections
// keeps weight 0, and the periodic sync of the run loop deletes it once
// its connections are gone.
func TestSyncIPVSDrain(t *testing.T) {
	f := newIPVSFakes()
	clk := newFakeClock()
	p := newIPVSProxier(t, f, proxier.WithClock(clk), proxier.WithMinSyncInterval(time.Second),
		proxier.WithSyncPeriod(30*time.Second), proxier.WithRegistry(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	timers := 1
	idle := func() {
		t.Helper()
		clk.waitTimers(t, timers)
		timers++
	}
	idle()
	web := netip.MustParseAddrPort("10.96.0.10:80")
	old := netip.AddrPortFrom(epLocal, 8080)
	realOf := func() *ipvs.RealServer {
		v := f.vs.Dump("").VirtualServer(ipvs.TCP, web)
		if v == nil {
			t.Fatalf("no virtual server %s", web)
		}
		for i := range v.RealServers {
			if v.RealServers[i].Addr == old {
				return &v.RealServers[i]
			}
		}
		return nil
	}
	p.Update(state(epLocal))
	idle()
	if err := f.vs.SetConnections(ipvs.TCP, web, old, 3); err != nil {
		t.Fatal(err)
	}
	p.Update(state(epRemote))
	idle()
	if r := realOf(); r == nil || r.Weight != 0 {
		t.Fatalf("after its endpoint left with connections, real server %s = %+v, want weight 0", old, r)
	}
	if got := testutil.ToFloat64(p.MetricsForTest().IPVSDraining()); got != 1 {
		t.Errorf("draining real servers = %v, want 1", got)
	}
	if err := f.vs.SetConnections(ipvs.TCP, web, old, 0); err != nil {
		t.Fatal(err)
	}
	clk.Step(30 * time.Second)
	idle()
	if r := realOf(); r != nil {
		t.Errorf("after the periodic sync with no connections left, real server %s = %+v, want deleted", old, r)
	}
	if got := testutil.ToFloat64(p.MetricsForTest().IPVSDraining()); got != 0 {
		t.Errorf("draining real servers = %v, want 0", got)
	}
}

func TestSyncIPVSApplyFailure(t *testing.T) {
	ctx := context.Background()
	f := newIPVSFakes()
	f.sets.fail = errInjected
	p := newIPVSProxier(t, f, proxier.WithRegistry(prometheus.NewRegistry()))
	err := p.Sync(ctx, state(epLocal))
	var pe *proxier.Error
	if !errors.Is(err, errInjected) || !errors.As(err, &pe) || pe.Op != "apply" || pe.Mode != translate.ModeIPVS {
		t.Fatalf("Sync with a failing ipset applier = %v, want a proxier ipvs apply error wrapping the failure", err)
	}
	if diff := cmp.Diff([]string{"ipset apply"}, f.log.take()); diff != "" {
		t.Errorf("after the ipset failure the others were called (-want +got):\n%s", diff)
	}
	m := p.MetricsForTest()
	if got := testutil.ToFloat64(m.IPVSFailures("ipset")); got != 1 {
		t.Errorf("ipset failures = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.RestoreFailures("IPv4")); got != 0 {
		t.Errorf("iptables restore failures = %v, want 0", got)
	}
}

func TestCleanupIPVS(t *testing.T) {
	tests := []struct {
		name       string
		cleanupErr error
		wantErr    bool
	}{
		{"ipvs present", nil, false},
		{"kernel without ipvs", &ipvs.ApplyError{Op: "read", Err: ipvs.ErrNoIPVS}, false},
		{"ipvs cleanup fails", &ipvs.ApplyError{Op: "delete-service", Err: ipvs.ErrNotRoot}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newIPVSFakes()
			p := newIPVSProxier(t, f)
			if err := p.Sync(ctx, state(epLocal)); err != nil {
				t.Fatal(err)
			}
			f.log.take()
			f.vs.cleanupErr = tt.cleanupErr
			err := p.Cleanup(ctx)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Cleanup = %v, want error: %v", err, tt.wantErr)
			}
			want := []string{"iptables cleanup ipv4", "iptables cleanup ipv6", "ipvs cleanup", "ipset cleanup"}
			if diff := cmp.Diff(want, f.log.take()); diff != "" {
				t.Errorf("cleanup order (-want +got):\n%s", diff)
			}
			if n := len(f.sets.Dump().Sets); n != 0 {
				t.Errorf("after Cleanup the ipset fake holds %d sets:\n%s", n, f.sets.String())
			}
			if dump := f.v4.Dump(); strings.Contains(dump, "KUBE-") {
				t.Errorf("after Cleanup the iptables fake holds:\n%s", dump)
			}
			if tt.cleanupErr == nil {
				if d := f.vs.Dump(""); len(d.VirtualServers) != 0 || len(d.Addresses) != 0 {
					t.Errorf("after Cleanup the ipvs fake holds:\n%s", f.vs.String())
				}
			}
			if p.Applied() != nil {
				t.Errorf("after Cleanup Applied() is not nil")
			}
		})
	}
}

// BenchmarkSyncIPVSOneEndpoint syncs 1000 services × 2 endpoints in IPVS
// mode to the Fakes, one endpoint moving back and forth each time: the
// cost of a sync in the proxier (compile, diff, apply to the Fakes).
func BenchmarkSyncIPVSOneEndpoint(b *testing.B) {
	ctx := context.Background()
	f := newIPVSFakes()
	p, err := proxier.New(translate.ModeIPVS, f.options()...)
	if err != nil {
		b.Fatal(err)
	}
	states := []*proxy.State{manyServices(1000, false), manyServices(1000, true)}
	if err := p.Sync(ctx, states[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := p.Sync(ctx, states[(i+1)%2]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(f.vs.Stats().LastOperations), "ipvs-writes/op")
	b.ReportMetric(float64(f.sets.Stats().LastOperations), "ipset-writes/op")
}
