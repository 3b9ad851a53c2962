package ipset

import "net/netip"

// Type is an ipset type: how members are stored and matched.
type Type string

// The set types kube-proxy's IPVS mode uses.
const (
	// TypeHashIP holds addresses.
	TypeHashIP Type = "hash:ip"
	// TypeHashIPPort holds address, protocol and port.
	TypeHashIPPort Type = "hash:ip,port"
	// TypeHashIPPortIP holds address, protocol, port and a second address.
	TypeHashIPPortIP Type = "hash:ip,port,ip"
	// TypeHashIPPortNet holds address, protocol, port and a network.
	TypeHashIPPortNet Type = "hash:ip,port,net"
	// TypeBitmapPort holds ports (of any protocol) in a fixed range.
	TypeBitmapPort Type = "bitmap:port"
)

// Family is the address family of a hash set. Bitmap sets have none.
type Family string

// The families.
const (
	IPv4 Family = "inet"
	IPv6 Family = "inet6"
)

// Protocol is the protocol of an entry with a port.
type Protocol string

// The protocols.
const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"
)

// Plan is the desired content of the sets one owner keeps: every set with
// its complete member list. Sets of both families may be in one Plan; their
// names differ (kube-proxy prefixes IPv6 sets with "KUBE-6-").
//
// The zero Plan holds no sets.
type Plan struct {
	// Sets are the sets in render order; each name appears once.
	Sets []Set
}

// Set is one ipset and all its members.
type Set struct {
	// Name is the set name, at most 31 bytes.
	Name string
	// Type is the set type.
	Type Type
	// Family is the address family of a hash set; empty for a bitmap set.
	Family Family
	// PortRange is the range of a bitmap:port set, First..Last inclusive;
	// unused (zero) for hash sets.
	PortRange PortRange
	// Comment says what the set is for; empty means none. Rendered as the
	// set's "comment" and kept to printable ASCII.
	Comment string
	// Entries are the members, sorted and without duplicates (see
	// [Entry.Compare]).
	Entries []Entry
}

// PortRange is an inclusive port range.
type PortRange struct {
	// First is the lowest port.
	First uint16
	// Last is the highest port.
	Last uint16
}

// Entry is one member of a set. Which fields are used depends on the set
// type:
//
//	hash:ip            IP
//	hash:ip,port       IP, Protocol, Port
//	hash:ip,port,ip    IP, Protocol, Port, IP2
//	hash:ip,port,net   IP, Protocol, Port, Net
//	bitmap:port        Port
//
// Unused fields are zero.
type Entry struct {
	// IP is the first address.
	IP netip.Addr
	// Protocol is the protocol of Port; empty in hash:ip and bitmap:port.
	Protocol Protocol
	// Port is the port.
	Port uint16
	// IP2 is the second address of a hash:ip,port,ip entry.
	IP2 netip.Addr
	// Net is the network of a hash:ip,port,net entry.
	Net netip.Prefix
}
