package ipvs

import (
	"net/netip"
	"time"
)

// DefaultInterface is the dummy interface that holds the service addresses
// in kube-proxy's IPVS mode.
const DefaultInterface = "kube-ipvs0"

// Scheduler is an IPVS scheduling algorithm, as ipvsadm names it.
type Scheduler string

// The schedulers.
const (
	RoundRobin                   Scheduler = "rr"
	WeightedRoundRobin           Scheduler = "wrr"
	LeastConnection              Scheduler = "lc"
	WeightedLeastConnection      Scheduler = "wlc"
	LocalityBasedLeastConnection Scheduler = "lblc"
	LocalityBasedLeastConnRepl   Scheduler = "lblcr"
	DestinationHashing           Scheduler = "dh"
	SourceHashing                Scheduler = "sh"
	ShortestExpectedDelay        Scheduler = "sed"
	NeverQueue                   Scheduler = "nq"
	MaglevHashing                Scheduler = "mh"
)

// Protocol is the transport protocol of a virtual server.
type Protocol string

// The protocols.
const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"
)

// Plan is the desired IPVS state of one owner: the virtual servers with
// their real servers, and the addresses bound to the dummy interface so
// that the node accepts traffic for them. Both address families are in one
// Plan.
//
// The zero Plan holds nothing; an applier given it uses DefaultInterface.
type Plan struct {
	// Interface is the dummy interface holding Addresses; empty means
	// DefaultInterface.
	Interface string
	// Addresses are the addresses bound to Interface (cluster IPs,
	// external IPs, load-balancer IPs), sorted, without duplicates. They
	// are bound as host routes (/32, /128).
	Addresses []netip.Addr
	// VirtualServers are the virtual servers, sorted by protocol, then
	// address and port, each (protocol, address, port) once.
	VirtualServers []VirtualServer
}

// VirtualServer is one IPVS service: a (protocol, address, port) the
// kernel balances over its real servers.
type VirtualServer struct {
	// Protocol is the transport protocol.
	Protocol Protocol
	// Addr is the virtual address and port.
	Addr netip.AddrPort
	// Scheduler is the scheduling algorithm; empty means RoundRobin.
	Scheduler Scheduler
	// Timeout, when positive, makes the service persistent (ClientIP
	// affinity): a client keeps its real server for this long after its
	// last connection. IPVS counts it in whole seconds.
	Timeout time.Duration
	// RealServers are the backends, sorted by address and port, each
	// once. Forwarding is always masquerading (NAT).
	RealServers []RealServer
}

// RealServer is one backend of a virtual server.
type RealServer struct {
	// Addr is the backend address and port.
	Addr netip.AddrPort
	// Weight is the scheduling weight: 1 for a serving endpoint, 0 for one
	// that takes no new connections (terminating).
	Weight int
}
