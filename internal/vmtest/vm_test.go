package vmtest_test

import (
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/vmtest"
)

// TestVM boots the Debian cloud kernel in qemu and runs this package's
// TestGuest* tests there: dummy links, IPVS through netlink, the command
// line tools and real TCP through a netnstest topology.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 4 * time.Minute})
}
