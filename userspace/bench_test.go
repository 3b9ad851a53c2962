package userspace

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The benchmarks run only with SVCPLAN_BENCH=1: they take seconds of
// every core and their figures depend on the machine. Each compares the
// proxy with direct connections on loopback.
func requireBench(b *testing.B) {
	b.Helper()
	if os.Getenv("SVCPLAN_BENCH") != "1" {
		b.Skip("set SVCPLAN_BENCH=1 to measure the proxy")
	}
}

// sink is a TCP server that reads and discards, or, in echo mode, answers
// each byte it reads with itself.
type sink struct {
	ln   *net.TCPListener
	addr netip.AddrPort
	wg   sync.WaitGroup
	echo bool
}

func startSink(t testing.TB, echo bool) *sink {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort(), echo: echo}
	s.wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *sink) serve(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && s.echo {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// BenchmarkThroughput measures bulk TCP throughput on one connection,
// direct and through the proxy, interleaved so that both see the same
// machine load, and reports both and their ratio (target: at least 0.8).
// Each iteration sends 64 MiB each way.
//
//	SVCPLAN_BENCH=1 go test -run '^$' -bench . -benchtime 20x ./userspace/
func BenchmarkThroughput(b *testing.B) {
	requireBench(b)
	const size = 64 << 20
	s := startSink(b, false)
	p := newTestProxy(b)
	addr := applyOne(b, p, Listener{Name: "bulk", Backends: []netip.AddrPort{s.addr}})
	buf := make([]byte, 1<<20)
	send := func(to netip.AddrPort) time.Duration {
		c, err := net.Dial("tcp", to.String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c) // the sink has read everything
		return time.Since(start)
	}
	var direct, proxied time.Duration
	for b.Loop() {
		direct += send(s.addr)
		proxied += send(addr)
	}
	mibs := func(d time.Duration) float64 { return float64(b.N) * size / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(direct), "direct-MiB/s")
	b.ReportMetric(mibs(proxied), "proxy-MiB/s")
	b.ReportMetric(direct.Seconds()/proxied.Seconds(), "ratio")
}

// BenchmarkConnectionRate measures short connections (connect, one byte
// each way, close) from 4 clients at once, direct and through the proxy,
// and reports both rates and their ratio (target: at least 0.5). Each
// iteration makes 200 connections each way.
func BenchmarkConnectionRate(b *testing.B) {
	requireBench(b)
	const conns, workers = 200, 4
	s := startSink(b, true)
	p := newTestProxy(b)
	addr := applyOne(b, p, Listener{Name: "rate", Backends: []netip.AddrPort{s.addr}})
	run := func(to netip.AddrPort) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				one := []byte{1}
				for range conns / workers {
					c, err := net.Dial("tcp", to.String())
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write(one); err == nil {
						_, err = io.ReadFull(c, one)
					}
					if err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var direct, proxied time.Duration
	for b.Loop() {
		direct += run(s.addr)
		proxied += run(addr)
	}
	rate := func(d time.Duration) float64 { return float64(b.N) * conns / d.Seconds() }
	b.ReportMetric(rate(direct), "direct-conn/s")
	b.ReportMetric(rate(proxied), "proxy-conn/s")
	b.ReportMetric(direct.Seconds()/proxied.Seconds(), "ratio")
}

// BenchmarkIdleMemory measures what 1000 idle proxied connections cost the
// process beyond direct ones (both ends live in the test process): Go
// heap and goroutine stacks, and file descriptors, per connection (target:
// at most 64 KiB). Kernel socket buffers are not counted.
func BenchmarkIdleMemory(b *testing.B) {
	requireBench(b)
	const n = 1000
	s := startSink(b, true)
	p := newTestProxy(b)
	addr := applyOne(b, p, Listener{Name: "idle", Backends: []netip.AddrPort{s.addr}})
	open := func(to netip.AddrPort) (mem float64, fds int) {
		m0, fd0 := memInUse(), openFDs(b)
		cs := make([]net.Conn, 0, n)
		one := []byte{1}
		for range n {
			c, err := net.Dial("tcp", to.String())
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
			// One byte each way: the connection is established end to end.
			if _, err := c.Write(one); err == nil {
				_, err = io.ReadFull(c, one)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		m1, fd1 := memInUse(), openFDs(b)
		for _, c := range cs {
			c.Close()
		}
		// Let the proxy finish with them before the next measurement.
		settle(b, "connections still open", func() (bool, string) {
			s := statsOf(b, p, "idle")
			return s.Active == 0, fmt.Sprintf("%+v", s)
		})
		return float64(m1) - float64(m0), fd1 - fd0
	}
	var mem float64
	var fds int
	for b.Loop() {
		dm, dfd := open(s.addr)
		pm, pfd := open(addr)
		mem += pm - dm
		fds += pfd - dfd
	}
	b.ReportMetric(mem/float64(b.N)/n/1024, "proxy-KiB/conn")
	b.ReportMetric(float64(fds)/float64(b.N)/n, "proxy-fds/conn")
}

// memInUse returns the heap and stack memory in use after a collection.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}
