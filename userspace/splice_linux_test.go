package userspace

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
)

// spliceChildEnv tells the test binary that it runs under strace for
// TestTCPCopyUsesSplice.
const spliceChildEnv = "SVCPLAN_USERSPACE_SPLICE_CHILD"

// TestTCPCopyUsesSplice checks that the proxy's TCP copy goes through the
// kernel in both directions: it runs a transfer in a child test process
// under strace and counts the bytes splice(2) moved. The backend (echo
// through a user-space buffer) and the client read and write through
// user-space buffers, so every splice call is the proxy's.
func TestTCPCopyUsesSplice(t *testing.T) {
	const size = 8 << 20
	if os.Getenv(spliceChildEnv) == "1" {
		p := newTestProxy(t)
		addr := applyOne(t, p, Listener{Name: "splice", Backends: []netip.AddrPort{startBufferedEcho(t)}})
		if _, err := exchange(addr, randomBytes(size), false); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		skipOrFail(t, "strace not installed; the splice check needs it")
	}
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.CommandContext(t.Context(), strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=splice", "-o", trace,
		os.Args[0], "-test.run=^TestTCPCopyUsesSplice$", "-test.count=1")
	cmd.Env = append(os.Environ(), spliceChildEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("strace cannot run the test binary here (%v): %s", err, out))
	}
	text, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var moved int64
	calls := 0
	for _, m := range regexp.MustCompile(`(?m)splice(?:\(| resumed>).* = (\d+)$`).FindAllSubmatch(text, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		moved += n
		calls++
	}
	// Each byte is spliced twice (socket to pipe, pipe to socket) in each
	// direction: the backend echoes all it gets.
	if moved < 4*size {
		t.Errorf("splice(2) moved %d bytes in %d calls, want at least %d: the copy does not use splice both ways", moved, calls, 4*size)
	}
	t.Logf("splice(2) moved %d bytes in %d calls", moved, calls)
}

// skipOrFail skips the test for a missing tool, or fails it when
// SVCPLAN_REQUIRE_KERNEL=1 says every kernel-tier tool must be there.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("SVCPLAN_REQUIRE_KERNEL") == "1" {
		t.Fatal(why + " (SVCPLAN_REQUIRE_KERNEL=1)")
	}
	t.Skip(why)
}

// startBufferedEcho starts a TCP server on 127.0.0.1 that greets each
// connection with a line, as backends do, then echoes what it reads
// through a user-space buffer: unlike io.Copy between two *net.TCPConn,
// it never splices.
func startBufferedEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := io.WriteString(c, "echo\n"); err != nil {
					return
				}
				// Hiding the conns' types keeps io.CopyBuffer from
				// ReadFrom and WriteTo, and so from splice.
				buf := make([]byte, 64<<10)
				if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf); err == nil {
					_ = c.CloseWrite()
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
