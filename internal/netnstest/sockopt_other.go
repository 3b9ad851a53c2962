//go:build !unix

package netnstest

import (
	"errors"
	"syscall"
)

// reuseAddr refuses: fixed source ports are only supported on Unix, where
// the kernel tests run.
func reuseAddr(_, _ string, _ syscall.RawConn) error {
	return errors.New("set SO_REUSEADDR: not supported on this system")
}
