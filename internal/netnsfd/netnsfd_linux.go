// Package netnsfd opens the network namespace a backend's applier works
// in, the same way for every backend: by path, or by duplicating a
// descriptor the caller keeps, and only after checking that the file
// really is a network namespace.
//
// The returned *os.File must stay referenced (and open) while sockets are
// made from its descriptor: a file the garbage collector finalises closes
// its descriptor, and a netlink socket opened on a closed descriptor's
// number lands in the caller's own namespace. (An early probe wrote into
// the host namespace that way.)
package netnsfd

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens the network namespace at path or, when path is empty and fd
// is not negative, a duplicate of descriptor fd (close-on-exec, so the
// caller may close fd at any time after). With neither it returns nil and
// no error: the caller's own namespace. When the file is not a network
// namespace, the error wraps notNetNS, the backend's sentinel. Errors of
// os.Open and of the duplication are returned as they are, wrapped.
func Open(path string, fd int, notNetNS error) (*os.File, error) {
	var f *os.File
	switch {
	case path != "":
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
	case fd >= 0:
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("duplicating descriptor %d: %w", fd, err)
		}
		f = os.NewFile(uintptr(dup), fmt.Sprintf("netns fd %d", fd))
	default:
		return nil, nil
	}
	if typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE); err != nil || typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), notNetNS)
	}
	return f, nil
}
