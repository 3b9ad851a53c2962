package proxier_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// loopbackListener listens on a free loopback port whatever port is asked
// for, and remembers which.
type loopbackListener struct {
	mu    sync.Mutex
	addrs map[int]string // asked port -> real address
}

func (l *loopbackListener) Listen(ctx context.Context, addr string) (net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(port)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs[n] = ln.Addr().String()
	return ln, nil
}

func (l *loopbackListener) get(t *testing.T, port int) (int, http.Header, string) {
	t.Helper()
	l.mu.Lock()
	addr := l.addrs[port]
	l.mu.Unlock()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("health check on port %d: %v", port, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func localState(local bool) *proxy.State {
	st := state(epLocal, epRemote)
	svc := &st.Services[0]
	svc.Type = proxy.ServiceTypeLoadBalancer
	svc.Ports[0].NodePort = 30080
	svc.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	svc.HealthCheckNodePort = 30999
	svc.Endpoints[1].NodeName = "node-b"
	if local {
		svc.Endpoints[0].NodeName = "node-a"
	}
	return st
}

func TestHealthCheckServers(t *testing.T) {
	ctx := context.Background()
	ln := &loopbackListener{addrs: map[int]string{}}
	p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
		proxier.WithoutConntrackCleanup(), proxier.WithHealthCheckListener(ln))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(ctx) })
	if err := p.Sync(ctx, localState(true)); err != nil {
		t.Fatal(err)
	}
	want := []proxier.HealthCheck{{Namespace: "ns", Name: "web", Port: 30999, LocalEndpoints: 1}}
	if diff := cmp.Diff(want, p.HealthChecks()); diff != "" {
		t.Errorf("HealthChecks (-want +got):\n%s", diff)
	}
	code, h, body := ln.get(t, 30999)
	wantBody := "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
	if code != http.StatusOK || body != wantBody {
		t.Errorf("health check = %d\n%s\nwant 200\n%s", code, body, wantBody)
	}
	if h.Get("Content-Type") != "application/json" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Load-Balancing-Endpoint-Weight") != "1" {
		t.Errorf("health check headers: %v", h)
	}
	// The local endpoint goes elsewhere: 503, same server.
	if err := p.Sync(ctx, localState(false)); err != nil {
		t.Fatal(err)
	}
	code, _, body = ln.get(t, 30999)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"localEndpoints": 0`) {
		t.Errorf("health check without local endpoints = %d %s, want 503 with 0", code, body)
	}
	// The service goes: its server closes.
	st := localState(true)
	st.Services = st.Services[1:]
	if err := p.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := p.HealthChecks(); len(got) != 0 {
		t.Errorf("HealthChecks after the service went = %v, want none", got)
	}
	ln.mu.Lock()
	addr := ln.addrs[30999]
	ln.mu.Unlock()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("the health check server of a deleted service still accepts connections")
	}
}
