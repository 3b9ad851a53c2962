package proxier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svcplan/svcplan/proxy"
)

// healthServers runs one HTTP server per service with
// externalTrafficPolicy Local and a health check NodePort, as
// kube-proxy's service health server does.
type healthServers struct {
	log      *slog.Logger
	listener Listener
	bind     netip.Addr
	healthy  func() bool

	mu      sync.Mutex
	servers map[svcName]*healthServer
}

type svcName struct{ namespace, name string }

// healthServer is the health check server of one service.
type healthServer struct {
	name      svcName
	port      int
	endpoints atomic.Int64
	healthy   func() bool
	srv       *http.Server
	done      chan struct{}
}

// HealthCheck is the health check server of one service, as
// [Proxier.HealthChecks] reports it.
type HealthCheck struct {
	// Namespace and Name identify the service.
	Namespace, Name string
	// Port is the health check NodePort it listens on.
	Port int
	// LocalEndpoints is the number of ready endpoints on this node.
	LocalEndpoints int
}

// localEndpoints returns, per service with a health check NodePort under
// the Local external policy, its port and its number of ready local
// endpoints (distinct addresses).
func localEndpoints(st *proxy.State) map[svcName]HealthCheck {
	out := map[svcName]HealthCheck{}
	for i := range st.Services {
		svc := &st.Services[i]
		if !svc.ExternalLocal() || svc.HealthCheckNodePort == 0 || len(svc.ClusterIPs) == 0 {
			continue
		}
		seen := map[netip.Addr]bool{}
		for j := range svc.Endpoints {
			ep := &svc.Endpoints[j]
			if ep.Ready && ep.IsLocal(st.Node.Name) {
				seen[ep.Addr] = true
			}
		}
		out[svcName{svc.Namespace, svc.Name}] = HealthCheck{Namespace: svc.Namespace, Name: svc.Name, Port: svc.HealthCheckNodePort, LocalEndpoints: len(seen)}
	}
	return out
}

// sync makes the servers those st needs: it closes the servers of
// services gone or moved to another port, opens new ones and sets every
// endpoint count. A server that cannot listen is logged and tried again
// at the next sync; the error returned joins those failures.
func (h *healthServers) sync(ctx context.Context, st *proxy.State) error {
	want := localEndpoints(st)
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, s := range h.servers {
		if w, ok := want[n]; !ok || w.Port != s.port {
			s.close()
			delete(h.servers, n)
		}
	}
	var errs []error
	for _, key := range sortedHealthKeys(want) {
		w := want[key]
		s := h.servers[key]
		if s == nil {
			var err error
			if s, err = h.open(ctx, key, w.Port); err != nil {
				h.log.Warn("cannot open health check server", "service", key.namespace+"/"+key.name, "port", w.Port, "err", err)
				errs = append(errs, err)
				continue
			}
			h.servers[key] = s
		}
		s.endpoints.Store(int64(w.LocalEndpoints))
	}
	return errors.Join(errs...)
}

func sortedHealthKeys(m map[svcName]HealthCheck) []svcName {
	names := map[string]svcName{}
	for k := range m {
		names[k.namespace+"/"+k.name] = k
	}
	var out []svcName
	for _, k := range sortedKeys(names) {
		out = append(out, names[k])
	}
	return out
}

func (h *healthServers) open(ctx context.Context, n svcName, port int) (*healthServer, error) {
	host := ""
	if h.bind.IsValid() {
		host = h.bind.String()
	}
	ln, err := h.listener.Listen(ctx, net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("health check server of %s/%s: %w", n.namespace, n.name, err)
	}
	s := &healthServer{name: n, port: port, healthy: h.healthy, done: make(chan struct{})}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// ServeHTTP answers as kube-proxy does: 200 when the service has local
// endpoints and the proxier is healthy, 503 otherwise, with a JSON body
// naming the service and its count.
func (s *healthServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	count := s.endpoints.Load()
	healthy := s.healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.FormatInt(count, 10))
	if count != 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}", s.name.namespace, s.name.name, count, healthy)
}

func (s *healthServer) close() {
	_ = s.srv.Close()
	<-s.done
}

// list returns the servers running, sorted by service.
func (h *healthServers) list() []HealthCheck {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[svcName]HealthCheck{}
	for n, s := range h.servers {
		m[n] = HealthCheck{Namespace: n.namespace, Name: n.name, Port: s.port, LocalEndpoints: int(s.endpoints.Load())}
	}
	var out []HealthCheck
	for _, k := range sortedHealthKeys(m) {
		out = append(out, m[k])
	}
	return out
}

// closeAll closes every server.
func (h *healthServers) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, s := range h.servers {
		s.close()
		delete(h.servers, n)
	}
}
