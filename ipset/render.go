package ipset

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultHashSize and DefaultMaxElem are the hash set sizes rendered in
// create lines, kube-proxy's values. A set with more members than
// DefaultMaxElem is created with maxelem equal to its member count.
const (
	DefaultHashSize = 1024
	DefaultMaxElem  = 65536
)

// String returns the entry as ipset prints it: "10.0.0.1",
// "10.0.0.1,tcp:80", "10.0.0.1,tcp:80,10.0.0.2",
// "10.0.0.1,tcp:80,10.0.0.0/24" (a full-length network prints as a bare
// address, as "ipset save" does) or, for a bitmap:port member, "30080".
// Which form is decided by the fields set: Net, then IP2, then Protocol,
// then IP; none of them means a port.
func (e Entry) String() string { return string(e.AppendTo(nil)) }

// AppendTo appends the text of e (see [Entry.String]) to b.
func (e Entry) AppendTo(b []byte) []byte {
	if !e.IP.IsValid() {
		return strconv.AppendUint(b, uint64(e.Port), 10)
	}
	b = e.IP.AppendTo(b)
	if e.Protocol == "" && !e.IP2.IsValid() && !e.Net.IsValid() {
		return b
	}
	b = append(b, ',')
	b = append(b, e.Protocol...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(e.Port), 10)
	switch {
	case e.Net.IsValid():
		b = append(b, ',')
		b = appendNet(b, e.Net)
	case e.IP2.IsValid():
		b = append(b, ',')
		b = e.IP2.AppendTo(b)
	}
	return b
}

func appendNet(b []byte, p netip.Prefix) []byte {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().AppendTo(b)
	}
	return p.AppendTo(b)
}

// CreateArgs returns the arguments of the set's create line after
// "create NAME ": the type, then "family F hashsize H maxelem M" for a
// hash set or "range FIRST-LAST" for a bitmap:port set.
func (s *Set) CreateArgs() string {
	var b []byte
	b = append(b, s.Type...)
	if s.Type == TypeBitmapPort {
		b = append(b, " range "...)
		b = strconv.AppendUint(b, uint64(s.PortRange.First), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(s.PortRange.Last), 10)
		return string(b)
	}
	b = append(b, " family "...)
	b = append(b, s.Family...)
	b = append(b, " hashsize "...)
	b = strconv.AppendInt(b, DefaultHashSize, 10)
	b = append(b, " maxelem "...)
	b = strconv.AppendInt(b, int64(max(DefaultMaxElem, len(s.Entries))), 10)
	return string(b)
}

// WriteTo writes p as "ipset restore" input: per set in order, its comment
// as a "#" line (restore skips it), "create NAME ..." (see
// [Set.CreateArgs]) and one "add NAME ENTRY" line per member. Loaded into
// a namespace without these sets, it creates exactly p; "ipset save" then
// prints the same create and add lines apart from the kernel's extra
// create options (bucketsize, initval) and member order. WriteTo does not
// validate p; call [Plan.Validate] first.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var line []byte
	for i := range p.Sets {
		s := &p.Sets[i]
		if s.Comment != "" {
			bw.WriteString("# " + s.Name + ": " + s.Comment + "\n")
		}
		bw.WriteString("create " + s.Name + " " + s.CreateArgs() + "\n")
		for _, e := range s.Entries {
			line = append(line[:0], "add "...)
			line = append(line, s.Name...)
			line = append(line, ' ')
			line = e.AppendTo(line)
			line = append(line, '\n')
			bw.Write(line)
		}
	}
	err := bw.Flush()
	return cw.n, err
}

// String returns p as "ipset restore" input (see [Plan.WriteTo]).
func (p *Plan) String() string {
	var b strings.Builder
	p.WriteTo(&b)
	return b.String()
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
