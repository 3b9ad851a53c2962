package userspace

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// nsHandle is an open network namespace that the proxy works in.
type nsHandle struct {
	h netns.NsHandle
}

// openNetNS opens the network namespace at path.
func openNetNS(path string) (*nsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	return &nsHandle{h: h}, nil
}

// do runs fn on an OS thread of its own that has joined the namespace.
// Sockets fn creates stay in the namespace afterwards. If the thread
// cannot return to its original namespace, it stays locked, and the
// runtime ends it with its goroutine.
func (n *nsHandle) do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("reading the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- ferr
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

func (n *nsHandle) close() error { return n.h.Close() }
