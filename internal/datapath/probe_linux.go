package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Prober opens TCP connections from the network namespace of the thread
// that calls it and times their set-up. Each connection is bound to the
// next source port of its range, wrapping around, so that successive
// samples are distinct conntrack flows, and is closed with a reset. A
// Prober is not safe for concurrent use.
type Prober struct {
	first, last uint16
	next        uint16
}

// NewProber returns a Prober that takes source ports first..last in turn.
// The range should be wide enough that a port comes round again only
// after its conntrack entry (closed by a reset: 10 s) has gone.
func NewProber(first, last uint16) (*Prober, error) {
	if first == 0 || last < first {
		return nil, fmt.Errorf("datapath prober: port range %d..%d is empty or starts at 0", first, last)
	}
	return &Prober{first: first, last: last, next: first}, nil
}

// port returns the next source port.
func (p *Prober) port() uint16 {
	port := p.next
	if p.next == p.last {
		p.next = p.first
	} else {
		p.next++
	}
	return port
}

// Connect connects to dst, an IPv4 address and port, from the calling
// thread's namespace and returns how long connect(2) took: from sending
// the SYN to receiving the SYN/ACK, plus the system call. It gives up
// after timeout. Ports that another socket holds are skipped. The
// connection is then reset.
func (p *Prober) Connect(dst netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	if !dst.Addr().Is4() {
		return 0, fmt.Errorf("connect %s: datapath prober speaks IPv4 only", dst)
	}
	sa := &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	for range int(p.last-p.first) + 1 {
		port := p.port()
		d, err := connectFrom(port, sa, timeout)
		if errors.Is(err, unix.EADDRINUSE) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("connect %s from port %d: %w", dst, port, err)
		}
		return d, nil
	}
	return 0, fmt.Errorf("connect %s: every source port in %d..%d is in use", dst, p.first, p.last)
}

// connectFrom makes a non-blocking socket bound to port, times its
// connect to sa until the kernel reports it established (or failed), and
// closes it with a reset.
func connectFrom(port uint16, sa *unix.SockaddrInet4, timeout time.Duration) (time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	// A zero linger time makes close send a reset: no TIME_WAIT.
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return 0, fmt.Errorf("set SO_LINGER: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)}); err != nil {
		return 0, fmt.Errorf("bind: %w", err)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return 0, err
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, fmt.Errorf("no answer within %v: %w", timeout, unix.ETIMEDOUT)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("poll: %w", err)
		}
		break
	}
	d := time.Since(start)
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return 0, fmt.Errorf("read SO_ERROR: %w", err)
	}
	if soerr != 0 {
		return 0, unix.Errno(soerr)
	}
	return d, nil
}
