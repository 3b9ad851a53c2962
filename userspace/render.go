package userspace

import (
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// String returns p as a table, one listener a line in plan order:
//
//	LISTENER      PROTOCOL  ADDRESS        AFFINITY  UDP IDLE  BACKENDS
//	ns1/svc1:p80  tcp       0.0.0.0:20000  -         -         10.180.0.1:80 10.180.0.2:80
//
// AFFINITY is the ClientIP affinity timeout ("-" for none), UDP IDLE the
// session idle timeout of UDP listeners, BACKENDS the backends in plan
// order or "none". A plan without listeners prints the header alone.
func (p *Plan) String() string {
	var b strings.Builder
	_, _ = p.WriteTo(&b)
	return b.String()
}

// WriteTo writes p as [Plan.String] returns it.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	tw := tabwriter.NewWriter(cw, 0, 0, 2, ' ', 0)
	_, _ = io.WriteString(tw, "LISTENER\tPROTOCOL\tADDRESS\tAFFINITY\tUDP IDLE\tBACKENDS\n")
	var line strings.Builder
	for i := range p.Listeners {
		l := &p.Listeners[i]
		line.Reset()
		name := l.Name
		if name == "" {
			name = "-"
		}
		line.WriteString(name)
		line.WriteByte('\t')
		line.WriteString(strings.ToLower(string(l.ProtocolOrDefault())))
		line.WriteByte('\t')
		line.WriteString(l.Addr.String())
		line.WriteByte('\t')
		line.WriteString(durationOrDash(l.AffinityTimeout))
		line.WriteByte('\t')
		if l.ProtocolOrDefault() == ProtocolUDP {
			line.WriteString(l.UDPIdleTimeoutOrDefault().String())
		} else {
			line.WriteByte('-')
		}
		line.WriteByte('\t')
		if len(l.Backends) == 0 {
			line.WriteString("none")
		}
		for j, be := range l.Backends {
			if j > 0 {
				line.WriteByte(' ')
			}
			line.WriteString(be.String())
		}
		line.WriteByte('\n')
		_, _ = io.WriteString(tw, line.String())
	}
	err := tw.Flush()
	if err == nil {
		err = cw.err
	}
	return cw.n, err
}

// durationOrDash prints d, or "-" for zero.
func durationOrDash(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

// countWriter counts what it writes and keeps the first error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
	return n, err
}
