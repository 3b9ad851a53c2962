package ipvs

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// serviceFlag returns ipvsadm's option for a virtual server of protocol p:
// "-t", "-u" or "--sctp-service".
func serviceFlag(p Protocol) string {
	switch p {
	case UDP:
		return "-u"
	case SCTP:
		return "--sctp-service"
	}
	return "-t"
}

// appendService appends "-t 10.0.0.1:80" (IPv6 in brackets).
func appendService(b []byte, v *VirtualServer) []byte {
	b = append(b, serviceFlag(v.Protocol)...)
	b = append(b, ' ')
	return v.Addr.AppendTo(b)
}

// AppendTo appends v's "ipvsadm -S -n" lines to b: "-A -t ADDR -s SCHED"
// (with " -p SECONDS" when persistent), then one
// "-a -t ADDR -r REAL -m -w WEIGHT" per real server.
func (v *VirtualServer) AppendTo(b []byte) []byte {
	b = append(b, "-A "...)
	b = appendService(b, v)
	b = append(b, " -s "...)
	b = append(b, v.SchedulerOrDefault()...)
	if v.Timeout > 0 {
		b = append(b, " -p "...)
		b = strconv.AppendInt(b, int64(v.Timeout/time.Second), 10)
	}
	b = append(b, '\n')
	for _, r := range v.RealServers {
		b = append(b, "-a "...)
		b = appendService(b, v)
		b = append(b, " -r "...)
		b = r.Addr.AppendTo(b)
		b = append(b, " -m -w "...)
		b = strconv.AppendInt(b, int64(r.Weight), 10)
		b = append(b, '\n')
	}
	return b
}

// WriteTo writes p's virtual servers as "ipvsadm -R" input, in the shape
// "ipvsadm -S -n" prints (see [VirtualServer.AppendTo]), in plan order.
// Restored into a namespace without virtual servers, it gives exactly p's
// virtual and real servers; "ipvsadm -S -n" then prints the same lines,
// in the kernel's order. The addresses are not part of this text (see
// [Plan.AddressText]). WriteTo does not validate p; call [Plan.Validate]
// first.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var buf []byte
	for i := range p.VirtualServers {
		buf = p.VirtualServers[i].AppendTo(buf[:0])
		bw.Write(buf)
	}
	err := bw.Flush()
	return cw.n, err
}

// String returns p's virtual servers as "ipvsadm -R" input (see
// [Plan.WriteTo]).
func (p *Plan) String() string {
	var b strings.Builder
	p.WriteTo(&b)
	return b.String()
}

// AddressText returns the dummy interface and its addresses as "ip -batch"
// input: "link add IFACE type dummy", then one
// "addr add ADDR/32 dev IFACE" (/128 for IPv6) per address. Run in a
// namespace without the interface, it binds exactly p's addresses.
func (p *Plan) AddressText() string {
	iface := p.InterfaceOrDefault()
	var b []byte
	b = append(b, "link add "+iface+" type dummy\n"...)
	for _, a := range p.Addresses {
		b = append(b, "addr add "...)
		b = netip.PrefixFrom(a, a.BitLen()).AppendTo(b)
		b = append(b, " dev "+iface+"\n"...)
	}
	return string(b)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
