package ipset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// This file holds the two ipset requests a Kernel builds itself, with
// vishvananda/netlink's nl package, because netlink v1.3.1's own do not
// work for it:
//
//   - Adding or deleting a bitmap:port member: IpsetAdd sends a protocol
//     attribute with every port (TCP when none is given), which
//     bitmap:port's policy does not have, and Linux's strict attribute
//     parsing refuses the request ("invalid protocol").
//   - Listing: IpsetListAll logs every attribute it does not know, such
//     as the bucketsize and initval of Linux 5.11 and later, through the
//     standard library's global logger, and loses the header of sets
//     whose members span several messages.

// nlaTypeMask clears the nested and byte-order flags of an attribute type.
const nlaTypeMask = 0x3fff

// raw sends one ipset request with attrs and returns the answers.
func (k kernelStore) raw(cmd int, flags int, attrs ...nl.NetlinkRequestData) ([][]byte, error) {
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{
			Len:   uint32(unix.SizeofNlMsghdr),
			Type:  uint16(cmd | unix.NFNL_SUBSYS_IPSET<<8),
			Flags: uint16(flags),
		},
		Sockets: k.sockets,
	}
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(unix.AF_INET), Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	for _, a := range attrs {
		req.AddData(a)
	}
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	var errno syscall.Errno
	if errors.As(err, &errno) && int(errno) >= nl.IPSET_ERR_PRIVATE {
		err = nl.IPSetError(uintptr(errno))
	}
	return msgs, err
}

// portMember adds or deletes (cmd) port in bitmap:port set name, without
// a protocol attribute; an existing member added or a missing one deleted
// is not an error.
func (k kernelStore) portMember(cmd int, name string, port uint16) error {
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	buf := binary.BigEndian.AppendUint16(nil, port)
	data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PORT|int(nl.NLA_F_NET_BYTEORDER), buf))
	_, err := k.raw(cmd, unix.NLM_F_REQUEST|unix.NLM_F_ACK,
		nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(name)), data)
	return kernelErr(err)
}

// list returns every set of the namespace with its members.
func (k kernelStore) list() (map[string]*liveSet, error) {
	msgs, err := k.raw(nl.IPSET_CMD_LIST, nl.GetIpsetFlags(nl.IPSET_CMD_LIST))
	if err != nil {
		return nil, fmt.Errorf("listing sets: %w", kernelErr(err))
	}
	live := map[string]*liveSet{}
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		if err := nlListMessage(live, m[nl.SizeofNfgenmsg:]); err != nil {
			return nil, fmt.Errorf("listing sets: %w", err)
		}
	}
	return live, nil
}

// nlListMessage adds what one answer to a list request says to live.
// A large set's members span several answers; each names the set, and
// the first also gives its type, family and header.
func nlListMessage(live map[string]*liveSet, b []byte) error {
	var name, typ string
	family := uint8(0)
	var data, adt []byte
	eachAttr(b, func(t uint16, v []byte) {
		switch t {
		case nl.IPSET_ATTR_SETNAME:
			name = cString(v)
		case nl.IPSET_ATTR_TYPENAME:
			typ = cString(v)
		case nl.IPSET_ATTR_FAMILY:
			if len(v) > 0 {
				family = v[0]
			}
		case nl.IPSET_ATTR_DATA:
			data = v
		case nl.IPSET_ATTR_ADT:
			adt = v
		}
	})
	if name == "" {
		return errors.New("answer without a set name")
	}
	l := live[name]
	if l == nil {
		l = &liveSet{def: Set{Name: name}, members: map[Entry]struct{}{}}
		live[name] = l
	}
	if typ != "" {
		l.def.Type = Type(typ)
		l.def.Family = kernelFamily(family, l.def.Type)
		nlHeader(l, data)
	}
	var bad error
	eachAttr(adt, func(t uint16, v []byte) {
		if t != nl.IPSET_ATTR_DATA {
			return
		}
		e, err := nlMember(l.def.Type, v)
		if err != nil {
			bad = fmt.Errorf("set %s: %w", name, err)
			return
		}
		l.members[e] = struct{}{}
	})
	return bad
}

// nlHeader reads a set's header: a bitmap's port range, a hash set's
// maxelem.
func nlHeader(l *liveSet, data []byte) {
	eachAttr(data, func(t uint16, v []byte) {
		switch {
		case t == nl.IPSET_ATTR_PORT_FROM && len(v) == 2 && l.def.Type == TypeBitmapPort:
			l.def.PortRange.First = binary.BigEndian.Uint16(v)
		case t == nl.IPSET_ATTR_PORT_TO && len(v) == 2 && l.def.Type == TypeBitmapPort:
			l.def.PortRange.Last = binary.BigEndian.Uint16(v)
		case t == nl.IPSET_ATTR_MAXELEM && len(v) == 4 && l.def.Type != TypeBitmapPort:
			l.maxElem = int(binary.BigEndian.Uint32(v))
		}
	})
}

// nlMember reads one member of a set of type t.
func nlMember(t Type, b []byte) (Entry, error) {
	var e Entry
	var ip2 netip.Addr
	cidr2 := -1
	var bad error
	eachAttr(b, func(typ uint16, v []byte) {
		switch typ {
		case nl.IPSET_ATTR_IP:
			e.IP, bad = nlAddr(v)
		case nl.IPSET_ATTR_IP2:
			ip2, bad = nlAddr(v)
		case nl.IPSET_ATTR_CIDR2:
			if len(v) > 0 {
				cidr2 = int(v[0])
			}
		case nl.IPSET_ATTR_PORT:
			if len(v) == 2 {
				e.Port = binary.BigEndian.Uint16(v)
			}
		case nl.IPSET_ATTR_PROTO:
			if len(v) > 0 {
				e.Protocol = protoName(v[0])
			}
		}
	})
	if bad != nil {
		return Entry{}, bad
	}
	switch t {
	case TypeBitmapPort:
		e.Protocol = ""
	case TypeHashIP:
		e.Protocol, e.Port = "", 0
	case TypeHashIPPortIP:
		e.IP2 = ip2
	case TypeHashIPPortNet:
		if cidr2 < 0 {
			cidr2 = ip2.BitLen()
		}
		e.Net = netip.PrefixFrom(ip2, cidr2)
	}
	return e, nil
}

// nlAddr reads a nested address attribute.
func nlAddr(b []byte) (netip.Addr, error) {
	var a netip.Addr
	ok := false
	eachAttr(b, func(t uint16, v []byte) {
		if t == nl.IPSET_ATTR_IPADDR_IPV4 || t == nl.IPSET_ATTR_IPADDR_IPV6 {
			a, ok = netip.AddrFromSlice(v)
		}
	})
	if !ok {
		return netip.Addr{}, errors.New("member with a malformed address")
	}
	return a, nil
}

// eachAttr calls fn with the type (flags cleared) and value of each
// netlink attribute in b.
func eachAttr(b []byte, fn func(t uint16, v []byte)) {
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b))
		if n < 4 || n > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&nlaTypeMask, b[4:n])
		n = (n + 3) &^ 3
		if n >= len(b) {
			return
		}
		b = b[n:]
	}
}

// cString returns the NUL-terminated string in b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
