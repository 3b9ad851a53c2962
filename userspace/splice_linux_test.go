package userspace

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// spliceChildEnv tells the test binary that it runs under strace for
// TestTCPCopyUsesSplice.
const spliceChildEnv = "SVCPLAN_USERSPACE_SPLICE_CHILD"

// TestTCPCopyUsesSplice checks that the proxy's TCP copy goes through the
// kernel: it runs a transfer in a child test process under strace and
// counts the bytes splice(2) moved. The backend (digest mode) and the
// client read and write through user-space buffers, so every splice call
// is the proxy's.
func TestTCPCopyUsesSplice(t *testing.T) {
	const size = 8 << 20
	if os.Getenv(spliceChildEnv) == "1" {
		b := startBackend(t, "digest", digestMode)
		p := newTestProxy(t)
		addr := applyOne(t, p, Listener{Name: "splice", Backends: addrsOf(b)})
		if _, err := exchange(addr, randomBytes(size), true); err != nil {
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
	// Each byte is spliced twice: socket to pipe, pipe to socket.
	if moved < 2*size {
		t.Errorf("splice(2) moved %d bytes in %d calls, want at least %d: the copy does not use splice", moved, calls, 2*size)
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
