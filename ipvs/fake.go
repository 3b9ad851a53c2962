package ipvs

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory stand-in for a network namespace's IPVS table,
// dummy interfaces and sysctls, for tests of code that applies plans. It
// applies plans the way the [Kernel] applier does, with the same reads
// and writes, which [Stats] counts, and refuses what the kernel refuses,
// inside an [*ApplyError]: a plan that fails [Plan.Validate]; adding a
// virtual or real server that exists ([ErrServiceExists]); changing or
// deleting one that does not ([ErrNoService]); a real server of the other
// family than its virtual server ([ErrRealFamily]); taking over an
// interface that is not a dummy link ([ErrForeignLink]).
//
// [Fake.SetConnections] plays clients holding connections to a real
// server, for graceful termination: a TCP real server removed from the
// plan keeps weight 0 until its connections are set to 0. [Fake.Load],
// [Fake.DeleteService] and [Fake.DeleteAddress] change the state as
// another program would; the next Apply repairs it.
//
// The zero value is not usable; call [NewFake]. A Fake is safe for
// concurrent use.
type Fake struct {
	mu       sync.Mutex
	services map[serviceKey]*fakeService
	links    map[string]*fakeLink
	sysctls  map[string]string
	sync     syncer
	stats    Stats
}

type fakeService struct {
	vs    VirtualServer
	reals map[netip.AddrPort]*liveReal
}

type fakeLink struct {
	dummy, up bool
	addrs     map[netip.Addr]bool
}

// NewFake returns a Fake with no virtual servers, no interfaces and the
// sysctls IPVS mode needs unset (0). Only [WithLogger] has an effect.
func NewFake(opts ...Option) *Fake {
	cfg := newConfig(opts)
	f := &Fake{services: map[serviceKey]*fakeService{}, links: map[string]*fakeLink{}, sysctls: map[string]string{}}
	for _, sc := range requiredSysctls {
		f.sysctls[sc.Name] = "0"
	}
	f.sync = syncer{st: fakeStore{f}, log: cfg.logger, stats: &f.stats}
	return f
}

// Stats returns what f did so far.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Sysctls returns the sysctls IPVS mode needs with the values f holds.
func (f *Fake) Sysctls() []Sysctl {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := RequiredSysctls()
	for i := range out {
		out[i].Value = f.sysctls[out[i].Name]
	}
	return out
}

// Apply makes f hold p, as the [Kernel] applier does.
func (f *Fake) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrInvalidPlan)}
	}
	if err := p.Validate(); err != nil {
		return &ApplyError{Op: "validate", Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sync.apply(ctx, p)
}

// Cleanup deletes every virtual server and the owned interfaces, as the
// [Kernel] applier does.
func (f *Fake) Cleanup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sync.cleanup(ctx)
}

// Dump returns what f holds as a Plan: the virtual servers sorted, each
// with its real servers and their current weights, and the addresses of
// interface iface (empty means [DefaultInterface]).
func (f *Fake) Dump(iface string) *Plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	if iface == "" {
		iface = DefaultInterface
	}
	p := &Plan{Interface: iface}
	if l := f.links[iface]; l != nil {
		p.Addresses = slices.SortedFunc(maps.Keys(l.addrs), netip.Addr.Compare)
	}
	for _, k := range slices.SortedFunc(maps.Keys(f.services), compareKeys) {
		s := f.services[k]
		v := s.vs
		v.RealServers = nil
		for _, a := range slices.SortedFunc(maps.Keys(s.reals), netip.AddrPort.Compare) {
			v.RealServers = append(v.RealServers, RealServer{Addr: a, Weight: s.reals[a].weight})
		}
		p.VirtualServers = append(p.VirtualServers, v)
	}
	return p
}

// String returns f's virtual servers as "ipvsadm -R" text, then the
// default interface's addresses as "ip -batch" text, when it exists (see
// [Plan.String] and [Plan.AddressText]).
func (f *Fake) String() string {
	p := f.Dump("")
	f.mu.Lock()
	_, ok := f.links[DefaultInterface]
	f.mu.Unlock()
	if !ok {
		return p.String()
	}
	return p.String() + p.AddressText()
}

// SetConnections sets the active plus inactive connection count of a real
// server, as clients would.
func (f *Fake) SetConnections(proto Protocol, vs, real netip.AddrPort, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.services[serviceKey{proto, vs}]
	if s == nil || s.reals[real] == nil {
		return &ApplyError{Op: "connections", Object: realKey{serviceKey{proto, vs}, real}.String(), Err: ErrNoService}
	}
	s.reals[real].conns = n
	return nil
}

// Load adds p's virtual and real servers, interface and addresses to f as
// another program would ("ipvsadm -R" and "ip -batch" of p's text).
func (f *Fake) Load(p *Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := fakeStore{f}
	iface := p.InterfaceOrDefault()
	if f.links[iface] == nil {
		st.addLink(iface)
	}
	for _, a := range p.Addresses {
		st.addAddress(iface, a)
	}
	for i := range p.VirtualServers {
		v := &p.VirtualServers[i]
		if f.services[svcKeyOf(v)] == nil {
			if err := st.addService(v); err != nil {
				return &ApplyError{Op: "add-service", Object: svcKeyOf(v).String(), Err: err}
			}
		}
		for _, r := range v.RealServers {
			if err := st.addReal(v, r); err != nil {
				return &ApplyError{Op: "add-real", Object: realKey{svcKeyOf(v), r.Addr}.String(), Err: err}
			}
		}
	}
	return nil
}

// DeleteService deletes a virtual server as another program would.
func (f *Fake) DeleteService(proto Protocol, addr netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &VirtualServer{Protocol: proto, Addr: addr}
	if err := (fakeStore{f}).deleteService(v); err != nil {
		return &ApplyError{Op: "delete-service", Object: svcKeyOf(v).String(), Err: err}
	}
	return nil
}

// DeleteAddress deletes an address from an interface as another program
// would.
func (f *Fake) DeleteAddress(iface string, a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := (fakeStore{f}).deleteAddress(iface, a); err != nil {
		return &ApplyError{Op: "address", Object: iface, Err: err}
	}
	return nil
}

// AddLink adds a link that is not a dummy link, as another program
// (a bridge, a veth) would.
func (f *Fake) AddLink(iface string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[iface] = &fakeLink{addrs: map[netip.Addr]bool{}}
}

// fakeStore is the store of a Fake, whose lock the caller holds.
type fakeStore struct{ f *Fake }

func (fs fakeStore) services() (map[serviceKey]*liveService, int, error) {
	out := make(map[serviceKey]*liveService, len(fs.f.services))
	for k, s := range fs.f.services {
		ls := &liveService{vs: s.vs, reals: make(map[netip.AddrPort]*liveReal, len(s.reals))}
		for a, r := range s.reals {
			c := *r
			ls.reals[a] = &c
		}
		out[k] = ls
	}
	return out, 1 + len(out), nil
}

func (fs fakeStore) addService(v *VirtualServer) error {
	k := svcKeyOf(v)
	if fs.f.services[k] != nil {
		return ErrServiceExists
	}
	vs := *v
	vs.RealServers = nil
	fs.f.services[k] = &fakeService{vs: vs, reals: map[netip.AddrPort]*liveReal{}}
	return nil
}

func (fs fakeStore) updateService(v *VirtualServer) error {
	s := fs.f.services[svcKeyOf(v)]
	if s == nil {
		return ErrNoService
	}
	s.vs.Scheduler, s.vs.Timeout = v.Scheduler, v.Timeout
	return nil
}

func (fs fakeStore) deleteService(v *VirtualServer) error {
	k := svcKeyOf(v)
	if fs.f.services[k] == nil {
		return ErrNoService
	}
	delete(fs.f.services, k)
	return nil
}

func (fs fakeStore) real(v *VirtualServer, a netip.AddrPort) (*fakeService, error) {
	s := fs.f.services[svcKeyOf(v)]
	if s == nil {
		return nil, ErrNoService
	}
	if a.Addr().Is4() != v.Addr.Addr().Is4() {
		return nil, ErrRealFamily
	}
	return s, nil
}

func (fs fakeStore) addReal(v *VirtualServer, r RealServer) error {
	s, err := fs.real(v, r.Addr)
	if err != nil {
		return err
	}
	if s.reals[r.Addr] != nil {
		return ErrServiceExists
	}
	s.reals[r.Addr] = &liveReal{weight: r.Weight}
	return nil
}

func (fs fakeStore) updateReal(v *VirtualServer, r RealServer) error {
	s, err := fs.real(v, r.Addr)
	if err != nil {
		return err
	}
	if s.reals[r.Addr] == nil {
		return ErrNoService
	}
	s.reals[r.Addr].weight = r.Weight
	return nil
}

func (fs fakeStore) deleteReal(v *VirtualServer, a netip.AddrPort) error {
	s, err := fs.real(v, a)
	if err != nil {
		return err
	}
	if s.reals[a] == nil {
		return ErrNoService
	}
	delete(s.reals, a)
	return nil
}

func (fs fakeStore) link(name string) (liveLink, error) {
	l := fs.f.links[name]
	if l == nil {
		return liveLink{}, nil
	}
	return liveLink{exists: true, dummy: l.dummy, up: l.up, addrs: slices.SortedFunc(maps.Keys(l.addrs), netip.Addr.Compare)}, nil
}

func (fs fakeStore) addLink(name string) error {
	if fs.f.links[name] != nil {
		return ErrServiceExists
	}
	if name == "" || len(name) > MaxInterfaceNameLen || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("interface name %q: %w", name, ErrInvalidPlan)
	}
	fs.f.links[name] = &fakeLink{dummy: true, addrs: map[netip.Addr]bool{}}
	return nil
}

func (fs fakeStore) setUp(name string) error {
	l := fs.f.links[name]
	if l == nil {
		return ErrNoService
	}
	l.up = true
	return nil
}

func (fs fakeStore) deleteLink(name string) error {
	if fs.f.links[name] == nil {
		return ErrNoService
	}
	delete(fs.f.links, name)
	return nil
}

func (fs fakeStore) addAddress(name string, a netip.Addr) error {
	l := fs.f.links[name]
	switch {
	case l == nil:
		return ErrNoService
	case l.addrs[a]:
		return ErrServiceExists
	}
	l.addrs[a] = true
	return nil
}

func (fs fakeStore) deleteAddress(name string, a netip.Addr) error {
	l := fs.f.links[name]
	if l == nil || !l.addrs[a] {
		return ErrNoService
	}
	delete(l.addrs, a)
	return nil
}

func (fs fakeStore) sysctl(name string) (string, error) { return fs.f.sysctls[name], nil }

func (fs fakeStore) setSysctl(name, value string) error {
	fs.f.sysctls[name] = value
	return nil
}
