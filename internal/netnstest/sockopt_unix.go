//go:build unix

package netnstest

import "syscall"

// reuseAddr sets SO_REUSEADDR on a socket before it binds, as a
// net.Dialer's Control function.
func reuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
