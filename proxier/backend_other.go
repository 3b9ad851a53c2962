//go:build !linux

package proxier

import (
	"fmt"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
)

func (c *config) newIPTables(family iptables.Family) (iptables.Applier, error) {
	return nil, fmt.Errorf("making the %s iptables applier: %w", family, ErrNotLinux)
}

func (c *config) newNFTables() (nftables.Applier, error) {
	return nil, fmt.Errorf("making the nftables applier: %w", ErrNotLinux)
}
