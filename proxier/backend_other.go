//go:build !linux

package proxier

import (
	"fmt"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
)

func (c *config) newIPTables(family iptables.Family, _ ...iptables.Option) (iptables.Applier, error) {
	return nil, fmt.Errorf("making the %s iptables applier: %w", family, ErrNotLinux)
}

func (c *config) newNFTables() (nftables.Applier, error) {
	return nil, fmt.Errorf("making the nftables applier: %w", ErrNotLinux)
}

func (c *config) newIPSet() (ipset.Applier, error) {
	return nil, fmt.Errorf("making the ipset applier: %w", ErrNotLinux)
}

func (c *config) newIPVS() (ipvs.Applier, error) {
	return nil, fmt.Errorf("making the ipvs applier: %w", ErrNotLinux)
}
