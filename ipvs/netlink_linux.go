package ipvs

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	mipvs "github.com/moby/ipvs"
	"github.com/svcplan/svcplan/internal/netnsfd"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// This file holds the namespace handling and the IPVS half of the kernel
// store, through github.com/moby/ipvs.

// nsHandle is the network namespace of one Apply or Cleanup. Its file,
// when there is one, stays open (and referenced) until close: the
// sockets are made from it, and the sysctl thread switches into it.
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

// target returns the namespace as vishvananda/netns names it.
func (h *nsHandle) target() netns.NsHandle {
	if h.fd < 0 {
		return netns.None()
	}
	return netns.NsHandle(h.fd)
}

// path returns a path that opens the namespace: h's own descriptor under
// /proc/self/fd, so that it is the namespace checked in openNS and not
// whatever a WithNetNS path points to by now; empty for the caller's.
func (h *nsHandle) path() string {
	if h.fd < 0 {
		return ""
	}
	return "/proc/self/fd/" + strconv.Itoa(h.fd)
}

// privilege marks a permission error with ErrNotRoot.
func privilege(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	return err
}

// open makes the kernel store of the namespace: a routing netlink handle
// for the interface, an IPVS handle. Before making the IPVS handle it
// asks the kernel, in the namespace, for the IPVS generic netlink family
// (which loads ip_vs when it can): moby/ipvs resolves the family once per
// process and keeps a failure, and its errors do not say that the module
// is missing.
func (h *nsHandle) open() (*kernelStore, error) {
	defer runtime.KeepAlive(h.file)
	rt, err := netlink.NewHandleAt(h.target(), unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("opening netlink sockets: %w", privilege(err))
	}
	if _, err := rt.GenlFamilyGet("IPVS"); err != nil {
		rt.Close()
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("%w (no IPVS generic netlink family: %w)", ErrNoIPVS, err)
		}
		return nil, fmt.Errorf("looking up the IPVS netlink family: %w", privilege(err))
	}
	iv, err := mipvs.New(h.path())
	if err != nil {
		rt.Close()
		return nil, fmt.Errorf("opening an IPVS netlink socket: %w", privilege(err))
	}
	return &kernelStore{ns: h, rt: rt, ipvs: iv}, nil
}

// kernelStore is the store of one namespace's kernel.
type kernelStore struct {
	ns   *nsHandle
	rt   *netlink.Handle
	ipvs *mipvs.Handle
	// links caches the links looked up during one Apply or Cleanup, so
	// that adding many addresses looks the interface up once.
	links map[string]netlink.Link
}

func (k *kernelStore) close() {
	k.ipvs.Close()
	k.rt.Close()
}

// ipvsErr maps IPVS answers: ESRCH and ENOENT (no such service or
// destination), EEXIST, and a missing module.
func ipvsErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: %w", ErrServiceExists, err)
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %w", ErrNoService, err)
	}
	return privilege(err)
}

// converged drops the errors that mean the kernel already is as asked:
// adding what exists, deleting what does not.
func converged(err error, benign error) error {
	if errors.Is(err, benign) {
		return nil
	}
	return err
}

func (k *kernelStore) services() (map[serviceKey]*liveService, int, error) {
	svcs, err := k.ipvs.GetServices()
	if err != nil {
		return nil, 1, fmt.Errorf("listing virtual servers: %w", ipvsErr(err))
	}
	reads := 1
	out := make(map[serviceKey]*liveService, len(svcs))
	for _, s := range svcs {
		vs, ok := fromService(s)
		if !ok {
			continue // firewall-mark services: not ours to model
		}
		dests, err := k.ipvs.GetDestinations(s)
		reads++
		if err != nil {
			return nil, reads, fmt.Errorf("listing real servers of %s: %w", svcKeyOf(&vs), ipvsErr(err))
		}
		ls := &liveService{vs: vs, reals: make(map[netip.AddrPort]*liveReal, len(dests))}
		for _, d := range dests {
			a, ok := netip.AddrFromSlice(d.Address)
			if !ok {
				continue
			}
			if vs.Addr.Addr().Is4() {
				a = a.Unmap()
			}
			ls.reals[netip.AddrPortFrom(a, d.Port)] = &liveReal{weight: d.Weight, conns: d.ActiveConnections + d.InactiveConnections}
		}
		out[svcKeyOf(&vs)] = ls
	}
	return out, reads, nil
}

// fromService returns the plan form of a kernel virtual server.
func fromService(s *mipvs.Service) (VirtualServer, bool) {
	if s.FWMark != 0 {
		return VirtualServer{}, false
	}
	a, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return VirtualServer{}, false
	}
	if s.AddressFamily == syscall.AF_INET {
		a = a.Unmap()
	}
	v := VirtualServer{Addr: netip.AddrPortFrom(a, s.Port), Scheduler: Scheduler(s.SchedName)}
	switch s.Protocol {
	case syscall.IPPROTO_TCP:
		v.Protocol = TCP
	case syscall.IPPROTO_UDP:
		v.Protocol = UDP
	case syscall.IPPROTO_SCTP:
		v.Protocol = SCTP
	default:
		return VirtualServer{}, false
	}
	if s.Flags&flagPersistent != 0 {
		v.Timeout = time.Duration(s.Timeout) * time.Second
	}
	return v, true
}

// flagPersistent is IP_VS_SVC_F_PERSISTENT.
const flagPersistent = 0x1

// toService returns the kernel form of v, with its address family and
// netmask always set.
func toService(v *VirtualServer) *mipvs.Service {
	s := &mipvs.Service{
		Address:   net.IP(v.Addr.Addr().AsSlice()),
		Port:      v.Addr.Port(),
		SchedName: string(v.SchedulerOrDefault()),
	}
	if v.Addr.Addr().Is4() {
		s.AddressFamily, s.Netmask = syscall.AF_INET, math.MaxUint32
	} else {
		s.AddressFamily, s.Netmask = syscall.AF_INET6, 128
	}
	switch v.Protocol {
	case UDP:
		s.Protocol = syscall.IPPROTO_UDP
	case SCTP:
		s.Protocol = syscall.IPPROTO_SCTP
	default:
		s.Protocol = syscall.IPPROTO_TCP
	}
	if v.Timeout > 0 {
		s.Flags = flagPersistent
		s.Timeout = uint32(v.Timeout / time.Second)
	}
	return s
}

// toDest returns the kernel form of a real server: masquerading, with its
// address family set.
func toDest(a netip.AddrPort, weight int) *mipvs.Destination {
	d := &mipvs.Destination{
		Address:         net.IP(a.Addr().AsSlice()),
		Port:            a.Port(),
		Weight:          weight,
		ConnectionFlags: mipvs.ConnectionFlagMasq,
		AddressFamily:   syscall.AF_INET,
	}
	if a.Addr().Is6() {
		d.AddressFamily = syscall.AF_INET6
	}
	return d
}

func (k *kernelStore) addService(v *VirtualServer) error {
	return converged(ipvsErr(k.ipvs.NewService(toService(v))), ErrServiceExists)
}

func (k *kernelStore) updateService(v *VirtualServer) error {
	return ipvsErr(k.ipvs.UpdateService(toService(v)))
}

func (k *kernelStore) deleteService(v *VirtualServer) error {
	return converged(ipvsErr(k.ipvs.DelService(toService(v))), ErrNoService)
}

func (k *kernelStore) addReal(v *VirtualServer, r RealServer) error {
	return converged(ipvsErr(k.ipvs.NewDestination(toService(v), toDest(r.Addr, r.Weight))), ErrServiceExists)
}

func (k *kernelStore) updateReal(v *VirtualServer, r RealServer) error {
	return ipvsErr(k.ipvs.UpdateDestination(toService(v), toDest(r.Addr, r.Weight)))
}

func (k *kernelStore) deleteReal(v *VirtualServer, a netip.AddrPort) error {
	return converged(ipvsErr(k.ipvs.DelDestination(toService(v), toDest(a, 0))), ErrNoService)
}
