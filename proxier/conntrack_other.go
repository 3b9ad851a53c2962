//go:build !linux

package proxier

import (
	"context"
	"fmt"
)

type otherConntrack struct{}

func newConntrack(string) Conntrack { return otherConntrack{} }

func (otherConntrack) DeleteStale(context.Context, bool, *StaleFlows) (int, error) {
	return 0, fmt.Errorf("deleting conntrack entries: %w", ErrNotLinux)
}
