package proxier

import (
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
)

// newIPTables makes the kernel iptables applier of family.
func (c *config) newIPTables(family iptables.Family) (iptables.Applier, error) {
	opts := []iptables.Option{iptables.WithLogger(c.logger)}
	if c.netnsPath != "" {
		opts = append(opts, iptables.WithNetNS(c.netnsPath))
	}
	k, err := iptables.New(family, append(opts, c.iptablesOpts...)...)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// newNFTables makes the kernel nftables applier.
func (c *config) newNFTables() (nftables.Applier, error) {
	opts := []nftables.Option{nftables.WithLogger(c.logger)}
	if c.netnsPath != "" {
		opts = append(opts, nftables.WithNetNS(c.netnsPath))
	}
	k, err := nftables.New(append(opts, c.nftablesOpts...)...)
	if err != nil {
		return nil, err
	}
	return k, nil
}
