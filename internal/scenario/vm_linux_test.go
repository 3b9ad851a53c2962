package scenario_test

import (
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/vmtest"
)

// TestVM boots the VM tier's Debian kernel in qemu and runs this
// package's TestGuest tests there: the scenario table in IPVS mode, the
// graceful-termination drain and the IPVS dry-run invariant. It skips
// without root, qemu or the VM assets (fails under SVCPLAN_REQUIRE_VM=1).
// Guest code runs under software emulation, several times slower than
// here, hence the generous timeout.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 20 * time.Minute, Memory: 1536})
}
