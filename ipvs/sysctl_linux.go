package ipvs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// This file holds the sysctl half of the kernel store. /proc/sys/net
// shows the network namespace of the thread that opens a file there, so
// the files are opened, read and written from an OS thread switched into
// the applier's namespace.

func (k *kernelStore) sysctl(name string) (string, error) {
	var v string
	err := k.ns.do(func() error {
		b, err := os.ReadFile(sysctlPath(name))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, sysctlErr(name, err)
}

func (k *kernelStore) setSysctl(name, value string) error {
	err := k.ns.do(func() error { return os.WriteFile(sysctlPath(name), []byte(value+"\n"), 0o644) })
	return sysctlErr(name, err)
}

func sysctlPath(name string) string { return filepath.Join("/proc/sys", filepath.FromSlash(name)) }

// sysctlErr says that a missing net/ipv4/vs file means a kernel without
// IPVS.
func sysctlErr(name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist) && strings.HasPrefix(name, "net/ipv4/vs/"):
		return fmt.Errorf("%w: %w", ErrNoIPVS, err)
	}
	return privilege(err)
}

// do runs fn on an OS thread in the namespace: a goroutine of its own,
// locked to its thread, which joins the namespace and comes back to the
// thread's original one after fn. When coming back fails, the thread
// stays locked, and the runtime ends it with the goroutine, so no other
// goroutine ever runs in the namespace. For the caller's namespace fn
// runs as is.
func (h *nsHandle) do(fn func() error) error {
	if h.fd < 0 {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("reading the thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h.target()); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering the namespace: %w", privilege(err))
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leaving the namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	err := <-done
	runtime.KeepAlive(h.file)
	return err
}
