package proxier

import (
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
)

// newIPTables makes the kernel iptables applier of family; extra options
// come after the caller's ([WithIPTablesOptions]).
func (c *config) newIPTables(family iptables.Family, extra ...iptables.Option) (iptables.Applier, error) {
	opts := []iptables.Option{iptables.WithLogger(c.logger)}
	if c.netnsPath != "" {
		opts = append(opts, iptables.WithNetNS(c.netnsPath))
	}
	opts = append(opts, c.iptablesOpts...)
	k, err := iptables.New(family, append(opts, extra...)...)
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

// newIPSet makes the kernel ipset applier.
func (c *config) newIPSet() (ipset.Applier, error) {
	opts := []ipset.Option{ipset.WithLogger(c.logger)}
	if c.netnsPath != "" {
		opts = append(opts, ipset.WithNetNS(c.netnsPath))
	}
	k, err := ipset.New(append(opts, c.ipsetOpts...)...)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// newIPVS makes the kernel IPVS applier.
func (c *config) newIPVS() (ipvs.Applier, error) {
	opts := []ipvs.Option{ipvs.WithLogger(c.logger)}
	if c.netnsPath != "" {
		opts = append(opts, ipvs.WithNetNS(c.netnsPath))
	}
	k, err := ipvs.New(append(opts, c.ipvsOpts...)...)
	if err != nil {
		return nil, err
	}
	return k, nil
}
