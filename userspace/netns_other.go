//go:build !linux

package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// nsHandle is an open network namespace; there are none off Linux.
type nsHandle struct{}

var errNoNetNS = errors.New("network namespaces need Linux")

func openNetNS(path string) (*nsHandle, error) {
	return nil, fmt.Errorf("opening network namespace %s: %w", path, errNoNetNS)
}

func (n *nsHandle) do(fn func() error) error { return errNoNetNS }

func (n *nsHandle) dialTCP(ctx context.Context, to netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	return nil, errNoNetNS
}

func (n *nsHandle) close() error { return nil }
