//go:build !unix

package vmtest

import "testing"

// lockVM does nothing where VMs are not run (see lock_unix.go).
func lockVM(*testing.T) (unlock func(), err error) { return func() {}, nil }
