package userspace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// benchEnv names the environment variable that, set to 1, runs the
// benchmarks: they take seconds of every core, and their figures depend
// on the machine.
const benchEnv = "SVCPLAN_BENCH"

// The benchmark servers' modes, one port each in the pod.
const (
	// sinkMode reads to EOF, then answers with the byte count (8 bytes,
	// big endian) and closes.
	sinkMode = iota
	// sourceMode reads a byte count (8 bytes, big endian), writes that
	// many bytes and closes.
	sourceMode
	// echoMode writes back whatever it reads until EOF.
	echoMode
	numModes
)

// benchNet is the benchmarks' topology: a client namespace, the node
// namespace where the proxy runs (listening on the node's address, one
// listener per server mode) and one pod with the servers. A direct path
// goes client → node → pod over the same veths and routes, forwarded by
// the node; a proxied one goes client → proxy (on the node) → pod.
type benchNet struct {
	client  *nsHandle // the client namespace
	px      *Proxy
	direct  [numModes]netip.AddrPort // the pod's servers
	proxied [numModes]netip.AddrPort // the proxy's listeners
}

// newBenchNet builds the topology, or skips b unless SVCPLAN_BENCH=1 and
// the machine can make namespaces.
func newBenchNet(b *testing.B) *benchNet {
	b.Helper()
	if os.Getenv(benchEnv) != "1" {
		b.Skip("set " + benchEnv + "=1 to measure the proxy")
	}
	netnstest.Require(b, "ip")
	tp := netnstest.New(b, netnstest.WithoutIPv6())
	pod := tp.AddPod(b, netnstest.Local)
	client, err := openNetNS("/run/netns/" + tp.Client().Name())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.close() })
	bn := &benchNet{client: client}
	plan := &Plan{}
	for mode := range numModes {
		bn.direct[mode] = netip.AddrPortFrom(pod.V4, 8080+uint16(mode))
		startBenchServer(b, pod.NS, bn.direct[mode], mode)
		plan.Listeners = append(plan.Listeners, Listener{
			Name:     fmt.Sprintf("bench/%d", mode),
			Addr:     netip.AddrPortFrom(tp.NodeIP(netnstest.IPv4), 20000+uint16(mode)),
			Backends: []netip.AddrPort{bn.direct[mode]},
		})
		bn.proxied[mode] = plan.Listeners[mode].Addr
	}
	bn.px = NewProxy(WithNetNS("/run/netns/" + tp.Node().Name()))
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := bn.px.Close(ctx); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
	if err := bn.px.Apply(b.Context(), plan); err != nil {
		b.Fatal(err)
	}
	return bn
}

// dial connects from the client namespace to dst. Like the proxy in its
// namespace, the client makes its socket there and connects from any
// thread, so that both paths pay the same for it.
func (bn *benchNet) dial(dst netip.AddrPort) (*net.TCPConn, error) {
	return bn.client.dialTCP(context.Background(), dst, 5*time.Second)
}

// activeProxied returns the number of connections the proxy has open.
func (bn *benchNet) activeProxied() int64 {
	var n int64
	for _, s := range bn.px.Stats() {
		n += s.Active
	}
	return n
}

// waitIdle waits until the proxy has no connection open, so that one
// round's teardown does not cost the next round.
func (bn *benchNet) waitIdle(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for bn.activeProxied() != 0 {
		if time.Now().After(deadline) {
			b.Fatalf("proxy still has %d connections open: %+v", bn.activeProxied(), bn.px.Stats())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// startBenchServer serves mode on ap inside ns until b ends.
func startBenchServer(b *testing.B, ns *netnstest.NS, ap netip.AddrPort, mode int) {
	b.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", ap.String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				serveBench(c.(*net.TCPConn), mode)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// bulkBuffer is the size of the buffers bulk transfers read and write
// with, on both ends, direct or proxied.
const bulkBuffer = 1 << 20

// serveBench serves one connection in mode.
func serveBench(c *net.TCPConn, mode int) {
	var count [8]byte
	switch mode {
	case sinkMode:
		buf := make([]byte, bulkBuffer)
		var n uint64
		for {
			m, err := c.Read(buf)
			n += uint64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					binary.BigEndian.PutUint64(count[:], n)
					_, _ = c.Write(count[:])
				}
				return
			}
		}
	case sourceMode:
		if _, err := io.ReadFull(c, count[:]); err != nil {
			return
		}
		_ = writeN(c, binary.BigEndian.Uint64(count[:]))
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	case echoMode:
		// A small buffer: idle connections should cost the server little,
		// so that the proxy's share stands out.
		buf := make([]byte, 4<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// writeN writes n zero bytes to w in bulkBuffer writes.
func writeN(w io.Writer, n uint64) error {
	buf := make([]byte, min(n, bulkBuffer))
	for n > 0 {
		m := min(n, uint64(len(buf)))
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		n -= m
	}
	return nil
}

// cpuTime returns the CPU time (user and system) the test process has
// used. The client, the servers and the proxy are all in it, and so is
// the kernel's packet processing, which runs (in softirq) on behalf of the
// sender: this kernel has no CONFIG_IRQ_TIME_ACCOUNTING to set it apart.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measured is the wall-clock and CPU time one path took over some rounds.
type measured struct {
	wall, cpu time.Duration
	rounds    []time.Duration // the wall-clock time of each round
}

// run runs fn once, as one round, and adds its wall-clock and CPU time to
// m.
func (m *measured) run(b *testing.B, fn func() error) {
	b.Helper()
	start, cpu0 := time.Now(), cpuTime(b)
	if err := fn(); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	m.wall += d
	m.cpu += cpuTime(b) - cpu0
	m.rounds = append(m.rounds, d)
}

// speedRatio returns the median, over pairs of rounds run one after the
// other, of how fast the proxied round was against the direct one (direct
// time over proxied time). On a shared machine a burst of load from
// elsewhere hits one round of a pair; the median over pairs is less
// swayed by it than the ratio of the totals.
func speedRatio(direct, proxied measured) float64 {
	rs := make([]float64, len(direct.rounds))
	for i := range rs {
		rs[i] = direct.rounds[i].Seconds() / proxied.rounds[i].Seconds()
	}
	slices.Sort(rs)
	if len(rs)%2 == 0 {
		return (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return rs[len(rs)/2]
}

// memInUse returns the heap and stack memory in use after a collection.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// settledFDs returns the number of open file descriptors once the splice
// pipes that Go's pool dropped are closed: the runtime closes them in
// cleanups that run some time after a collection. It waits until the
// number has not changed for 3 collections in a row.
func settledFDs(b *testing.B) int {
	b.Helper()
	n, same := openFDs(b), 0
	for i := 0; i < 200 && same < 3; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		m := openFDs(b)
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}
