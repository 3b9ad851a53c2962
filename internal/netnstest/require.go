package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// RequireKernelEnv names the environment variable that, set to 1, turns
// every skip for a missing kernel feature, privilege or tool into a test
// failure, so that CI cannot pass by skipping the kernel tests.
const RequireKernelEnv = "SVCPLAN_REQUIRE_KERNEL"

// Require skips t unless it runs on Linux as root and every named tool is
// on PATH; with SVCPLAN_REQUIRE_KERNEL=1 it fails t instead. The reason
// names what is missing.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		skipOrFail(t, "network namespaces need Linux, not "+runtime.GOOS)
		return
	}
	if uid := os.Geteuid(); uid != 0 {
		skipOrFail(t, fmt.Sprintf("kernel test needs root, running as uid %d", uid))
		return
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		skipOrFail(t, "kernel test needs "+strings.Join(missing, ", ")+" on PATH")
	}
}

// skipOrFail skips t with reason, or fails it when RequireKernelEnv is 1.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireKernelEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, RequireKernelEnv)
	}
	t.Skip(reason)
}
