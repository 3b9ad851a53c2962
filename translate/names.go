package translate

import (
	"crypto/sha256"
	"encoding/base32"
)

// The chain-name prefixes of kube-proxy's per-service and per-endpoint
// chains in iptables mode.
const (
	// PrefixServiceCluster names the chain that spreads Cluster-policy
	// traffic over a service port's endpoints.
	PrefixServiceCluster = "KUBE-SVC-"
	// PrefixServiceLocal names the chain that spreads Local-policy traffic
	// over a service port's endpoints on this node.
	PrefixServiceLocal = "KUBE-SVL-"
	// PrefixServiceExternal names the chain that external traffic (NodePort,
	// external IPs, load balancer IPs) enters.
	PrefixServiceExternal = "KUBE-EXT-"
	// PrefixServiceFirewall names the chain that enforces load balancer
	// source ranges.
	PrefixServiceFirewall = "KUBE-FW-"
	// PrefixEndpoint names the chain that DNATs to one endpoint.
	PrefixEndpoint = "KUBE-SEP-"
)

// hashLen is the number of base32 characters of the SHA-256 hash that a
// chain name keeps.
const hashLen = 16

// ServicePortChainName returns kube-proxy's name for a per-service-port
// chain: prefix followed by the first 16 characters of the standard base32
// encoding of SHA-256(svcPortName + lowercase protocol). svcPortName is
// kube-proxy's name of the service port, "namespace/name:port", or
// "namespace/name" for an unnamed port; protocol may be given in any case
// ("TCP" and "tcp" give the same name).
func ServicePortChainName(prefix, svcPortName, protocol string) string {
	var h [hashLen]byte
	buf := make([]byte, 0, len(svcPortName)+len(protocol))
	buf = append(buf, svcPortName...)
	buf = appendLower(buf, protocol)
	hashName(&h, buf)
	return prefix + string(h[:])
}

// EndpointChainName returns kube-proxy's KUBE-SEP- chain name for one
// endpoint of a service port: the first 16 characters of the standard
// base32 encoding of SHA-256(svcPortName + lowercase protocol + endpoint),
// where endpoint is "ip:port" ("[ip6]:port" for IPv6).
func EndpointChainName(svcPortName, protocol, endpoint string) string {
	var h [hashLen]byte
	buf := make([]byte, 0, len(svcPortName)+len(protocol)+len(endpoint))
	buf = append(buf, svcPortName...)
	buf = appendLower(buf, protocol)
	buf = append(buf, endpoint...)
	hashName(&h, buf)
	return PrefixEndpoint + string(h[:])
}

// hashName writes the first 16 base32 characters of SHA-256(in) into h.
// Ten bytes of hash encode to exactly sixteen characters, so only those are
// encoded.
func hashName(h *[hashLen]byte, in []byte) {
	sum := sha256.Sum256(in)
	base32.StdEncoding.Encode(h[:], sum[:10])
}

// appendLower appends s to dst with ASCII letters lowercased.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}
