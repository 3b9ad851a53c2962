package proxier_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

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

func TestNewModes(t *testing.T) {
	tests := []struct {
		mode    translate.Mode
		wantErr error
	}{
		{translate.ModeIPTables, nil},
		{translate.ModeNFTables, nil},
		{translate.ModeUserspace, nil},
		{translate.ModeIPVS, nil},
		{"bogus", translate.ErrUnsupportedMode},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			_, err := proxier.New(tt.mode)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New(%q) = %v, want %v", tt.mode, err, tt.wantErr)
			}
			var pe *proxier.Error
			if err != nil && (!errors.As(err, &pe) || pe.Op != "new") {
				t.Errorf("New(%q) error %#v, want a *proxier.Error with Op new", tt.mode, err)
			}
		})
	}
}

func TestSyncIPTablesFake(t *testing.T) {
	ctx := context.Background()
	fake := iptables.NewFake(iptables.IPv4)
	fake.AddForeign(iptables.TableNAT, "PREROUTING", "-j DOCKER-ISH")
	reg := prometheus.NewPedanticRegistry()
	p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, fake),
		proxier.WithoutConntrackCleanup(), proxier.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	st := state(epLocal)
	if err := p.Sync(ctx, st); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	sep := translate.EndpointChainName("ns/web:http", "tcp", "10.244.1.2:8080")
	if dump := fake.Dump(); !strings.Contains(dump, "-j DNAT --to-destination 10.244.1.2:8080") || !strings.Contains(dump, ":"+sep) {
		t.Fatalf("after Sync the fake lacks the endpoint chain %s:\n%s", sep, dump)
	}
	restores := fake.Restores()
	if err := p.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	if got := fake.Restores(); got != restores {
		t.Errorf("Sync of the same state restored %d more tables, want 0", got-restores)
	}
	if err := p.Sync(ctx, state(epRemote)); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	if strings.Contains(dump, "10.244.1.2:8080") || !strings.Contains(dump, "10.244.2.2:8080") {
		t.Errorf("after moving the endpoint the fake holds:\n%s", dump)
	}
	if !strings.Contains(dump, "-A PREROUTING -j DOCKER-ISH") {
		t.Errorf("a foreign rule was lost:\n%s", dump)
	}
	if got := testutil.ToFloat64(p.MetricsForTest().SyncCount("IPv4")); got != 3 {
		t.Errorf("kubeproxy_sync_proxy_rules_duration_seconds count = %v, want 3", got)
	}
	m := p.MetricsForTest()
	if full, partial := testutil.ToFloat64(m.FullCount("IPv4")), testutil.ToFloat64(m.PartialCount("IPv4")); full != 1 || partial != 2 {
		t.Errorf("full and partial sync duration counts = %v, %v, want 1 (the first sync) and 2", full, partial)
	}
	if n, err := testutil.GatherAndCount(reg, "kubeproxy_sync_proxy_rules_iptables_total"); err != nil || n == 0 {
		t.Errorf("kubeproxy_sync_proxy_rules_iptables_total: %d series, %v", n, err)
	}
	wantNat := 0
	for _, ts := range p.Plan().IPTables[0].Stats() {
		if ts.Table == iptables.TableNAT {
			wantNat = ts.Rules
		}
	}
	if got := testutil.ToFloat64(p.MetricsForTest().IPTablesRules("IPv4", "nat")); int(got) != wantNat || wantNat == 0 {
		t.Errorf("iptables_total{nat} = %v, want %d", got, wantNat)
	}
}

func TestSyncNFTablesFake(t *testing.T) {
	ctx := context.Background()
	fake := nftables.NewFake()
	// Cleanup removes every mode's objects: give it iptables fakes too, so
	// that it makes no kernel applier.
	p, err := proxier.New(translate.ModeNFTables, proxier.WithNFTablesApplier(fake), proxier.WithoutConntrackCleanup(),
		proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
		proxier.WithIPTablesApplier(iptables.IPv6, iptables.NewFake(iptables.IPv6)),
		proxier.WithIPSetApplier(ipset.NewFake()), proxier.WithIPVSApplier(ipvs.NewFake()))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, state(epLocal)); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if dump := fake.Dump(); !strings.Contains(dump, "table ip kube-proxy") || !strings.Contains(dump, "10.244.1.2") {
		t.Fatalf("after Sync the fake holds:\n%s", dump)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	if dump := fake.Dump(); strings.Contains(dump, "kube-proxy") {
		t.Errorf("after Cleanup the fake holds:\n%s", dump)
	}
}

func TestCleanupEveryMode(t *testing.T) {
	ctx := context.Background()
	ipt4, ipt6, nft := iptables.NewFake(iptables.IPv4), iptables.NewFake(iptables.IPv6), nftables.NewFake()
	sets, vs := ipset.NewFake(), ipvs.NewFake()
	ipt4.AddForeign(iptables.TableFilter, "INPUT", "-j ACCEPT")
	opts := []proxier.Option{
		proxier.WithIPTablesApplier(iptables.IPv4, ipt4), proxier.WithIPTablesApplier(iptables.IPv6, ipt6),
		proxier.WithNFTablesApplier(nft), proxier.WithIPSetApplier(sets), proxier.WithIPVSApplier(vs),
		proxier.WithoutConntrackCleanup(),
	}
	ip, err := proxier.New(translate.ModeIPTables, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := ip.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	nf, err := proxier.New(translate.ModeNFTables, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := nf.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	iv, err := proxier.New(translate.ModeIPVS, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := iv.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	if len(sets.Dump().Sets) == 0 || len(vs.Dump("").VirtualServers) == 0 {
		t.Fatalf("IPVS mode wrote no sets or virtual servers:\n%s\n%s", sets, vs)
	}
	// One proxier, of any mode, removes what all wrote.
	if err := nf.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	if d := ipt4.Dump(); strings.Contains(d, "KUBE-") || !strings.Contains(d, "-A INPUT -j ACCEPT") {
		t.Errorf("iptables after Cleanup:\n%s", d)
	}
	if d := nft.Dump(); strings.TrimSpace(d) != "" {
		t.Errorf("nftables after Cleanup:\n%s", d)
	}
	if d := sets.Dump(); len(d.Sets) != 0 {
		t.Errorf("ipsets after Cleanup:\n%s", d)
	}
	if d := vs.Dump(""); len(d.VirtualServers) != 0 || len(d.Addresses) != 0 {
		t.Errorf("ipvs after Cleanup:\n%s", vs)
	}
	if nf.Applied() != nil || nf.Plan() != nil {
		t.Errorf("after Cleanup the proxier still remembers a state")
	}
}

func TestSyncErrors(t *testing.T) {
	ctx := context.Background()
	fl := newFlaky()
	clk := newFakeClock()
	p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, fl),
		proxier.WithoutConntrackCleanup(), proxier.WithClock(clk), proxier.WithSyncPeriod(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	bad := state(epLocal)
	bad.Services[0].Ports[0].Port = 99999
	err = p.Sync(ctx, bad)
	var pe *proxier.Error
	if !errors.As(err, &pe) || pe.Op != "compile" || !strings.Contains(err.Error(), "99999") {
		t.Errorf("Sync(invalid) = %v, want a compile *proxier.Error naming the port", err)
	}
	fl.fail.Store(true)
	err = p.Sync(ctx, state(epLocal))
	if !errors.As(err, &pe) || pe.Op != "apply" || !errors.Is(err, errInjected) {
		t.Errorf("Sync with a failing applier = %v, want an apply *proxier.Error wrapping the cause", err)
	}
	m := p.MetricsForTest()
	if got := testutil.ToFloat64(m.Failures("apply")); got != 1 {
		t.Errorf("sync_failures_total{apply} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Failures("compile")); got != 1 {
		t.Errorf("sync_failures_total{compile} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.RestoreFailures("IPv4")); got != 2-1 {
		t.Errorf("iptables_restore_failures_total = %v, want 1", got)
	}
	if !p.Healthy() {
		t.Errorf("unhealthy at once after a failure; want healthy until the timeout")
	}
	clk.Step(20 * time.Second) // twice the sync period
	if p.Healthy() {
		t.Errorf("healthy 20s after failing syncs with a 10s sync period")
	}
	code, body := get(t, p.Healthz(), "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"nodeEligible": true`) {
		t.Errorf("/healthz = %d %s, want 503 with kube-proxy's body", code, body)
	}
	fl.fail.Store(false)
	if err := p.Sync(ctx, state(epLocal)); err != nil {
		t.Fatal(err)
	}
	code, body = get(t, p.Healthz(), "/livez")
	want := `{"lastUpdated": "2025-01-01 00:00:20 +0000 UTC","currentTime": "2025-01-01 00:00:20 +0000 UTC"}`
	if code != http.StatusOK || body != want {
		t.Errorf("/livez = %d %s, want 200 %s", code, body, want)
	}
	if got := testutil.ToFloat64(m.Healthz("503")); got != 1 {
		t.Errorf("proxy_healthz_total{503} = %v, want 1", got)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if ct, ns := rec.Header().Get("Content-Type"), rec.Header().Get("X-Content-Type-Options"); ct != "application/json" || ns != "nosniff" {
		t.Errorf("%s headers: Content-Type %q, X-Content-Type-Options %q", path, ct, ns)
	}
	return rec.Code, rec.Body.String()
}

func TestChangeMetrics(t *testing.T) {
	p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
		proxier.WithoutConntrackCleanup())
	if err != nil {
		t.Fatal(err)
	}
	m := p.MetricsForTest()
	p.Update(state(epLocal))
	if s, e := testutil.ToFloat64(m.ServicePending()), testutil.ToFloat64(m.EndpointPending()); s != 2 || e != 2 {
		t.Errorf("pending after the first Update: services %v endpoints %v, want 2 2", s, e)
	}
	if err := p.Sync(context.Background(), state(epLocal)); err != nil {
		t.Fatal(err)
	}
	if s, e := testutil.ToFloat64(m.ServicePending()), testutil.ToFloat64(m.EndpointPending()); s != 0 || e != 0 {
		t.Errorf("pending after Sync: services %v endpoints %v, want 0 0", s, e)
	}
	next := state(epLocal, epRemote)
	next.Services = next.Services[:1]
	p.Update(next)
	if s, e := testutil.ToFloat64(m.ServicePending()), testutil.ToFloat64(m.EndpointPending()); s != 1 || e != 2 {
		t.Errorf("pending after removing dns and adding an endpoint to web: services %v endpoints %v, want 1 2", s, e)
	}
	if s, e := testutil.ToFloat64(m.ServiceTotal()), testutil.ToFloat64(m.EndpointTotal()); s != 3 || e != 4 {
		t.Errorf("totals: services %v endpoints %v, want 3 4", s, e)
	}
}

func TestNoLocalEndpointsMetric(t *testing.T) {
	st := state(epRemote)
	st.Services[0].InternalTrafficPolicy = proxy.TrafficPolicyLocal
	st.Services[1].Type = proxy.ServiceTypeNodePort
	st.Services[1].Ports[0].NodePort = 30053
	st.Services[1].ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	for i := range st.Services {
		for j := range st.Services[i].Endpoints {
			st.Services[i].Endpoints[j].NodeName = "node-b"
		}
	}
	p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
		proxier.WithoutConntrackCleanup())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	m := p.MetricsForTest()
	if got := testutil.ToFloat64(m.NoLocal("IPv4", "internal")); got != 1 {
		t.Errorf("no_local_endpoints_total{internal} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.NoLocal("IPv4", "external")); got != 1 {
		t.Errorf("no_local_endpoints_total{external} = %v, want 1", got)
	}
}

func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := proxier.New(translate.ModeIPTables, proxier.WithRegistry(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := proxier.New(translate.ModeIPTables, proxier.WithRegistry(reg)); err == nil {
		t.Errorf("a second proxier on the same registry registered its metrics")
	}
}

// TestGivenAppliersOnly checks that a proxier given some appliers makes no
// kernel applier for the others: a sync needing one fails naming the
// backend, and Cleanup cleans only what was given.
func TestGivenAppliersOnly(t *testing.T) {
	fake := iptables.NewFake(iptables.IPv4)
	p, err := proxier.New(translate.ModeNFTables, proxier.WithIPTablesApplier(iptables.IPv4, fake), proxier.WithoutConntrackCleanup())
	if err != nil {
		t.Fatal(err)
	}
	st := &proxy.State{Node: proxy.Node{Name: "n", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}}}
	err = p.Sync(context.Background(), st)
	if !errors.Is(err, proxier.ErrNotGiven) {
		t.Fatalf("Sync(nftables) with only an iptables Fake = %v, want an error wrapping errNotGiven", err)
	}
	if err := p.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup with only an iptables Fake = %v, want nil (the others skipped)", err)
	}
}
