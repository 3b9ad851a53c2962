//go:build unix

package vmtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// lockVM waits until no other VM of this package runs on the host, up to
// t's deadline, and returns the function that lets the next one go.
//
// go test runs packages in parallel, and guests under software emulation
// that compete for the host's two cores run so slowly that their kernels
// stall (CI once saw a guest report soft lockups for eight minutes with
// three VMs booted at once), so VMs take turns. The lock is an flock on a
// file in the temporary directory, released by the kernel if the process
// dies.
func lockVM(t *testing.T) (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "svcplan-vmtest.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmtest: open the VM lock: %w", err)
	}
	deadline, hasDeadline := t.Deadline()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vmtest: lock %s: %w", path, err)
		}
		if hasDeadline && time.Until(deadline) < bootAllowance {
			f.Close()
			return nil, fmt.Errorf("vmtest: another VM held %s until the test's deadline was near", path)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
