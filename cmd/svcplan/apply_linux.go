package main

import (
	"errors"
	"os"
)

// canApply tells whether this process may change the kernel's rules.
func canApply() error {
	if os.Geteuid() != 0 {
		return errors.New("changing the kernel's rules needs root (CAP_NET_ADMIN); run as root, or use 'svcplan plan' for a dry run")
	}
	return nil
}
