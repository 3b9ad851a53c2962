package translate

import (
	"github.com/svcplan/svcplan/iptables"
)

// Mode is a proxy mode.
type Mode string

// The proxy modes.
const (
	ModeIPTables  Mode = "iptables"
	ModeIPVS      Mode = "ipvs"
	ModeNFTables  Mode = "nftables"
	ModeUserspace Mode = "userspace"
)

// Plan is the compiled form of a State in one mode.
type Plan struct {
	// Mode is the mode compiled for.
	Mode Mode
	// IPTables are the iptables plans, IPv4 first, then IPv6. A family is
	// present when the node has an address of it or a service has a cluster
	// IP of it; IPv4 is present when neither family is.
	IPTables []*iptables.Plan
}
