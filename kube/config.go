package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcplan/svcplan/proxy"
)

// The kube-proxy modes that change how a ProxyConfig is read.
const (
	modeNFTables = "nftables"
)

// The kube-proxy detectLocalMode values.
const (
	detectLocalClusterCIDR         = "ClusterCIDR"
	detectLocalNodeCIDR            = "NodeCIDR"
	detectLocalBridgeInterface     = "BridgeInterface"
	detectLocalInterfaceNamePrefix = "InterfaceNamePrefix"
)

// The keywords kube-proxy accepts in nodePortAddresses.
const (
	nodePortPrimary   = "primary"
	nodePortLocalhost = "localhost"
	nodePortAll       = "all"
)

// ProxyConfig holds the fields of a kube-proxy KubeProxyConfiguration
// (kubeproxy.config.k8s.io/v1alpha1) that svcplan uses; Read ignores the
// others. Field names and meanings are kube-proxy's. The zero ProxyConfig
// sets nothing.
type ProxyConfig struct {
	// HostnameOverride is the name of the node kube-proxy runs on. Empty
	// means the host name; see NodeName.
	HostnameOverride string `json:"hostnameOverride,omitempty"`
	// Mode is the proxy mode ("iptables", "ipvs", "nftables"). Empty means
	// iptables. It chooses whether the IPTables or the NFTables masquerade
	// settings apply, and the default of NodePortAddresses.
	Mode string `json:"mode,omitempty"`
	// ClusterCIDR is the pod network: one CIDR, or a comma-separated pair
	// for dual-stack clusters. Empty means unset.
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	// DetectLocalMode says how traffic from pods is told apart: by
	// ClusterCIDR (the default when empty), or NodeCIDR (the Node's pod
	// CIDRs). BridgeInterface and InterfaceNamePrefix cannot be expressed
	// in a proxy.Config.
	DetectLocalMode string `json:"detectLocalMode,omitempty"`
	// NodePortAddresses are the CIDRs of the node addresses NodePorts are
	// served on, and the keywords "primary" (the Node's primary IPv4 and
	// IPv6 addresses), "localhost" and "all". Nil means all addresses, or
	// "primary" in nftables mode.
	NodePortAddresses []string `json:"nodePortAddresses,omitempty"`
	// IPTables holds the masquerade settings of the iptables and ipvs
	// modes.
	IPTables MasqueradeConfig `json:"iptables"`
	// NFTables holds the masquerade settings of the nftables mode.
	NFTables MasqueradeConfig `json:"nftables"`
}

// MasqueradeConfig holds kube-proxy's masquerade settings of one mode.
type MasqueradeConfig struct {
	// MasqueradeAll masquerades all traffic to cluster IPs. Nil means
	// unset.
	MasqueradeAll *bool `json:"masqueradeAll,omitempty"`
	// MasqueradeBit is the bit of the packet mark that asks for masquerade.
	// Nil means unset.
	MasqueradeBit *int32 `json:"masqueradeBit,omitempty"`
}

// NodeName returns the node name c sets, HostnameOverride trimmed and
// lowercased as kube-proxy does, or "" if it sets none.
func (c *ProxyConfig) NodeName() string {
	return strings.ToLower(strings.TrimSpace(c.HostnameOverride))
}

// masquerade returns the masquerade settings of c's mode.
func (c *ProxyConfig) masquerade() MasqueradeConfig {
	if c.Mode == modeNFTables {
		return c.NFTables
	}
	return c.IPTables
}

// Apply sets the fields of cfg that c specifies: ClusterCIDRs,
// MasqueradeAll, MasqueradeBit and NodePortAddresses. node is the Node
// object of the node the settings are for, or nil if it is unknown; it
// supplies the primary addresses that the "primary" keyword of
// NodePortAddresses stands for, and the pod CIDRs of DetectLocalMode
// NodeCIDR. With node nil or without addresses "primary" stands for no
// address, so that a list of just "primary" leaves NodePortAddresses nil;
// this matters little, since such a node has no address to serve NodePorts
// on. Under DetectLocalMode BridgeInterface or InterfaceNamePrefix
// Apply leaves ClusterCIDRs alone. Apply reports a CIDR that does not parse
// or an unknown DetectLocalMode; it leaves the range checks to
// proxy.State.Validate.
func (c *ProxyConfig) Apply(cfg *proxy.Config, node *corev1.Node) error {
	cidrs, err := c.clusterCIDRs(node)
	if err != nil {
		return err
	}
	if cidrs != nil {
		cfg.ClusterCIDRs = cidrs
	}
	m := c.masquerade()
	if m.MasqueradeAll != nil {
		cfg.MasqueradeAll = *m.MasqueradeAll
	}
	if m.MasqueradeBit != nil {
		bit := int(*m.MasqueradeBit)
		cfg.MasqueradeBit = &bit
	}
	addrs := c.NodePortAddresses
	if len(addrs) == 0 && c.Mode == modeNFTables {
		addrs = []string{nodePortPrimary}
	}
	if len(addrs) > 0 {
		ps, err := nodePortPrefixes(addrs, node)
		if err != nil {
			return err
		}
		cfg.NodePortAddresses = ps
	}
	return nil
}

// clusterCIDRs returns the pod networks c names, or nil if it names none.
func (c *ProxyConfig) clusterCIDRs(node *corev1.Node) ([]netip.Prefix, error) {
	var list []string
	switch c.DetectLocalMode {
	case "", detectLocalClusterCIDR:
		if strings.TrimSpace(c.ClusterCIDR) == "" {
			return nil, nil
		}
		list = strings.Split(c.ClusterCIDR, ",")
	case detectLocalNodeCIDR:
		if node == nil {
			return nil, nil
		}
		list = node.Spec.PodCIDRs
		if len(list) == 0 && node.Spec.PodCIDR != "" {
			list = []string{node.Spec.PodCIDR}
		}
	case detectLocalBridgeInterface, detectLocalInterfaceNamePrefix:
		return nil, nil
	default:
		return nil, fmt.Errorf("detectLocalMode %q: unknown mode", c.DetectLocalMode)
	}
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("clusterCIDR: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// nodePortPrefixes expands kube-proxy's nodePortAddresses list.
func nodePortPrefixes(list []string, node *corev1.Node) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		switch s = strings.TrimSpace(s); s {
		case nodePortPrimary:
			for _, a := range primaryIPs(node) {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		case nodePortLocalhost:
			out = append(out, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		case nodePortAll:
			out = append(out, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
		default:
			p, err := parsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("nodePortAddresses[%d]: %w", i, err)
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Option changes the proxy.Config that StateFor builds. Options override
// the node's KubeProxyConfiguration.
type Option func(*stateOptions)

type stateOptions struct {
	config []func(*proxy.Config)
}

// WithClusterCIDRs sets the pod networks, one per family at most, as
// kube-proxy's --cluster-cidr does.
func WithClusterCIDRs(prefixes ...netip.Prefix) Option {
	ps := slices.Clone(prefixes)
	return func(o *stateOptions) {
		o.config = append(o.config, func(c *proxy.Config) { c.ClusterCIDRs = slices.Clone(ps) })
	}
}

// WithMasqueradeAll sets whether all traffic to cluster IPs is
// masqueraded, as kube-proxy's --masquerade-all does.
func WithMasqueradeAll(all bool) Option {
	return func(o *stateOptions) {
		o.config = append(o.config, func(c *proxy.Config) { c.MasqueradeAll = all })
	}
}

// WithMasqueradeBit sets the bit of the packet mark that asks for
// masquerade, as kube-proxy's --iptables-masquerade-bit does.
func WithMasqueradeBit(bit int) Option {
	return func(o *stateOptions) {
		o.config = append(o.config, func(c *proxy.Config) { b := bit; c.MasqueradeBit = &b })
	}
}

// WithNodePortAddresses limits the node addresses NodePorts are served on,
// as kube-proxy's --nodeport-addresses does with CIDRs.
func WithNodePortAddresses(prefixes ...netip.Prefix) Option {
	ps := slices.Clone(prefixes)
	return func(o *stateOptions) {
		o.config = append(o.config, func(c *proxy.Config) { c.NodePortAddresses = slices.Clone(ps) })
	}
}

// WithNodePortRange sets the range NodePorts must fall in. It is the API
// server's --service-node-port-range, which no object read by Read holds.
func WithNodePortRange(r proxy.PortRange) Option {
	return func(o *stateOptions) {
		o.config = append(o.config, func(c *proxy.Config) { c.NodePortRange = r })
	}
}
