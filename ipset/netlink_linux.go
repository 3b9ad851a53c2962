package ipset

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"github.com/svcplan/svcplan/internal/netnsfd"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// This file holds the namespace handling and the translation between
// plan values and vishvananda/netlink's ipset requests.

// Set type revisions sent at create. netlink v1.3.1 picks its oldest
// supported revisions, and none for bitmap:port; these are the ones
// ipset 7 finds in Linux 5.x and later.
var revisions = map[Type]uint8{
	TypeHashIP:        4,
	TypeHashIPPort:    5,
	TypeHashIPPortIP:  5,
	TypeHashIPPortNet: 7,
	TypeBitmapPort:    3,
}

// nsHandle is the network namespace of one Apply or Cleanup. Its file,
// when there is one, stays open (and referenced) until close, so that the
// descriptor the netlink sockets are made from stays valid.
type nsHandle struct {
	file *os.File
	// fd is the descriptor of file; -1 means the caller's namespace.
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
		return &nsHandle{fd: -1}, nil
	}
	return &nsHandle{file: f, fd: int(f.Fd())}, nil
}

func (h *nsHandle) close() {
	if h.file != nil {
		h.file.Close()
		h.file = nil
	}
}

// store opens two netfilter netlink sockets in the namespace, for a
// netlink Handle and for the requests built here. A socket stays in the
// namespace it was made in; the namespace's file must stay open only
// while they are made, but callers keep it open for the whole call.
func (h *nsHandle) store() (kernelStore, error) {
	target := netns.None()
	if h.fd >= 0 {
		target = netns.NsHandle(h.fd)
	}
	nh, err := netlink.NewHandleAt(target, unix.NETLINK_NETFILTER)
	if err != nil {
		return kernelStore{}, fmt.Errorf("opening netfilter netlink socket: %w", privilege(err))
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_NETFILTER)
	runtime.KeepAlive(h.file)
	if err != nil {
		nh.Close()
		return kernelStore{}, fmt.Errorf("opening netfilter netlink socket: %w", privilege(err))
	}
	return kernelStore{h: nh, sockets: map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}}, nil
}

func (k kernelStore) close() {
	k.h.Close()
	for _, s := range k.sockets {
		s.Close()
	}
}

// privilege marks a permission error with ErrNotRoot.
func privilege(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	return err
}

// kernelErr maps a kernel answer to the package's sentinels, keeping the
// original.
func kernelErr(err error) error {
	var ie nl.IPSetError
	if errors.As(err, &ie) {
		switch ie {
		case nl.IPSET_ERR_BUSY, nl.IPSET_ERR_REFERENCED:
			return fmt.Errorf("%w: %w", ErrSetInUse, err)
		case nl.IPSET_ERR_EXIST_SETNAME2:
			return fmt.Errorf("%w: %w", ErrSetExists, err)
		case nl.IPSET_ERR_TYPE_MISMATCH:
			return fmt.Errorf("%w: %w", ErrIncompatible, err)
		case nl.IPSET_ERR_INVALID_FAMILY, nl.IPSET_ERR_IPADDR_IPV4, nl.IPSET_ERR_IPADDR_IPV6:
			return fmt.Errorf("%w: %w", ErrEntryFamily, err)
		}
		return err
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %w", ErrNoSuchSet, err)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: %w", ErrSetExists, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: %w", ErrSetInUse, err)
	}
	return privilege(err)
}

// kernelStore is the store of one namespace's kernel: a netlink Handle
// for the requests vishvananda/netlink makes well, and a socket of its
// own for those it builds itself (see kernelmsg_linux.go).
type kernelStore struct {
	h       *netlink.Handle
	sockets map[int]*nl.SocketHandle
}

func kernelFamily(f uint8, t Type) Family {
	switch {
	case t == TypeBitmapPort:
		return ""
	case f == unix.NFPROTO_IPV6:
		return IPv6
	}
	return IPv4
}

func (k kernelStore) create(s *Set, name string) error {
	// Set comments are not kept by the kernel (Plan.String renders them
	// as "#" lines); sets are made without the comment extension, as
	// "ipset restore" of the plan's text makes them.
	opts := netlink.IpsetCreateOptions{Revision: revisions[s.Type]}
	if s.Type == TypeBitmapPort {
		opts.PortFrom, opts.PortTo = s.PortRange.First, s.PortRange.Last
	} else {
		opts.MaxElements = uint32(max(DefaultMaxElem, len(s.Entries)))
		opts.Family = unix.NFPROTO_IPV4
		if s.Family == IPv6 {
			opts.Family = unix.NFPROTO_IPV6
		}
	}
	if err := k.h.IpsetCreate(name, string(s.Type), opts); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: %w", ErrSetExists, err)
		}
		return kernelErr(err)
	}
	return nil
}

func (k kernelStore) add(s *Set, name string, e Entry) error {
	if s.Type == TypeBitmapPort {
		if err := checkMember(s.Type, s.Family, s.PortRange, e); err != nil {
			return err
		}
		return k.portMember(nl.IPSET_CMD_ADD, name, e.Port)
	}
	ne, err := toKernel(s, e)
	if err != nil {
		return err
	}
	return kernelErr(k.h.IpsetAdd(name, ne))
}

func (k kernelStore) del(s *Set, name string, e Entry) error {
	if s.Type == TypeBitmapPort {
		return k.portMember(nl.IPSET_CMD_DEL, name, e.Port)
	}
	ne, err := toKernel(s, e)
	if err != nil {
		return err
	}
	return kernelErr(k.h.IpsetDel(name, ne))
}

func (k kernelStore) swap(a, b string) error { return kernelErr(k.h.IpsetSwap(a, b)) }

func (k kernelStore) destroy(name string) error { return kernelErr(k.h.IpsetDestroy(name)) }

// toKernel returns the netlink form of member e of hash set s. The
// protocol is always set: netlink v1.3.1 sends TCP for any entry with a
// port and no protocol. Replace makes adding an existing member, or
// deleting a missing one, no error (ipset's -exist).
func toKernel(s *Set, e Entry) (*netlink.IPSetEntry, error) {
	if err := checkMember(s.Type, s.Family, s.PortRange, e); err != nil {
		return nil, err
	}
	ne := &netlink.IPSetEntry{Replace: true}
	port := e.Port
	ne.Port = &port
	proto := protoNumber(e.Protocol)
	ne.Protocol = &proto
	switch s.Type {
	case TypeHashIP:
		ne.Port, ne.Protocol = nil, nil
	case TypeHashIPPortIP:
		ne.IP2 = net.IP(e.IP2.AsSlice())
	case TypeHashIPPortNet:
		ne.IP2 = net.IP(e.Net.Addr().AsSlice())
		ne.CIDR2 = uint8(e.Net.Bits())
	}
	ne.IP = net.IP(e.IP.AsSlice())
	return ne, nil
}

func protoNumber(p Protocol) uint8 {
	switch p {
	case UDP:
		return syscall.IPPROTO_UDP
	case SCTP:
		return syscall.IPPROTO_SCTP
	}
	return syscall.IPPROTO_TCP
}

func protoName(n uint8) Protocol {
	switch n {
	case syscall.IPPROTO_UDP:
		return UDP
	case syscall.IPPROTO_SCTP:
		return SCTP
	case syscall.IPPROTO_TCP:
		return TCP
	}
	return Protocol(fmt.Sprintf("proto-%d", n))
}
