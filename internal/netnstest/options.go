package netnstest

import (
	"errors"
	"fmt"
	"net/netip"
)

// Option changes how [New] builds a topology.
type Option func(*config)

// config is what New builds. Maps are keyed by family; pods by Site.
type config struct {
	node   map[Family]netip.Prefix
	client map[Family]netip.Prefix
	pods   [2]map[Family]netip.Prefix
	ipv6   bool
	errs   []error // from options given impossible values
}

// defaultConfig returns the addressing described in the package
// documentation.
func defaultConfig() config {
	return config{
		node: map[Family]netip.Prefix{
			IPv4: netip.MustParsePrefix("10.0.0.10/24"),
			IPv6: netip.MustParsePrefix("fd00::10/64"),
		},
		client: map[Family]netip.Prefix{
			IPv4: netip.MustParsePrefix("10.0.0.2/24"),
			IPv6: netip.MustParsePrefix("fd00::2/64"),
		},
		pods: [2]map[Family]netip.Prefix{
			Local: {
				IPv4: netip.MustParsePrefix("10.244.1.0/24"),
				IPv6: netip.MustParsePrefix("fd00:244:1::/64"),
			},
			Remote: {
				IPv4: netip.MustParsePrefix("10.244.2.0/24"),
				IPv6: netip.MustParsePrefix("fd00:244:2::/64"),
			},
		},
		ipv6: true,
	}
}

// WithLAN sets the node's and the client's address, with its prefix
// length, on the link between them, for the family of node; both must be
// in one subnet. The defaults are 10.0.0.10/24 and 10.0.0.2/24, and
// fd00::10/64 and fd00::2/64.
func WithLAN(node, client netip.Prefix) Option {
	return func(c *config) {
		f := FamilyOf(node.Addr())
		c.node[f], c.client[f] = node, client
	}
}

// WithPodCIDR sets the pod CIDR of site s for the family of cidr. Pods take
// its second address onwards; the node uses the first one as the pods'
// IPv4 gateway. The defaults are 10.244.1.0/24 and fd00:244:1::/64 for
// [Local], 10.244.2.0/24 and fd00:244:2::/64 for [Remote].
func WithPodCIDR(s Site, cidr netip.Prefix) Option {
	return func(c *config) {
		if s != Local && s != Remote {
			c.errs = append(c.errs, fmt.Errorf("WithPodCIDR(%d, %s): no such site", int(s), cidr))
			return
		}
		c.pods[s][FamilyOf(cidr.Addr())] = cidr.Masked()
	}
}

// WithoutIPv6 builds an IPv4-only topology, for kernels without IPv6.
func WithoutIPv6() Option {
	return func(c *config) { c.ipv6 = false }
}

// has reports whether the topology has addresses of family f.
func (c *config) has(f Family) bool { return f == IPv4 || c.ipv6 }

// validate reports every inconsistency in c at once.
func (c *config) validate() error {
	errs := append([]error(nil), c.errs...)
	for _, f := range []Family{IPv4, IPv6} {
		if !c.has(f) {
			continue
		}
		node, client := c.node[f], c.client[f]
		switch {
		case !node.IsValid() || !client.IsValid() || FamilyOf(node.Addr()) != f || FamilyOf(client.Addr()) != f:
			errs = append(errs, fmt.Errorf("%s LAN: node %s and client %s must both be %s prefixes", f, node, client, f))
		case node.Masked() != client.Masked():
			errs = append(errs, fmt.Errorf("%s LAN: node %s and client %s are in different subnets", f, node, client))
		case node.Addr() == client.Addr():
			errs = append(errs, fmt.Errorf("%s LAN: node and client share address %s", f, node.Addr()))
		}
		for _, s := range []Site{Local, Remote} {
			p := c.pods[s][f]
			if !p.IsValid() || FamilyOf(p.Addr()) != f {
				errs = append(errs, fmt.Errorf("%s pod CIDR: %s is not an %s prefix", s, p, f))
			} else if p.Overlaps(node) {
				errs = append(errs, fmt.Errorf("%s pod CIDR: %s overlaps the LAN %s", s, p, node.Masked()))
			}
		}
		if c.pods[Local][f].Overlaps(c.pods[Remote][f]) {
			errs = append(errs, fmt.Errorf("%s pod CIDRs %s and %s overlap", f, c.pods[Local][f], c.pods[Remote][f]))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netnstest options: %w", err)
	}
	return nil
}
