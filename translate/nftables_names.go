package translate

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strconv"
)

// The chain and set name prefixes of kube-proxy's per-service-port and
// per-endpoint objects in nftables mode.
const (
	// NFTPrefixService names the chain that spreads Cluster-policy traffic
	// over a service port's endpoints.
	NFTPrefixService = "service-"
	// NFTPrefixLocal names the chain that spreads Local-policy traffic over
	// a service port's endpoints on this node.
	NFTPrefixLocal = "local-"
	// NFTPrefixExternal names the chain that external traffic (NodePort,
	// external IPs, load balancer IPs) enters.
	NFTPrefixExternal = "external-"
	// NFTPrefixFirewall names the chain that enforces load balancer source
	// ranges.
	NFTPrefixFirewall = "firewall-"
	// NFTPrefixEndpoint names the chain that DNATs to one endpoint.
	NFTPrefixEndpoint = "endpoint-"
	// NFTPrefixAffinity names the dynamic set that remembers the clients
	// of one endpoint under ClientIP affinity.
	NFTPrefixAffinity = "affinity-"
)

// nftHashLen is the number of base32 characters of the SHA-256 hash that
// starts an nftables name base.
const nftHashLen = 8

// nftNameBaseMax is the longest name base kube-proxy makes: the 256
// characters of an nftables name less 16 for the longest prefix.
const nftNameBaseMax = 256 - 16

// NFTServicePortNameBase returns kube-proxy's base for the names of a
// service port's nftables chains, "HASH-namespace/name/protocol/port",
// such as "ULMVA6XW-ns1/svc1/tcp/p80", where HASH is the first 8
// characters of the standard base32 encoding of the SHA-256 of the rest.
// protocol is lowercased; port is the port's name, empty for an unnamed
// port. A prefix such as [NFTPrefixService] makes the chain name.
func NFTServicePortNameBase(namespace, name, protocol, port string) string {
	b := appendServicePortName(nil, namespace, name, protocol, port)
	return string(nftHashAndTruncate(nil, b))
}

// NFTEndpointNameBase returns kube-proxy's base for the names of one
// endpoint's chain and affinity set,
// "HASH-namespace/name/protocol/port__ip/port", such as
// "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"; the colons of an IPv6
// address become dots. Names longer than kube-proxy allows are truncated,
// ending in "...", as kube-proxy truncates them.
func NFTEndpointNameBase(namespace, name, protocol, port string, endpoint netip.AddrPort) string {
	b := appendServicePortName(nil, namespace, name, protocol, port)
	b = appendEndpointSuffix(b, endpoint)
	return string(nftHashAndTruncate(nil, b))
}

// appendServicePortName appends "namespace/name/protocol/port" with the
// protocol lowercased.
func appendServicePortName(b []byte, namespace, name, protocol, port string) []byte {
	b = append(b, namespace...)
	b = append(b, '/')
	b = append(b, name...)
	b = append(b, '/')
	b = appendLower(b, protocol)
	b = append(b, '/')
	return append(b, port...)
}

// appendEndpointSuffix appends "__ip/port", with an IPv6 address's colons
// as dots.
func appendEndpointSuffix(b []byte, ep netip.AddrPort) []byte {
	b = append(b, "__"...)
	start := len(b)
	b = ep.Addr().AppendTo(b)
	for i := start; i < len(b); i++ {
		if b[i] == ':' {
			b[i] = '.'
		}
	}
	b = append(b, '/')
	return strconv.AppendUint(b, uint64(ep.Port()), 10)
}

// nftHashAndTruncate appends kube-proxy's hashAndTruncate of name to dst:
// 8 base32 characters of SHA-256(name), "-", name, cut to nftNameBaseMax
// characters ending in "..." when longer.
func nftHashAndTruncate(dst, name []byte) []byte {
	sum := sha256.Sum256(name)
	var h [nftHashLen]byte
	// Five bytes of hash encode to exactly eight characters.
	base32.StdEncoding.Encode(h[:], sum[:5])
	start := len(dst)
	dst = append(dst, h[:]...)
	dst = append(dst, '-')
	dst = append(dst, name...)
	if len(dst)-start > nftNameBaseMax {
		dst = append(dst[:start+nftNameBaseMax-3], "..."...)
	}
	return dst
}
