package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file holds the dummy-interface half of the kernel store, through
// github.com/vishvananda/netlink.

// findLink returns link name, nil when it does not exist; the answer is
// kept until the link is added or deleted.
func (k *kernelStore) findLink(name string) (netlink.Link, error) {
	if l, ok := k.links[name]; ok {
		return l, nil
	}
	l, err := k.rt.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading link %s: %w", name, privilege(err))
	}
	if k.links == nil {
		k.links = map[string]netlink.Link{}
	}
	k.links[name] = l
	return l, nil
}

func (k *kernelStore) link(name string) (liveLink, error) {
	delete(k.links, name) // read afresh
	l, err := k.findLink(name)
	if err != nil || l == nil {
		return liveLink{}, err
	}
	ll := liveLink{exists: true, dummy: l.Type() == "dummy", up: l.Attrs().Flags&net.FlagUp != 0}
	addrs, err := k.rt.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return liveLink{}, fmt.Errorf("reading the addresses of %s: %w", name, privilege(err))
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if ip.Is4In6() {
			ip = ip.Unmap()
		}
		if ip.IsLinkLocalUnicast() {
			continue // the kernel's own IPv6 link-local address, if any
		}
		ll.addrs = append(ll.addrs, ip)
	}
	return ll, nil
}

func (k *kernelStore) addLink(name string) error {
	delete(k.links, name)
	err := k.rt.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("adding dummy link %s: %w: %w", name, ErrNoDummy, err)
	case errors.Is(err, unix.EEXIST):
		return nil
	case err != nil:
		return fmt.Errorf("adding dummy link %s: %w", name, privilege(err))
	}
	return nil
}

func (k *kernelStore) setUp(name string) error {
	l, err := k.findLink(name)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("setting %s up: %w", name, ErrNoService)
	}
	delete(k.links, name) // its flags change
	return privilege(k.rt.LinkSetUp(l))
}

func (k *kernelStore) deleteLink(name string) error {
	l, err := k.findLink(name)
	if err != nil || l == nil {
		return err
	}
	delete(k.links, name)
	return privilege(k.rt.LinkDel(l))
}

// hostAddr returns a as a host route address (/32, /128) on the link,
// without duplicate address detection for IPv6 so that it is usable at
// once.
func hostAddr(a netip.Addr) *netlink.Addr {
	na := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func (k *kernelStore) addAddress(name string, a netip.Addr) error {
	l, err := k.findLink(name)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("adding address to %s: %w", name, ErrNoService)
	}
	err = k.rt.AddrAdd(l, hostAddr(a))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return privilege(err)
}

func (k *kernelStore) deleteAddress(name string, a netip.Addr) error {
	l, err := k.findLink(name)
	if err != nil || l == nil {
		return err
	}
	err = k.rt.AddrDel(l, hostAddr(a))
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return privilege(err)
}
