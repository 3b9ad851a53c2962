package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"github.com/svcplan/svcplan/internal/netnsfd"
	"golang.org/x/sys/unix"
)

// This file holds the namespace handling and the reads a Kernel makes
// besides its batches: the ruleset generation, a table's handle, and the
// counts of a table's chains, rules, sets and elements that a
// verification compares with the applied plan. They are single netlink
// requests and dumps, made on a socket of their own.

// Attributes that golang.org/x/sys/unix does not name.
const (
	nftaTableHandle = 4 // NFTA_TABLE_HANDLE
)

// nsHandle is the network namespace of one Apply or Cleanup. Its file,
// when there is one, stays open (and referenced) until close, so that the
// descriptor every netlink socket is made with stays valid.
type nsHandle struct {
	file *os.File
	// fd is the descriptor of file; 0 means the caller's namespace.
	fd int
}

// openNS opens the namespace the options name: the path of WithNetNS, a
// duplicate of the descriptor of WithNetNSFd, or none; it checks that the
// file is a network namespace (internal/netnsfd).
func (c *config) openNS() (*nsHandle, error) {
	f, err := netnsfd.Open(c.netnsPath, c.netnsFd, ErrNotNetNS)
	switch {
	case err != nil:
		return nil, &ApplyError{Op: "netns", Err: privilege(err)}
	case f == nil:
		return &nsHandle{fd: 0}, nil
	}
	return &nsHandle{file: f, fd: int(f.Fd())}, nil
}

func (h *nsHandle) close() {
	if h.file != nil {
		h.file.Close()
		h.file = nil
	}
}

// dial opens a netfilter netlink socket in the namespace.
func (h *nsHandle) dial() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: h.fd})
	if err != nil {
		return nil, fmt.Errorf("opening netfilter netlink socket: %w", privilege(err))
	}
	return c, nil
}

// privilege marks a permission error with ErrNotRoot.
func privilege(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	return err
}

// nfproto returns the netfilter protocol family of f.
func nfproto(f Family) uint8 {
	if f == IPv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// request sends one nf_tables request and returns the replies; dump asks
// for every object matching attrs.
func request(c *netlink.Conn, msg uint16, family uint8, dump bool, attrs ...netlink.Attribute) ([]netlink.Message, error) {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	flags := netlink.Request
	if dump {
		flags |= netlink.Dump
	}
	m := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg), Flags: flags},
		Data:   append([]byte{family, unix.NFNETLINK_V0, 0, 0}, data...),
	}
	return c.Execute(m)
}

// attrs decodes the attributes of an nf_tables message.
func attrs(m netlink.Message) (*netlink.AttributeDecoder, error) {
	if len(m.Data) < 4 {
		return nil, errors.New("short nf_tables message")
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

func strAttr(name string) netlink.Attribute {
	return netlink.Attribute{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(name), 0)}
}

// genID returns the nf_tables ruleset generation, which every committed
// change of any table in the namespace advances.
func genID(c *netlink.Conn) (uint32, error) {
	msgs, err := request(c, unix.NFT_MSG_GETGEN, unix.AF_UNSPEC, false)
	if err != nil {
		return 0, fmt.Errorf("reading the ruleset generation: %w", privilege(err))
	}
	for _, m := range msgs {
		ad, err := attrs(m)
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("reading the ruleset generation: no generation in the reply")
}

// tableHandle returns the handle of table k, and false when it does not
// exist.
func tableHandle(c *netlink.Conn, k tableKey) (uint64, bool, error) {
	msgs, err := request(c, unix.NFT_MSG_GETTABLE, nfproto(k.family), false, strAttr(k.name))
	if errors.Is(err, unix.ENOENT) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading table %s %s: %w", k.family, k.name, privilege(err))
	}
	for _, m := range msgs {
		ad, err := attrs(m)
		if err != nil {
			return 0, false, err
		}
		for ad.Next() {
			if ad.Type() == nftaTableHandle {
				return ad.Uint64(), true, nil
			}
		}
	}
	return 0, true, nil
}

// observe reads what a verification compares: the table's handle, its
// chains and their rule counts, its named sets and, for sets that rules
// do not fill, their element counts.
func observe(c *netlink.Conn, k tableKey) (*observed, error) {
	handle, ok, err := tableHandle(c, k)
	if err != nil || !ok {
		return &observed{}, err
	}
	o := &observed{exists: true, handle: handle, chains: map[string]observedChain{}, sets: map[string]int{}}
	fam, table := nfproto(k.family), strAttr(k.name)
	err = dumpEach(c, unix.NFT_MSG_GETCHAIN, fam, table, k.name, unix.NFTA_CHAIN_TABLE, func(ad *netlink.AttributeDecoder) {
		name, base := "", false
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_NAME:
				name = ad.String()
			case unix.NFTA_CHAIN_HOOK:
				base = true
			}
		}
		o.chains[name] = observedChain{base: base}
	})
	if err != nil {
		return nil, err
	}
	err = dumpEach(c, unix.NFT_MSG_GETRULE, fam, table, k.name, unix.NFTA_RULE_TABLE, func(ad *netlink.AttributeDecoder) {
		for ad.Next() {
			if ad.Type() == unix.NFTA_RULE_CHAIN {
				name := ad.String()
				oc := o.chains[name]
				oc.rules++
				o.chains[name] = oc
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if err := observeSets(c, k, o); err != nil {
		return nil, err
	}
	return o, nil
}

// observeSets fills o.sets.
func observeSets(c *netlink.Conn, k tableKey, o *observed) error {
	fam, table := nfproto(k.family), strAttr(k.name)
	var counted []string
	err := dumpEach(c, unix.NFT_MSG_GETSET, fam, table, k.name, unix.NFTA_SET_TABLE, func(ad *netlink.AttributeDecoder) {
		name, flags := "", uint32(0)
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_NAME:
				name = ad.String()
			case unix.NFTA_SET_FLAGS:
				flags = ad.Uint32()
			}
		}
		switch {
		case flags&unix.NFT_SET_ANONYMOUS != 0:
		case flags&unix.NFT_SET_EVAL != 0:
			o.sets[name] = -1
		default:
			o.sets[name] = 0
			counted = append(counted, name)
		}
	})
	if err != nil {
		return err
	}
	for _, name := range counted {
		msgs, err := request(c, unix.NFT_MSG_GETSETELEM, fam, true, table,
			netlink.Attribute{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: append([]byte(name), 0)})
		if err != nil {
			return fmt.Errorf("reading set %s: %w", name, privilege(err))
		}
		for _, m := range msgs {
			ad, err := attrs(m)
			if err != nil {
				return err
			}
			for ad.Next() {
				if ad.Type() == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
					ad.Nested(func(nad *netlink.AttributeDecoder) error {
						for nad.Next() {
							o.sets[name]++
						}
						return nil
					})
				}
			}
			if err := ad.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// dumpEach dumps the objects of type msg in table and calls fn with the
// attributes of each that belongs to it (attribute tableAttr names the
// table of an object).
func dumpEach(c *netlink.Conn, msg uint16, fam uint8, table netlink.Attribute, name string, tableAttr uint16, fn func(*netlink.AttributeDecoder)) error {
	msgs, err := request(c, msg, fam, true, table)
	if err != nil {
		return fmt.Errorf("reading table %s: %w", name, privilege(err))
	}
	for _, m := range msgs {
		ad, err := attrs(m)
		if err != nil {
			return err
		}
		owner := ""
		for ad.Next() {
			if ad.Type() == tableAttr {
				owner = ad.String()
			}
		}
		if owner != name {
			continue
		}
		if ad, err = attrs(m); err != nil {
			return err
		}
		fn(ad)
		if err := ad.Err(); err != nil {
			return err
		}
	}
	return nil
}
