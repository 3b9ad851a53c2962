package translate

import (
	"errors"
	"fmt"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

// ErrUnsupportedMode is returned by [Compile] for a proxy mode it cannot
// compile (yet).
var ErrUnsupportedMode = errors.New("unsupported proxy mode")

// ErrNilState is returned by [Compile] when given a nil State.
var ErrNilState = errors.New("nil state")

// Compile validates st and compiles it into the plan of one proxy mode.
//
// If st is invalid, Compile returns the error of [proxy.State.Validate],
// wrapped, and compiles nothing. Compile never modifies st, and the same st
// always gives byte-identical plan text, whatever the order of its services
// and endpoints and whatever [WithParallelism] says.
//
// For [ModeIPTables] the plan holds one [iptables.Plan] per address family
// (IPv4 first) in kube-proxy's v1.28+ layout, rule for rule: filter
// KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD, KUBE-NODEPORTS,
// KUBE-PROXY-FIREWALL and (IPv4) kubelet's KUBE-FIREWALL; nat
// KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ, then
// per service port (services sorted by namespace and name, ports in their
// order) its KUBE-EXT-, KUBE-FW-, KUBE-SVC-, KUBE-SVL- and KUBE-SEP-
// chains; and the jumps from the built-in chains. Chain names are
// kube-proxy's (see [ServicePortChainName]).
//
// For [ModeNFTables] the plan holds one [nftables.Plan] per family (IPv4
// first): the "kube-proxy" table in kube-proxy's nftables layout, with
// the base chains filter-prerouting, filter-input, filter-forward,
// filter-output (priority -110), filter-output-post-dnat (-90),
// nat-prerouting, nat-output (-100) and nat-postrouting (100); the maps
// service-ips, service-nodeports, no-endpoint-services,
// no-endpoint-nodeports and firewall-ips and the sets cluster-ips and
// nodeport-ips; then per service port its service-, local-, external-,
// firewall- and endpoint- chains and affinity- sets, named as kube-proxy
// names them (see [NFTServicePortNameBase]).
//
// For [ModeUserspace] the plan holds a [userspace.Plan], the listeners of
// the userspace proxy, and in IPTables the portal rules that send service
// traffic to them, per family in old kube-proxy's layout: nat
// KUBE-PORTALS-CONTAINER and KUBE-NODEPORT-CONTAINER (from PREROUTING)
// REDIRECT to the proxy port, KUBE-PORTALS-HOST and KUBE-NODEPORT-HOST
// (from OUTPUT) DNAT to the node's address and the proxy port, filter
// KUBE-NODEPORT-NON-LOCAL accepts new connections to NodePort proxy ports
// and to health check NodePorts; filter KUBE-SERVICES,
// KUBE-EXTERNAL-SERVICES and KUBE-PROXY-FIREWALL reject traffic to
// service ports without endpoints and drop what load balancer source
// ranges exclude, as in iptables mode. See [LocalListenerSuffix] for
// traffic policies and [WithUserspacePorts] for stable proxy ports; SCTP
// ports are left out.
//
// For [ModeIPVS] the plan holds kube-proxy's IPVS layout (see
// [WithIPVSScheduler]): in IPVS one virtual server per cluster IP,
// external IP and load balancer IP and port, and per NodePort on each
// node address (not loopback or link-local), masquerading (NAT) to the
// endpoints with weight 1 — under a Local policy the local ones, or the
// cluster ones when there are none — and to serving terminating
// endpoints not chosen with weight 0, persistent for ClientIP affinity;
// the cluster, external and load balancer IPs that are not node addresses
// bound to kube-ipvs0; in IPSets the seventeen KUBE- sets per family
// (IPv6 named by [IPVSSetName]); and in IPTables, per family, the fixed
// rules that match those sets (nat KUBE-SERVICES, KUBE-POSTROUTING,
// KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-MARK-MASQ; filter
// KUBE-FORWARD, KUBE-NODE-PORT, KUBE-PROXY-FIREWALL,
// KUBE-SOURCE-RANGES-FIREWALL, KUBE-IPVS-FILTER, KUBE-IPVS-OUT-FILTER),
// whose number does not grow with the number of services. The other
// modes return an error wrapping [ErrUnsupportedMode].
func Compile(st *proxy.State, mode Mode, opts ...Option) (*Plan, error) {
	if st == nil {
		return nil, fmt.Errorf("compiling: %w", ErrNilState)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("compiling invalid state: %w", err)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	switch mode {
	case ModeIPTables:
		plans, err := compileIPTables(st, &o)
		if err != nil {
			return nil, fmt.Errorf("compiling %s plan: %w", mode, err)
		}
		return &Plan{Mode: mode, IPTables: plans}, nil
	case ModeUserspace:
		us, plans, err := compileUserspace(st, &o)
		if err != nil {
			return nil, fmt.Errorf("compiling %s plan: %w", mode, err)
		}
		return &Plan{Mode: mode, Userspace: us, IPTables: plans}, nil
	case ModeIPVS:
		sets, servers, plans, err := compileIPVS(st, &o)
		if err != nil {
			return nil, fmt.Errorf("compiling %s plan: %w", mode, err)
		}
		return &Plan{Mode: mode, IPSets: sets, IPVS: servers, IPTables: plans}, nil
	case ModeNFTables:
		plans, err := compileNFTables(st, &o)
		if err != nil {
			return nil, fmt.Errorf("compiling %s plan: %w", mode, err)
		}
		return &Plan{Mode: mode, NFTables: plans}, nil
	default:
		return nil, fmt.Errorf("mode %q not supported yet: %w", mode, ErrUnsupportedMode)
	}
}

// families returns the address families a plan covers: a family is present
// when the node has an address of it or a service has a cluster IP of it,
// and IPv4 is present when neither family is. The result lists IPv4 before
// IPv6.
func families(st *proxy.State) (v4, v6 bool) {
	for _, a := range st.Node.IPs {
		if a.Is4() {
			v4 = true
		} else if a.Is6() {
			v6 = true
		}
	}
	for i := range st.Services {
		for _, a := range st.Services[i].ClusterIPs {
			if a.Is4() {
				v4 = true
			} else if a.Is6() {
				v6 = true
			}
		}
	}
	if !v4 && !v6 {
		v4 = true
	}
	return v4, v6
}

func compileIPTables(st *proxy.State, o *options) ([]*iptables.Plan, error) {
	v4, v6 := families(st)
	var plans []*iptables.Plan
	if v4 {
		p, err := compileFamily(st, false, o)
		if err != nil {
			return nil, fmt.Errorf("ipv4: %w", err)
		}
		plans = append(plans, p)
	}
	if v6 {
		p, err := compileFamily(st, true, o)
		if err != nil {
			return nil, fmt.Errorf("ipv6: %w", err)
		}
		plans = append(plans, p)
	}
	return plans, nil
}
