package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// nsHandle is an open network namespace that the proxy works in.
type nsHandle struct {
	h netns.NsHandle
	// orig is the namespace of the threads that goroutines not locked to
	// one run on, to which do returns its thread. Opening it once saves a
	// lookup in /proc on every dial.
	orig netns.NsHandle
}

// openNetNS opens the network namespace at path.
func openNetNS(path string) (*nsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	orig, err := unlockedThreadNetNS()
	if err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("reading the threads' network namespace: %w", err)
	}
	return &nsHandle{h: h, orig: orig}, nil
}

// unlockedThreadNetNS opens the network namespace of a thread that runs
// goroutines not locked to a thread. Every such thread is in the same
// namespace: the runtime ends a thread whose goroutine exits locked, and
// starts new threads from a clean template, not from locked ones.
func unlockedThreadNetNS() (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		h, err := netns.Get()
		done <- result{h, err}
	}()
	r := <-done
	return r.h, r.err
}

// do runs fn on an OS thread of its own that has joined the namespace.
// Sockets fn creates stay in the namespace afterwards. If the thread
// cannot return to its original namespace, it stays locked, and the
// runtime ends it with its goroutine.
func (n *nsHandle) do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(n.orig); err != nil {
			done <- ferr
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

func (n *nsHandle) close() error { return errors.Join(n.h.Close(), n.orig.Close()) }

// dialTCP connects to to from the namespace within timeout, or until ctx
// is done. Only socket(2) runs on a thread in the namespace: a socket
// stays in the namespace it was made in, so the connect and the wait for
// the handshake happen on any thread, and no OS thread stays locked (and
// the scheduler busy handing it over) for a round trip. With the
// namespace's handles kept open, this made a proxied connection cost
// about a tenth less CPU in BenchmarkConnectionRate.
func (n *nsHandle) dialTCP(ctx context.Context, to netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	opErr := func(op string, err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(to), Err: os.NewSyscallError(op, err)}
	}
	sa, family := sockaddrOf(to)
	var fd int
	err := n.do(func() error {
		var err error
		fd, err = syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, opErr("socket", err)
	}
	// A non-blocking descriptor makes a pollable file, whose deadlines work.
	f := os.NewFile(uintptr(fd), "tcp "+to.String())
	defer f.Close()
	if err := syscall.Connect(fd, sa); err != nil && !errors.Is(err, syscall.EINPROGRESS) {
		return nil, opErr("connect", err)
	}
	if err := waitConnected(ctx, f, timeout); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, context.Cause(ctx))
		}
		return nil, opErr("connect", err)
	}
	c, err := net.FileConn(f) // a duplicate of fd; f closes the original
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", to, err)
	}
	return c.(*net.TCPConn), nil
}

// waitConnected waits until the non-blocking connect on f completes, as
// net.Dialer does: until the socket is writable with no pending error and
// has a peer. It returns the connect's error, or os.ErrDeadlineExceeded
// after timeout or once ctx is done.
func waitConnected(ctx context.Context, f *os.File, timeout time.Duration) error {
	if err := f.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		switch {
		case err != nil:
			connErr = err
			return true
		case v == 0:
			_, err := syscall.Getpeername(int(fd))
			return err == nil
		}
		switch e := syscall.Errno(v); e {
		case syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
			return false
		default:
			connErr = e
			return true
		}
	})
	if werr != nil {
		return werr
	}
	return connErr
}

// sockaddrOf returns the socket address and family of ap, whose address
// has no zone.
func sockaddrOf(ap netip.AddrPort) (syscall.Sockaddr, int) {
	if a := ap.Addr().Unmap(); a.Is4() {
		return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, syscall.AF_INET
	}
	return &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, syscall.AF_INET6
}
