package proxier

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// nsListener listens in the network namespace at path, or in the
// caller's when path is empty.
type nsListener struct{ path string }

// Listen opens a TCP listener on addr from an OS thread locked inside the
// namespace; the socket stays in the namespace afterwards.
func (l nsListener) Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	if l.path == "" {
		return lc.Listen(ctx, "tcp", addr)
	}
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("reading the thread's network namespace: %w", err)}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(l.path)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("opening network namespace %s: %w", l.path, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("entering network namespace %s: %w", l.path, err)}
			return
		}
		ln, lerr := lc.Listen(ctx, "tcp", addr)
		if err := netns.Set(orig); err != nil {
			// The thread stays locked; the runtime ends it with this
			// goroutine.
			done <- result{ln, lerr}
			return
		}
		runtime.UnlockOSThread()
		done <- result{ln, lerr}
	}()
	r := <-done
	return r.ln, r.err
}
