//go:build !linux

package proxier

import (
	"context"
	"fmt"
	"net"
)

type nsListener struct{ path string }

func (l nsListener) Listen(ctx context.Context, addr string) (net.Listener, error) {
	if l.path != "" {
		return nil, fmt.Errorf("listening in network namespace %s: %w", l.path, ErrNotLinux)
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}
