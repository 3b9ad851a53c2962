package translate

import (
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/userspace"
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
	// IP of it; IPv4 is present when neither family is. In ModeUserspace
	// they hold the portal rules that send service traffic to the
	// Userspace listeners.
	IPTables []*iptables.Plan
	// NFTables are the nftables plans (ModeNFTables), one table per
	// family, IPv4 first, then IPv6, present by the same rule as the
	// IPTables plans.
	NFTables []*nftables.Plan
	// Userspace is the userspace proxy's listeners (ModeUserspace), both
	// families in one plan, IPv4 first; nil in the other modes.
	Userspace *userspace.Plan
	// IPSets are the ipsets of ModeIPVS, both families in one plan (IPv6
	// sets are named "KUBE-6-..."); nil in the other modes. In ModeIPVS
	// the IPTables plans hold the fixed rules that match these sets.
	IPSets *ipset.Plan
	// IPVS is the IPVS virtual servers and the addresses of the dummy
	// interface (ModeIPVS), both families in one plan; nil in the other
	// modes.
	IPVS *ipvs.Plan
}

// DefaultLargeClusterThreshold is the number of endpoints (in one family)
// above which the iptables plan drops its per-endpoint comments, as
// kube-proxy's "large cluster mode" does, to keep the rule text small.
const DefaultLargeClusterThreshold = 1000

// Option changes how [Compile] compiles a State.
type Option func(*options)

// options are the settings that Options change; the zero value is not the
// default (see defaultOptions).
type options struct {
	largeClusterThreshold int
	conntrackTCPLiberal   bool
	parallelism           int
	userspace             userspaceOptions
	ipvs                  ipvsOptions
}

func defaultOptions() options {
	return options{largeClusterThreshold: DefaultLargeClusterThreshold}
}

// WithLargeClusterThreshold sets the number of endpoints above which
// per-endpoint rule comments are left out (default
// [DefaultLargeClusterThreshold]). A negative n means always leave them
// out; zero leaves them out as soon as there is one endpoint.
func WithLargeClusterThreshold(n int) Option {
	return func(o *options) { o.largeClusterThreshold = n }
}

// WithConntrackTCPLiberal tells Compile that the node sets the
// nf_conntrack_tcp_be_liberal sysctl, so the rule dropping packets in
// conntrack state INVALID is left out of KUBE-FORWARD, as kube-proxy does.
func WithConntrackTCPLiberal() Option {
	return func(o *options) { o.conntrackTCPLiberal = true }
}

// WithParallelism sets how many goroutines compile services at once. Zero
// or less (the default) means runtime.GOMAXPROCS(0). The plan is the same
// whatever the value.
func WithParallelism(n int) Option {
	return func(o *options) { o.parallelism = n }
}
