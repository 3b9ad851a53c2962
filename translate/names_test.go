package translate

import "testing"

// The expected names are kube-proxy's, from its proxier_test.go.
func TestChainNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"service port", ServicePortChainName(PrefixServiceCluster, "ns1/svc1:p80", "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{"protocol case", ServicePortChainName(PrefixServiceCluster, "ns1/svc1:p80", "TCP"), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{"kubernetes service", ServicePortChainName(PrefixServiceCluster, "default/kubernetes:https", "tcp"), "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		{"same hash other prefix", ServicePortChainName(PrefixServiceExternal, "ns1/svc1:p80", "tcp"), "KUBE-EXT-XPGD46QRK7WJZT7O"},
		{"firewall", ServicePortChainName(PrefixServiceFirewall, "ns5/svc5:p80", "tcp"), "KUBE-FW-NUKIZ6OKUXPJNT4C"},
		{"endpoint", EndpointChainName("ns1/svc1:p80", "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{"endpoint protocol case", EndpointChainName("ns1/svc1:p80", "TCP", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{"endpoint 2", EndpointChainName("ns5/svc5:p80", "tcp", "10.180.0.3:80"), "KUBE-SEP-I77PXRDZVX7PMWMN"},
		{"unnamed port", ServicePortChainName(PrefixServiceCluster, "ns1/svc1", "tcp"), "KUBE-SVC-AQI2S6QIMU7PVVRP"},
		{"unnamed port endpoint", EndpointChainName("ns1/svc1", "tcp", "10.0.1.1:80"), "KUBE-SEP-3JOIVZTXZZRGORX4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("name = %s, want %s", tt.got, tt.want)
			}
		})
	}
}

func TestChainNamesFit(t *testing.T) {
	long := "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0/abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0:abcdefghijklmno"
	for _, p := range []string{PrefixServiceCluster, PrefixServiceLocal, PrefixServiceExternal, PrefixServiceFirewall} {
		if n := ServicePortChainName(p, long, "sctp"); len(n) > 28 {
			t.Errorf("ServicePortChainName(%s, ...) = %s, %d characters, want at most 28", p, n, len(n))
		}
	}
	if n := EndpointChainName(long, "udp", "[fd00::1]:65535"); len(n) > 28 {
		t.Errorf("EndpointChainName = %s, %d characters, want at most 28", n, len(n))
	}
}
