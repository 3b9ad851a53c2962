//go:build !linux

package userspace

import "net"

// destOOBSize is zero off Linux: the proxy does not learn there which
// local address a datagram was sent to, and replies leave from the
// address the kernel picks.
const destOOBSize = 0

func enableDest(*net.UDPConn, bool) error { return nil }

func parseDest([]byte) dest { return dest{} }

func destOOB(dest) []byte { return nil }
