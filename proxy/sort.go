package proxy

import (
	"net/netip"
	"slices"
)

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, netip.Addr.Compare) }
