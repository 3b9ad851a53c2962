package userspace

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// The benchmarks compare the proxy with direct connections over the same
// veths in a netnstest topology (see benchNet), both measured in the same
// run: each iteration runs a direct round and a proxied one, each path
// first in turn, so that the load of a shared machine hits both alike.
// They need root and SVCPLAN_BENCH=1:
//
//	SVCPLAN_BENCH=1 go test -run '^$' -bench . -benchtime 20x ./userspace/
//
// CPU figures are the test process's (client, proxy, servers and the
// kernel's packet processing done on their behalf), from getrusage.

// BenchmarkThroughput measures bulk TCP throughput on one connection, from
// the client to the pod (upload) and back (download), direct and through
// the proxy, and reports both, their ratio (target: at least 0.8; the
// median over pairs of rounds, see speedRatio), and the CPU time each path
// costs per GiB and the cores it kept busy. Each round moves 128 MiB.
func BenchmarkThroughput(b *testing.B) {
	const size = 128 << 20
	bn := newBenchNet(b)
	upload := func(c *net.TCPConn) error {
		if err := writeN(c, size); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		var count [8]byte
		if _, err := io.ReadFull(c, count[:]); err != nil {
			return fmt.Errorf("reading the sink's count: %w", err)
		}
		if n := binary.BigEndian.Uint64(count[:]); n != size {
			return fmt.Errorf("the sink read %d bytes, want %d", n, size)
		}
		return nil
	}
	download := func(c *net.TCPConn) error {
		var count [8]byte
		binary.BigEndian.PutUint64(count[:], size)
		if _, err := c.Write(count[:]); err != nil {
			return err
		}
		n, err := readAll(c)
		if err == nil && n != size {
			err = fmt.Errorf("read %d bytes from the source, want %d", n, size)
		}
		return err
	}
	for _, tc := range []struct {
		name string
		mode int
		fn   func(*net.TCPConn) error
	}{{"upload", sinkMode, upload}, {"download", sourceMode, download}} {
		b.Run(tc.name, func(b *testing.B) {
			var direct, proxied measured
			for i := 0; b.Loop(); i++ {
				pairOf(i, func() { bn.transfer(b, &direct, bn.direct[tc.mode], tc.fn) },
					func() { bn.transfer(b, &proxied, bn.proxied[tc.mode], tc.fn) })
			}
			gib := float64(b.N) * size / (1 << 30)
			mibs := func(m measured) float64 { return gib * 1024 / m.wall.Seconds() }
			b.ReportMetric(mibs(direct), "direct-MiB/s")
			b.ReportMetric(mibs(proxied), "proxy-MiB/s")
			b.ReportMetric(speedRatio(direct, proxied), "ratio")
			b.ReportMetric(direct.cpu.Seconds()/gib, "direct-cpu-s/GiB")
			b.ReportMetric(proxied.cpu.Seconds()/gib, "proxy-cpu-s/GiB")
			b.ReportMetric(direct.cpu.Seconds()/direct.wall.Seconds(), "direct-cores")
			b.ReportMetric(proxied.cpu.Seconds()/proxied.wall.Seconds(), "proxy-cores")
		})
	}
}

// pairOf runs the i-th pair of rounds: direct then proxied, or, for odd
// i, the other way round, so that neither path always goes first.
func pairOf(i int, direct, proxied func()) {
	if i%2 == 1 {
		direct, proxied = proxied, direct
	}
	direct()
	proxied()
}

// transfer opens a connection to dst, times fn on it into m, and closes
// it; the connection's setup and teardown are not timed.
func (bn *benchNet) transfer(b *testing.B, m *measured, dst netip.AddrPort, fn func(*net.TCPConn) error) {
	b.Helper()
	c, err := bn.dial(dst)
	if err != nil {
		b.Fatal(err)
	}
	m.run(b, func() error { return fn(c) })
	c.Close()
	bn.waitIdle(b)
}

// readAll reads r to EOF in bulkBuffer reads and returns the byte count.
func readAll(r io.Reader) (uint64, error) {
	buf := make([]byte, bulkBuffer)
	var n uint64
	for {
		m, err := r.Read(buf)
		n += uint64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// BenchmarkConnectionRate measures short connections (connect, one byte
// each way, close) from 4 clients at once, direct and through the proxy,
// and reports both rates, their ratio (target: at least 0.5; the median
// over pairs of rounds, see speedRatio) and the CPU time per connection. Each round makes 400 connections; a proxied
// round ends when the proxy has closed its side of all of them.
func BenchmarkConnectionRate(b *testing.B) {
	const conns, workers = 400, 4
	bn := newBenchNet(b)
	round := func(dst netip.AddrPort) error {
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			wg.Go(func() {
				errs[w] = bn.pingConns(dst, conns/workers)
			})
		}
		wg.Wait()
		bn.waitIdle(b)
		return firstErr(errs)
	}
	var direct, proxied measured
	for i := 0; b.Loop(); i++ {
		pairOf(i, func() { direct.run(b, func() error { return round(bn.direct[echoMode]) }) },
			func() { proxied.run(b, func() error { return round(bn.proxied[echoMode]) }) })
	}
	n := float64(b.N) * conns
	b.ReportMetric(n/direct.wall.Seconds(), "direct-conn/s")
	b.ReportMetric(n/proxied.wall.Seconds(), "proxy-conn/s")
	b.ReportMetric(speedRatio(direct, proxied), "ratio")
	b.ReportMetric(float64(direct.cpu.Microseconds())/n, "direct-cpu-µs/conn")
	b.ReportMetric(float64(proxied.cpu.Microseconds())/n, "proxy-cpu-µs/conn")
}

// pingConns makes n connections from the client to dst one after the
// other, each sending one byte and reading its echo.
func (bn *benchNet) pingConns(dst netip.AddrPort, n int) error {
	one := []byte{1}
	for range n {
		c, err := bn.dial(dst)
		if err != nil {
			return err
		}
		if _, err = c.Write(one); err == nil {
			_, err = io.ReadFull(c, one)
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
	}
	return nil
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkLatency measures the round trip of a small request and its
// response (100 bytes each way) on an open connection, alternating request
// by request between a direct connection and a proxied one, and reports
// the median and 99th percentile of each and what the proxy adds. Each
// iteration makes 2000 round trips each way.
func BenchmarkLatency(b *testing.B) {
	const trips, size = 2000, 100
	bn := newBenchNet(b)
	dc, err := bn.dial(bn.direct[echoMode])
	if err != nil {
		b.Fatal(err)
	}
	defer dc.Close()
	pc, err := bn.dial(bn.proxied[echoMode])
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	msg, echo := make([]byte, size), make([]byte, size)
	trip := func(c *net.TCPConn) time.Duration {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, echo); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var direct, proxied []time.Duration
	for b.Loop() {
		for range trips {
			direct = append(direct, trip(dc))
			proxied = append(proxied, trip(pc))
		}
	}
	dp50, dp99 := percentiles(direct)
	pp50, pp99 := percentiles(proxied)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(dp50), "direct-p50-µs")
	b.ReportMetric(us(dp99), "direct-p99-µs")
	b.ReportMetric(us(pp50), "proxy-p50-µs")
	b.ReportMetric(us(pp99), "proxy-p99-µs")
	b.ReportMetric(us(pp50-dp50), "added-p50-µs")
	b.ReportMetric(us(pp99-dp99), "added-p99-µs")
}

// percentiles returns the median and the 99th percentile of ds, which it
// sorts.
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100]
}

// BenchmarkIdleMemory measures what 1000 idle proxied connections cost
// the process beyond 1000 direct ones (the client's and the server's ends
// live in the test process either way): Go heap and goroutine stacks, and
// file descriptors, per connection (target: at most 64 KiB). Kernel
// memory (socket structures, the splice pipes' buffers) is not counted.
func BenchmarkIdleMemory(b *testing.B) {
	const n = 1000
	bn := newBenchNet(b)
	open := func(dst netip.AddrPort) (mem float64, fds int) {
		m0, fd0 := memInUse(), settledFDs(b)
		var cs []net.Conn
		err := func() error {
			one := []byte{1}
			for range n {
				c, err := bn.dial(dst)
				if err != nil {
					return err
				}
				cs = append(cs, c)
				// One byte each way: the connection is established end to end.
				if _, err := c.Write(one); err == nil {
					_, err = io.ReadFull(c, one)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}()
		m1, fd1 := memInUse(), openFDs(b)
		for _, c := range cs {
			c.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
		bn.waitIdle(b)
		return float64(m1) - float64(m0), fd1 - fd0
	}
	var mem float64
	var fds int
	for b.Loop() {
		dm, dfd := open(bn.direct[echoMode])
		pm, pfd := open(bn.proxied[echoMode])
		mem += pm - dm
		fds += pfd - dfd
	}
	b.ReportMetric(mem/float64(b.N)/n/1024, "proxy-KiB/conn")
	b.ReportMetric(float64(fds)/float64(b.N)/n, "proxy-fds/conn")
}
