package proxier

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// healthState is kube-proxy's proxier health: healthy while nothing is
// queued, or while the oldest queued sync has waited less than the
// timeout.
type healthState struct {
	clock   Clock
	timeout time.Duration

	mu           sync.Mutex
	oldestQueued time.Time
	lastUpdated  time.Time
}

// queued notes that a state waits for a sync (kube-proxy's QueuedUpdate).
func (h *healthState) queued() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.oldestQueued.IsZero() {
		h.oldestQueued = h.clock.Now()
	}
}

// updated notes a successful sync (kube-proxy's Updated).
func (h *healthState) updated() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.oldestQueued = time.Time{}
	h.lastUpdated = h.clock.Now()
}

// check returns whether the proxier is healthy, when it last synced, and
// the current time.
func (h *healthState) check() (healthy bool, lastUpdated, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now = h.clock.Now()
	healthy = h.oldestQueued.IsZero() || now.Sub(h.oldestQueued) < h.timeout
	return healthy, h.lastUpdated, now
}

// Healthy reports whether the proxier is healthy: no state has waited
// for a successful sync longer than the health timeout (see
// [WithHealthTimeout]). Syncs that keep failing, or a run loop that does
// not run, make it unhealthy.
func (p *Proxier) Healthy() bool {
	ok, _, _ := p.health.check()
	return ok
}

// Healthz returns the handler of the proxier's own health, as
// kube-proxy's --healthz-bind-address serves it: "/healthz" and "/livez"
// answer 200 when [Proxier.Healthy] and 503 otherwise, with
// Content-Type application/json, X-Content-Type-Options nosniff and
// kube-proxy's body, {"lastUpdated": ...,"currentTime": ...} (with
// "nodeEligible": true for /healthz; this proxier does not watch the
// node's deletion). Other paths answer 404.
func (p *Proxier) Healthz() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { p.serveHealth(w, true) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { p.serveHealth(w, false) })
	return mux
}

func (p *Proxier) serveHealth(w http.ResponseWriter, healthz bool) {
	healthy, lastUpdated, now := p.health.check()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusOK
	if !healthy {
		code = http.StatusServiceUnavailable
	} else {
		// As kube-proxy: a healthy proxier reports itself updated now.
		lastUpdated = now
	}
	if healthz {
		p.metrics.healthz.WithLabelValues(strconv.Itoa(code)).Inc()
	} else {
		p.metrics.livez.WithLabelValues(strconv.Itoa(code)).Inc()
	}
	w.WriteHeader(code)
	if healthz {
		fmt.Fprintf(w, `{"lastUpdated": %q,"currentTime": %q, "nodeEligible": %v}`, lastUpdated, now, true)
	} else {
		fmt.Fprintf(w, `{"lastUpdated": %q,"currentTime": %q}`, lastUpdated, now)
	}
}
