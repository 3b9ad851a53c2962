package ipvs

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// This file holds what the kernel applier and the Fake share: reading the
// IPVS table, the interface and the sysctls, computing the difference
// from a plan, the order of the writes, and graceful termination. Each
// backend provides a store that behaves like the kernel.

// store is a namespace's IPVS state, dummy interface and sysctls: the
// kernel's or a Fake's.
type store interface {
	// services returns every virtual server with its real servers, and
	// the number of read requests that took.
	services() (map[serviceKey]*liveService, int, error)
	addService(v *VirtualServer) error
	updateService(v *VirtualServer) error
	deleteService(v *VirtualServer) error
	addReal(v *VirtualServer, r RealServer) error
	updateReal(v *VirtualServer, r RealServer) error
	deleteReal(v *VirtualServer, addr netip.AddrPort) error
	// link reads interface name and its addresses.
	link(name string) (liveLink, error)
	addLink(name string) error
	setUp(name string) error
	deleteLink(name string) error
	addAddress(name string, a netip.Addr) error
	deleteAddress(name string, a netip.Addr) error
	sysctl(name string) (string, error)
	setSysctl(name, value string) error
}

// serviceKey identifies a virtual server.
type serviceKey struct {
	proto Protocol
	addr  netip.AddrPort
}

func svcKeyOf(v *VirtualServer) serviceKey { return serviceKey{v.Protocol, v.Addr} }

func (k serviceKey) String() string { return string(k.proto) + "/" + k.addr.String() }

// realKey identifies a real server of a virtual server.
type realKey struct {
	service serviceKey
	addr    netip.AddrPort
}

func (k realKey) String() string { return k.service.String() + " -> " + k.addr.String() }

// liveService is a virtual server as read back (RealServers unused).
type liveService struct {
	vs    VirtualServer
	reals map[netip.AddrPort]*liveReal
}

// liveReal is a real server as read back.
type liveReal struct {
	weight int
	// conns is the real server's active plus inactive connections.
	conns int
}

// liveLink is the dummy interface as read back.
type liveLink struct {
	exists, dummy, up bool
	addrs             []netip.Addr
}

// syncer applies plans to one store for one applier.
type syncer struct {
	st    store
	log   *slog.Logger
	stats *Stats
	// applied is the plan last applied, for noticing drift.
	applied *Plan
	// draining are the real servers removed from the plan that keep
	// weight 0 until their connections are gone.
	draining map[realKey]bool
	// links are the interfaces the applier's plans named.
	links map[string]bool
	// sysctls are the values last read or written.
	sysctls map[string]string
}

// applyRun is one Apply or Cleanup.
type applyRun struct {
	*syncer
	ctx context.Context
	ops int
}

// write runs one kernel write, counting it and wrapping its error.
func (r *applyRun) write(op string, obj interface{ String() string }, counter *int, fn func() error) error {
	if err := r.ctx.Err(); err != nil {
		return &ApplyError{Op: op, Object: obj.String(), Err: err}
	}
	r.ops++
	r.stats.Operations++
	if err := fn(); err != nil {
		return &ApplyError{Op: op, Object: obj.String(), Err: err}
	}
	*counter++
	return nil
}

type objName string

func (n objName) String() string { return string(n) }

func (s *syncer) apply(ctx context.Context, p *Plan) error {
	s.stats.Applies++
	r := &applyRun{syncer: s, ctx: ctx}
	defer func() { s.stats.LastOperations = r.ops }()
	if err := r.setSysctls(); err != nil {
		return err
	}
	iface := p.InterfaceOrDefault()
	if s.links == nil {
		s.links = map[string]bool{}
	}
	s.links[iface] = true
	l, err := r.ensureLink(iface, p)
	if err != nil {
		return err
	}
	live, reads, err := s.st.services()
	s.stats.Reads += reads
	if err != nil {
		return &ApplyError{Op: "read", Err: err}
	}
	removed, err := r.addServices(p, live)
	if err != nil {
		return err
	}
	if err := r.removeReals(removed); err != nil {
		return err
	}
	if err := r.removeServices(p, live); err != nil {
		return err
	}
	if err := r.removeAddresses(iface, p, l); err != nil {
		return err
	}
	s.applied = clonePlan(p)
	return r.removeOldLinks(iface)
}

// setSysctls sets the required sysctls that differ.
func (r *applyRun) setSysctls() error {
	if r.sysctls == nil {
		r.sysctls = map[string]string{}
	}
	for _, sc := range requiredSysctls {
		v, err := r.st.sysctl(sc.Name)
		r.stats.Reads++
		if err != nil {
			return &ApplyError{Op: "sysctl", Object: sc.Name, Err: err}
		}
		r.sysctls[sc.Name] = v
		if v == sc.Value {
			continue
		}
		r.log.Info("ipvs setting sysctl", "name", sc.Name, "from", v, "to", sc.Value)
		if err := r.write("sysctl", objName(sc.Name), &r.stats.SysctlsSet, func() error { return r.st.setSysctl(sc.Name, sc.Value) }); err != nil {
			return err
		}
		r.sysctls[sc.Name] = sc.Value
	}
	return nil
}

// ensureLink makes interface iface exist, be up and hold every planned
// address.
func (r *applyRun) ensureLink(iface string, p *Plan) (liveLink, error) {
	l, err := r.st.link(iface)
	r.stats.Reads++
	if err != nil {
		return l, &ApplyError{Op: "read", Object: iface, Err: err}
	}
	var none int
	switch {
	case !l.exists:
		if r.applied != nil && r.applied.InterfaceOrDefault() == iface {
			r.repaired("interface missing", iface)
		}
		if err := r.write("link", objName(iface), &none, func() error { return r.st.addLink(iface) }); err != nil {
			return l, err
		}
	case !l.dummy:
		return l, &ApplyError{Op: "link", Object: iface, Err: ErrForeignLink}
	}
	if !l.up {
		if err := r.write("link", objName(iface), &none, func() error { return r.st.setUp(iface) }); err != nil {
			return l, err
		}
	}
	have := make(map[netip.Addr]bool, len(l.addrs))
	for _, a := range l.addrs {
		have[a] = true
	}
	applied := map[netip.Addr]bool{}
	if r.applied != nil && r.applied.InterfaceOrDefault() == iface && l.exists {
		for _, a := range r.applied.Addresses {
			applied[a] = true
		}
	}
	for _, a := range p.Addresses {
		if have[a] {
			continue
		}
		if applied[a] {
			r.repaired("address missing", a.String())
		}
		if err := r.write("address", objName(iface+" "+a.String()), &r.stats.AddressesAdded, func() error { return r.st.addAddress(iface, a) }); err != nil {
			return l, err
		}
	}
	return l, nil
}

func (r *applyRun) repaired(why, obj string) {
	r.stats.Repairs++
	r.log.Info("ipvs state changed behind the applier's back; repairing", "why", why, "object", obj)
}

// removal is a real server of a live virtual server that the plan no
// longer holds.
type removal struct {
	vs   *VirtualServer
	addr netip.AddrPort
	real *liveReal
}

// addServices creates and updates the planned virtual and real servers,
// returning the real servers to remove afterwards.
func (r *applyRun) addServices(p *Plan, live map[serviceKey]*liveService) ([]removal, error) {
	var removed []removal
	for i := range p.VirtualServers {
		v := &p.VirtualServers[i]
		k := svcKeyOf(v)
		lv := live[k]
		var old *VirtualServer
		if r.applied != nil {
			old = r.applied.VirtualServer(v.Protocol, v.Addr)
		}
		switch {
		case lv == nil:
			if old != nil {
				r.repaired("virtual server missing", k.String())
				old = nil // its real servers are part of that repair
			}
			if err := r.write("add-service", k, &r.stats.ServicesAdded, func() error { return r.st.addService(v) }); err != nil {
				return nil, err
			}
			lv = &liveService{reals: map[netip.AddrPort]*liveReal{}}
		case !sameService(&lv.vs, v):
			if old != nil && sameService(old, v) {
				r.repaired("virtual server changed", k.String())
			}
			if err := r.write("update-service", k, &r.stats.ServicesUpdated, func() error { return r.st.updateService(v) }); err != nil {
				return nil, err
			}
		}
		if err := r.addReals(v, lv, old); err != nil {
			return nil, err
		}
		for _, a := range slices.SortedFunc(maps.Keys(lv.reals), netip.AddrPort.Compare) {
			if !hasReal(v, a) {
				removed = append(removed, removal{vs: v, addr: a, real: lv.reals[a]})
			}
		}
	}
	return removed, nil
}

// addReals creates and updates v's planned real servers.
func (r *applyRun) addReals(v *VirtualServer, lv *liveService, old *VirtualServer) error {
	k := svcKeyOf(v)
	for _, rs := range v.RealServers {
		rk := realKey{k, rs.Addr}
		delete(r.draining, rk)
		lr := lv.reals[rs.Addr]
		if old != nil && hasReal(old, rs.Addr) && (lr == nil || lr.weight != realWeight(old, rs.Addr)) && realWeight(old, rs.Addr) == rs.Weight {
			r.repaired("real server missing or changed", rk.String())
		}
		switch {
		case lr == nil:
			if err := r.write("add-real", rk, &r.stats.RealAdded, func() error { return r.st.addReal(v, rs) }); err != nil {
				return err
			}
		case lr.weight != rs.Weight:
			if err := r.write("update-real", rk, &r.stats.RealUpdated, func() error { return r.st.updateReal(v, rs) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeReals removes real servers gone from the plan: at once from UDP
// and SCTP virtual servers, and from TCP ones when they have no
// connections; a TCP real server with connections gets weight 0 (no new
// connections) and is deleted by a later Apply once they are gone, as
// kube-proxy's graceful termination does.
func (r *applyRun) removeReals(removed []removal) error {
	for _, rm := range removed {
		rk := realKey{svcKeyOf(rm.vs), rm.addr}
		if rm.vs.Protocol == TCP && rm.real.conns > 0 {
			if r.draining == nil {
				r.draining = map[realKey]bool{}
			}
			if !r.draining[rk] {
				r.log.Info("ipvs real server draining", "real", rk.String(), "connections", rm.real.conns)
			}
			r.draining[rk] = true
			if rm.real.weight != 0 {
				zero := RealServer{Addr: rm.addr}
				if err := r.write("update-real", rk, &r.stats.RealUpdated, func() error { return r.st.updateReal(rm.vs, zero) }); err != nil {
					return err
				}
			}
			continue
		}
		if r.draining[rk] {
			r.log.Info("ipvs real server drained", "real", rk.String())
		}
		delete(r.draining, rk)
		if err := r.write("delete-real", rk, &r.stats.RealDeleted, func() error { return r.st.deleteReal(rm.vs, rm.addr) }); err != nil {
			return err
		}
	}
	r.stats.Draining = len(r.draining)
	return nil
}

// removeServices deletes the live virtual servers the plan does not hold.
func (r *applyRun) removeServices(p *Plan, live map[serviceKey]*liveService) error {
	keys := slices.SortedFunc(maps.Keys(live), compareKeys)
	for _, k := range keys {
		if p.VirtualServer(k.proto, k.addr) != nil {
			continue
		}
		lv := live[k]
		for rk := range r.draining {
			if rk.service == k {
				delete(r.draining, rk)
			}
		}
		if err := r.write("delete-service", k, &r.stats.ServicesDeleted, func() error { return r.st.deleteService(&lv.vs) }); err != nil {
			return err
		}
	}
	r.stats.Draining = len(r.draining)
	return nil
}

// removeAddresses deletes the interface's addresses the plan does not
// hold.
func (r *applyRun) removeAddresses(iface string, p *Plan, l liveLink) error {
	for _, a := range l.addrs {
		if _, ok := slices.BinarySearchFunc(p.Addresses, a, netip.Addr.Compare); ok {
			continue
		}
		if err := r.write("address", objName(iface+" "+a.String()), &r.stats.AddressesDeleted, func() error { return r.st.deleteAddress(iface, a) }); err != nil {
			return err
		}
	}
	return nil
}

// removeOldLinks deletes the interfaces earlier plans named, other than
// iface.
func (r *applyRun) removeOldLinks(iface string) error {
	var none int
	for _, old := range slices.Sorted(maps.Keys(r.links)) {
		if old == iface {
			continue
		}
		if err := r.deleteLink(old, &none); err != nil {
			return err
		}
		delete(r.links, old)
	}
	return nil
}

// deleteLink deletes interface n if it exists and is a dummy link.
func (r *applyRun) deleteLink(n string, counter *int) error {
	l, err := r.st.link(n)
	r.stats.Reads++
	if err != nil {
		return &ApplyError{Op: "read", Object: n, Err: err}
	}
	if !l.exists || !l.dummy {
		return nil
	}
	return r.write("link", objName(n), counter, func() error { return r.st.deleteLink(n) })
}

// cleanup deletes every virtual server and the owned interfaces.
func (s *syncer) cleanup(ctx context.Context) error {
	r := &applyRun{syncer: s, ctx: ctx}
	defer func() { s.stats.LastOperations = r.ops }()
	live, reads, err := s.st.services()
	s.stats.Reads += reads
	if err != nil {
		return &ApplyError{Op: "read", Err: err}
	}
	var errs []error
	for _, k := range slices.SortedFunc(maps.Keys(live), compareKeys) {
		lv := live[k]
		errs = append(errs, r.write("delete-service", k, &s.stats.ServicesDeleted, func() error { return s.st.deleteService(&lv.vs) }))
	}
	links := maps.Clone(s.links)
	if links == nil {
		links = map[string]bool{}
	}
	links[DefaultInterface] = true
	var none int
	for _, n := range slices.Sorted(maps.Keys(links)) {
		errs = append(errs, r.deleteLink(n, &none))
	}
	s.draining, s.applied, s.links = nil, nil, nil
	s.stats.Draining = 0
	return errors.Join(errs...)
}

// sameService tells whether live virtual server l is configured as v.
func sameService(l, v *VirtualServer) bool {
	return l.SchedulerOrDefault() == v.SchedulerOrDefault() && l.Timeout.Truncate(time.Second) == v.Timeout.Truncate(time.Second)
}

func hasReal(v *VirtualServer, a netip.AddrPort) bool {
	_, ok := slices.BinarySearchFunc(v.RealServers, a, func(r RealServer, a netip.AddrPort) int { return r.Addr.Compare(a) })
	return ok
}

func realWeight(v *VirtualServer, a netip.AddrPort) int {
	i, ok := slices.BinarySearchFunc(v.RealServers, a, func(r RealServer, a netip.AddrPort) int { return r.Addr.Compare(a) })
	if !ok {
		return -1
	}
	return v.RealServers[i].Weight
}

func compareKeys(a, b serviceKey) int {
	if c := cmp.Compare(a.proto, b.proto); c != 0 {
		return c
	}
	return a.addr.Compare(b.addr)
}

func clonePlan(p *Plan) *Plan {
	c := *p
	c.Addresses = slices.Clone(p.Addresses)
	c.VirtualServers = slices.Clone(p.VirtualServers)
	for i := range c.VirtualServers {
		c.VirtualServers[i].RealServers = slices.Clone(c.VirtualServers[i].RealServers)
	}
	return &c
}
