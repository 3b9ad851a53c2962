package kube

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/proxy"
)

// nodeA is node-a's Node object: two addresses, two pod CIDRs.
const nodeA = `---
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:244:0:1::/64"]}
status: {addresses: [{type: InternalIP, address: 10.0.0.10}, {type: InternalIP, address: 10.0.0.99}, {type: InternalIP, address: "fd00::10"}]}
`

func kubeProxyConfig(body string) string {
	return "---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n" + body + "\n"
}

func intPtr(i int) *int { return &i }

func TestStateForConfig(t *testing.T) {
	tests := []struct {
		name      string
		stream    string
		opts      []Option
		want      proxy.Config
		wantWarns []string
		wantErr   string
	}{
		{
			name:   "no configuration",
			stream: nodeA,
		},
		{
			name: "iptables mode",
			stream: nodeA + kubeProxyConfig(`mode: iptables
clusterCIDR: " 10.244.0.1/16, fd00:244::/56"
iptables: {masqueradeAll: true, masqueradeBit: 12, syncPeriod: 30s}
nftables: {masqueradeBit: 3}
nodePortAddresses: [10.0.0.0/24, primary, 10.0.0.10/32]
metricsBindAddress: 0.0.0.0:10249`),
			want: proxy.Config{
				ClusterCIDRs:      prefixes("10.244.0.0/16", "fd00:244::/56"),
				MasqueradeAll:     true,
				MasqueradeBit:     intPtr(12),
				NodePortAddresses: prefixes("10.0.0.0/24", "10.0.0.10/32", "fd00::10/128"),
			},
		},
		{
			name: "nftables mode: its own section, primary NodePort addresses by default",
			stream: nodeA + kubeProxyConfig(`mode: nftables
iptables: {masqueradeAll: true, masqueradeBit: 12}
nftables: {masqueradeBit: 3}`),
			want: proxy.Config{
				MasqueradeBit:     intPtr(3),
				NodePortAddresses: prefixes("10.0.0.10/32", "fd00::10/128"),
			},
		},
		{
			name:   "localhost and all keywords",
			stream: nodeA + kubeProxyConfig(`nodePortAddresses: [all, localhost, " 192.0.2.0/24 "]`),
			want: proxy.Config{
				NodePortAddresses: prefixes("0.0.0.0/0", "127.0.0.0/8", "192.0.2.0/24", "::/0", "::1/128"),
			},
		},
		{
			name:   "primary without a Node object",
			stream: kubeProxyConfig(`nodePortAddresses: [primary]`),
			wantWarns: []string{
				"Node node-a: no Node object: the node has no known address or zone",
			},
		},
		{
			name: "options override the configuration",
			stream: nodeA + kubeProxyConfig(`clusterCIDR: 10.244.0.0/16
iptables: {masqueradeAll: true, masqueradeBit: 12}
nodePortAddresses: [primary]`),
			opts: []Option{
				WithClusterCIDRs(netip.MustParsePrefix("10.100.0.0/16")),
				WithMasqueradeAll(false),
				WithMasqueradeBit(5),
				WithNodePortAddresses(netip.MustParsePrefix("10.0.0.0/8")),
				WithNodePortRange(proxy.PortRange{Min: 20000, Max: 22767}),
			},
			want: proxy.Config{
				ClusterCIDRs:      prefixes("10.100.0.0/16"),
				MasqueradeBit:     intPtr(5),
				NodePortAddresses: prefixes("10.0.0.0/8"),
				NodePortRange:     proxy.PortRange{Min: 20000, Max: 22767},
			},
		},
		{
			name:   "options without a configuration; the last one wins",
			stream: nodeA,
			opts:   []Option{WithMasqueradeAll(true), WithMasqueradeBit(1), WithMasqueradeBit(2)},
			want:   proxy.Config{MasqueradeAll: true, MasqueradeBit: intPtr(2)},
		},
		{
			name: "detectLocalMode NodeCIDR uses the Node's pod CIDRs",
			stream: nodeA + kubeProxyConfig(`detectLocalMode: NodeCIDR
clusterCIDR: 10.244.0.0/16`),
			want: proxy.Config{ClusterCIDRs: prefixes("10.244.1.0/24", "fd00:244:0:1::/64")},
		},
		{
			name: "detectLocalMode NodeCIDR without pod CIDRs",
			stream: "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n" + kubeProxyConfig(`detectLocalMode: NodeCIDR
clusterCIDR: 10.244.0.0/16`),
			wantWarns: []string{
				"document 2 (line 6): KubeProxyConfiguration: detectLocalMode NodeCIDR: Node node-a has no spec.podCIDRs: traffic from pods is not told apart from other traffic",
			},
		},
		{
			name:   "detectLocalMode BridgeInterface",
			stream: nodeA + kubeProxyConfig(`detectLocalMode: BridgeInterface`),
			wantWarns: []string{
				"document 2 (line 8): KubeProxyConfiguration: detectLocalMode BridgeInterface is not supported: traffic from pods is not told apart from other traffic",
			},
		},
		{
			name:   "detectLocalMode BridgeInterface overridden by an option",
			stream: nodeA + kubeProxyConfig(`detectLocalMode: BridgeInterface`),
			opts:   []Option{WithClusterCIDRs(netip.MustParsePrefix("10.244.0.0/16"))},
			want:   proxy.Config{ClusterCIDRs: prefixes("10.244.0.0/16")},
		},
		{
			name:    "a bad cluster CIDR",
			stream:  nodeA + kubeProxyConfig(`clusterCIDR: 10.244.0.0/16,10.245.0.0/40`),
			wantErr: `applying KubeProxyConfiguration: clusterCIDR: "10.245.0.0/40" is not a CIDR: prefix length 40 is too long`,
		},
		{
			name:    "a bad NodePort address",
			stream:  nodeA + kubeProxyConfig(`nodePortAddresses: [primary, everything]`),
			wantErr: `applying KubeProxyConfiguration: nodePortAddresses[1]: "everything" is not a CIDR`,
		},
		{
			name:    "an unknown detectLocalMode",
			stream:  nodeA + kubeProxyConfig(`detectLocalMode: PodCIDR`),
			wantErr: `applying KubeProxyConfiguration: detectLocalMode "PodCIDR": unknown mode`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, warns, err := StateFor(mustRead(t, tt.stream), "node-a", tt.opts...)
			if gotErr := errString(err); gotErr != tt.wantErr {
				t.Fatalf("StateFor() error = %q, want %q", gotErr, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, st.Config, cmpNet()); diff != "" {
				t.Errorf("StateFor().Config mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarns, warnStrings(warns)); diff != "" {
				t.Errorf("StateFor() warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestOptionsCopyTheirInput(t *testing.T) {
	cidrs := prefixes("10.244.0.0/16")
	addrs := prefixes("10.0.0.0/8")
	opts := []Option{WithClusterCIDRs(cidrs...), WithNodePortAddresses(addrs...)}
	cidrs[0], addrs[0] = netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16")
	st, _, err := StateFor(&Objects{}, "n", opts...)
	if err != nil {
		t.Fatalf("StateFor() error = %v", err)
	}
	st.Config.ClusterCIDRs[0] = netip.Prefix{}
	st2, _, _ := StateFor(&Objects{}, "n", opts...)
	want := proxy.Config{ClusterCIDRs: prefixes("10.244.0.0/16"), NodePortAddresses: prefixes("10.0.0.0/8")}
	if diff := cmp.Diff(want, st2.Config, cmpNet()); diff != "" {
		t.Errorf("StateFor().Config mismatch (-want +got):\n%s", diff)
	}
}

func TestProxyConfigApply(t *testing.T) {
	yes, bit := true, int32(7)
	pc := &ProxyConfig{
		HostnameOverride:  "  Worker-1 ",
		ClusterCIDR:       "10.244.0.0/16",
		NodePortAddresses: []string{"primary"},
		IPTables:          MasqueradeConfig{MasqueradeAll: &yes, MasqueradeBit: &bit},
	}
	if got, want := pc.NodeName(), "worker-1"; got != want {
		t.Errorf("NodeName() = %q, want %q", got, want)
	}
	// Fields the configuration does not set stay as they were.
	cfg := proxy.Config{NodePortRange: proxy.PortRange{Min: 1, Max: 2}, NodePortAddresses: prefixes("192.0.2.0/24")}
	if err := pc.Apply(&cfg, nil); err != nil {
		t.Fatalf("Apply() error = %v", err)
	}
	want := proxy.Config{
		ClusterCIDRs:  prefixes("10.244.0.0/16"),
		MasqueradeAll: true,
		MasqueradeBit: intPtr(7),
		NodePortRange: proxy.PortRange{Min: 1, Max: 2},
	}
	if diff := cmp.Diff(want, cfg, cmpNet()); diff != "" {
		t.Errorf("Apply() mismatch (-want +got):\n%s", diff)
	}
}
