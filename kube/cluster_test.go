package kube

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/proxy"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// exampleState reads examples/cluster.yaml and builds node-a's State.
func exampleState(t *testing.T) (proxy.State, []Warning) {
	t.Helper()
	f, err := os.Open("../examples/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, warns, err := Read(f)
	if err != nil {
		t.Fatalf("Read() error = %v", err)
	}
	st, swarns, err := StateFor(objs, "node-a")
	if err != nil {
		t.Fatalf("StateFor() error = %v", err)
	}
	return st, append(warns, swarns...)
}

func TestExampleClusterGolden(t *testing.T) {
	st, warns := exampleState(t)
	got, err := json.MarshalIndent(struct {
		State    proxy.State
		Warnings []string
	}{st, warnStrings(warns)}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const golden = "testdata/cluster-node-a.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("node-a's State mismatch (-want +got):\n%s", diff)
	}
}

func TestExampleClusterFacts(t *testing.T) {
	st, warns := exampleState(t)
	if len(warns) != 0 {
		t.Errorf("warnings = %v, want none", warnStrings(warns))
	}
	if err := st.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	wantNode := proxy.Node{Name: "node-a", IPs: addrs("10.0.0.10", "fd00::10"), Zone: "zone-a"}
	if diff := cmp.Diff(wantNode, st.Node, cmpNet()); diff != "" {
		t.Errorf("Node mismatch (-want +got):\n%s", diff)
	}
	wantConfig := proxy.Config{ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:244::/56"), MasqueradeBit: intPtr(14)}
	if diff := cmp.Diff(wantConfig, st.Config, cmpNet()); diff != "" {
		t.Errorf("Config mismatch (-want +got):\n%s", diff)
	}

	svcs := map[string]proxy.Service{}
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Namespace+"/"+s.Name)
		svcs[s.Namespace+"/"+s.Name] = s
	}
	wantNames := []string{"default/api", "default/dual", "default/frontend", "default/idle", "default/kubernetes", "default/legacy", "default/web", "kube-system/kube-dns"}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("services mismatch (-want +got), the headless db must be absent:\n%s", diff)
	}

	k := svcs["default/kubernetes"]
	if len(k.Endpoints) != 1 || k.Endpoints[0].Addr != netip.MustParseAddr("10.0.0.10") {
		t.Errorf("kubernetes endpoints = %v, want 10.0.0.10", k.Endpoints)
	} else if p, _ := k.Endpoints[0].PortNumber("https"); p != 6443 {
		t.Errorf("kubernetes https endpoint port = %d, want 6443", p)
	}

	dns := svcs["kube-system/kube-dns"]
	if len(dns.Ports) != 3 || dns.Ports[0].Protocol != proxy.ProtocolUDP || len(dns.Endpoints) != 2 {
		t.Errorf("kube-dns = %d ports (first %s), %d endpoints; want 3 ports, dns/UDP first, 2 endpoints",
			len(dns.Ports), dns.Ports[0].Protocol, len(dns.Endpoints))
	}

	web := svcs["default/web"]
	if web.AffinityTimeout() != 10800 {
		t.Errorf("web affinity timeout = %d, want 10800", web.AffinityTimeout())
	}
	var ready, terminatingServing, notReady int
	for _, e := range web.Endpoints {
		switch {
		case e.Ready:
			ready++
		case e.Serving && e.Terminating:
			terminatingServing++
		case !e.IsServing():
			notReady++
		}
	}
	if ready != 1 || terminatingServing != 1 || notReady != 1 {
		t.Errorf("web endpoints: %d ready, %d terminating and serving, %d not ready; want 1 each", ready, terminatingServing, notReady)
	}

	fe := svcs["default/frontend"]
	if diff := cmp.Diff(addrs("192.0.2.10"), fe.LoadBalancerIPs, cmpNet()); diff != "" {
		t.Errorf("frontend LoadBalancerIPs mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(prefixes("203.0.113.0/24"), fe.LoadBalancerSourceRanges, cmpNet()); diff != "" {
		t.Errorf("frontend LoadBalancerSourceRanges mismatch (-want +got):\n%s", diff)
	}
	if !fe.ExternalLocal() || fe.HealthCheckNodePort != 32000 || len(fe.Endpoints) != 2 {
		t.Errorf("frontend: ExternalLocal %v, health check port %d, %d endpoints; want true, 32000, 2",
			fe.ExternalLocal(), fe.HealthCheckNodePort, len(fe.Endpoints))
	}
	local := 0
	for _, e := range fe.Endpoints {
		if e.IsLocal("node-a") {
			local++
		}
	}
	if local != 1 {
		t.Errorf("frontend has %d endpoints on node-a, want 1", local)
	}

	if api := svcs["default/api"]; api.ServiceType() != proxy.ServiceTypeNodePort || api.Ports[0].NodePort != 30080 {
		t.Errorf("api = %s with node port %d, want NodePort 30080", api.ServiceType(), api.Ports[0].NodePort)
	}
	if diff := cmp.Diff(addrs("198.51.100.7"), svcs["default/legacy"].ExternalIPs, cmpNet()); diff != "" {
		t.Errorf("legacy ExternalIPs mismatch (-want +got):\n%s", diff)
	}
	if n := len(svcs["default/idle"].Endpoints); n != 0 {
		t.Errorf("idle has %d endpoints, want 0", n)
	}
	dual := svcs["default/dual"]
	if diff := cmp.Diff(addrs("10.96.0.50", "fd00:96::50"), dual.ClusterIPs, cmpNet()); diff != "" {
		t.Errorf("dual ClusterIPs mismatch (-want +got):\n%s", diff)
	}
	if len(dual.Endpoints) != 2 || !dual.Endpoints[0].Addr.Is4() || !dual.Endpoints[1].Addr.Is6() {
		t.Errorf("dual endpoints = %v, want one IPv4 and one IPv6", dual.Endpoints)
	}
}
