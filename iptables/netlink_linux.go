package iptables

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the kernel queries behind the fingerprints: the
// nf_tables generation over netlink, and the x_tables table info over
// getsockopt.

// nftGenID asks nf_tables in k's namespace for its ruleset generation.
func (k *Kernel) nftGenID() (uint32, error) {
	var id uint32
	err := k.inNetNS(func() error {
		reply, err := nfTablesRequest(unix.NFT_MSG_GETGEN, unix.AF_UNSPEC, nil)
		if err != nil {
			return err
		}
		id, err = parseGenID(reply)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reading nf_tables generation: %w", privilege(err))
	}
	return id, nil
}

// nftChainExists asks nf_tables in k's namespace whether the iptables-nft
// chain of table t exists.
func (k *Kernel) nftChainExists(t Table, chain string) (bool, error) {
	family := uint8(unix.NFPROTO_IPV4)
	if k.family == IPv6 {
		family = unix.NFPROTO_IPV6
	}
	attrs := netlinkAttr(nil, unix.NFTA_CHAIN_TABLE, string(t))
	attrs = netlinkAttr(attrs, unix.NFTA_CHAIN_NAME, chain)
	exists := false
	err := k.inNetNS(func() error {
		_, err := nfTablesRequest(unix.NFT_MSG_GETCHAIN, family, attrs)
		switch {
		case err == nil:
			exists = true
		case errors.Is(err, unix.ENOENT):
			err = nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("looking up nf_tables chain %s %s: %w", t, chain, privilege(err))
	}
	return exists, nil
}

// netlinkAttr appends a NUL-terminated string attribute.
func netlinkAttr(b []byte, typ uint16, s string) []byte {
	n := 4 + len(s) + 1
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, s...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nfTablesRequest sends one nf_tables request on a new netlink socket in
// the calling thread's namespace and returns the first reply, or the error
// the kernel answered.
func nfTablesRequest(msg uint16, family uint8, attrs []byte) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	req := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
	req = append(req, attrs...)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|msg)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], 1)
	req[16] = family
	req[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, err
	}
	reply := buf[:n]
	if len(reply) < unix.NLMSG_HDRLEN+4 {
		return nil, errors.New("short netlink reply")
	}
	if binary.NativeEndian.Uint16(reply[4:]) == unix.NLMSG_ERROR {
		if errno := int32(binary.NativeEndian.Uint32(reply[unix.NLMSG_HDRLEN:])); errno != 0 {
			return nil, unix.Errno(-errno)
		}
	}
	return reply, nil
}

// parseGenID reads NFTA_GEN_ID from a NFT_MSG_NEWGEN reply.
func parseGenID(msg []byte) (uint32, error) {
	l := min(int(binary.NativeEndian.Uint32(msg[0:])), len(msg))
	for a := msg[unix.NLMSG_HDRLEN+4 : l]; len(a) >= 4; {
		alen := int(binary.NativeEndian.Uint16(a[0:]))
		if alen < 4 || alen > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:])&0x3fff == unix.NFTA_GEN_ID && alen >= 8 {
			return binary.BigEndian.Uint32(a[4:]), nil
		}
		a = a[min((alen+3)&^3, len(a)):]
	}
	return 0, errors.New("no generation in netlink reply")
}

// ensureBaseChains creates, with a restore of their own, the built-in
// chains that input appends or inserts rules into and that nf_tables does
// not hold yet. A restore starting with "-S" takes them for existing
// (iptables-nft lists built-in chains it has not created) and then fails
// to add rules to them.
func (k *Kernel) ensureBaseChains(ctx context.Context, t Table, input []byte, gate func() error) error {
	var missing []string
	for _, c := range builtinChains(t) {
		if !bytes.Contains(input, []byte("\n-A "+c+" ")) && !bytes.Contains(input, []byte("\n-I "+c+" ")) {
			continue
		}
		ok, err := k.nftChainExists(t, c)
		if err != nil {
			return &Error{Op: "apply", Table: t, Err: err}
		}
		if !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := gate(); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("*" + string(t) + "\n")
	for _, c := range missing {
		b.WriteString(":" + c + " ACCEPT [0:0]\n")
	}
	b.WriteString("COMMIT\n")
	return k.runRestore(ctx, t, []byte(b.String()), false, -1, nil)
}

// legacyInfo is struct ipt_getinfo (and ip6t_getinfo): the table's name,
// hooks, entry count and size, which change with nearly any change of its
// rules.
type legacyInfo [84]byte

// legacyInfo reads table t's x_tables info in k's namespace.
func (k *Kernel) legacyInfo(t Table) (legacyInfo, error) {
	var info legacyInfo
	err := k.inNetNS(func() error {
		domain, level := unix.AF_INET, unix.SOL_IP
		if k.family == IPv6 {
			domain, level = unix.AF_INET6, unix.SOL_IPV6
		}
		fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		copy(info[:32], t)
		const soGetInfo = 64 // IPT_SO_GET_INFO, IP6T_SO_GET_INFO
		size := uint32(len(info))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soGetInfo,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno == unix.ENOENT {
			info = legacyInfo{}
			return nil
		}
		if errno != 0 {
			return errno
		}
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("reading x_tables info of %s: %w", t, privilege(err))
	}
	return info, nil
}

// privilege wraps a kernel's refusal for lack of privilege with ErrNotRoot.
func privilege(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	return err
}
