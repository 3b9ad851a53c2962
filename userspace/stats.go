package userspace

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
)

// ListenerStats are the counters of one open listener, since it was
// opened. Byte counts of a TCP connection are added when each of its
// directions ends: the bytes are copied by the kernel (splice), not seen
// one buffer at a time.
type ListenerStats struct {
	// Name, Protocol and Addr identify the listener; Addr has the port the
	// kernel chose when the plan left it 0.
	Name     string
	Protocol Protocol
	Addr     netip.AddrPort
	// Backends is the number of backends.
	Backends int
	// Accepted counts TCP connections accepted, or UDP sessions started.
	Accepted uint64
	// Active is the number of TCP connections open (dialing or copying),
	// or of UDP sessions alive.
	Active int64
	// Refused counts TCP connections reset and UDP datagrams dropped
	// because the listener had no backend.
	Refused uint64
	// FailedDials counts attempts to reach a backend that failed; a
	// connection is dropped when all its attempts fail.
	FailedDials uint64
	// BytesIn counts bytes from clients to backends, BytesOut from
	// backends to clients.
	BytesIn, BytesOut uint64
}

// counters are a listener's live counters.
type counters struct {
	accepted, refused, failedDials, bytesIn, bytesOut atomic.Uint64
	active                                            atomic.Int64
}

// Stats returns the counters of every open listener, sorted by name,
// protocol and address.
func (p *Proxy) Stats() []ListenerStats {
	p.mu.Lock()
	ls := make([]*listener, 0, len(p.listeners))
	for _, l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	out := make([]ListenerStats, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.statsSnapshot())
	}
	slices.SortFunc(out, func(a, b ListenerStats) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.Protocol), string(b.Protocol)), a.Addr.Compare(b.Addr))
	})
	return out
}

func (l *listener) statsSnapshot() ListenerStats {
	n, _ := l.lb.size()
	return ListenerStats{
		Name:        l.spec.Load().Name,
		Protocol:    l.proto,
		Addr:        l.addr,
		Backends:    n,
		Accepted:    l.stats.accepted.Load(),
		Active:      l.stats.active.Load(),
		Refused:     l.stats.refused.Load(),
		FailedDials: l.stats.failedDials.Load(),
		BytesIn:     l.stats.bytesIn.Load(),
		BytesOut:    l.stats.bytesOut.Load(),
	}
}
