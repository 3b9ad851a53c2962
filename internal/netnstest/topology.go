package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
)

// Family is an IP family.
type Family int

// The IP families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// FamilyOf returns the family of a; an IPv4-mapped IPv6 address counts as
// IPv4.
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// String returns "IPv4" or "IPv6".
func (f Family) String() string { return "IPv" + strconv.Itoa(int(f)) }

// Site is where a pod runs as seen from the node: on it, or on another node
// whose pod network the node routes to.
type Site int

// The sites.
const (
	// Local pods are in the node's own pod CIDR (10.244.1.0/24 and
	// fd00:244:1::/64 by default).
	Local Site = iota
	// Remote pods are in another node's pod CIDR (10.244.2.0/24 and
	// fd00:244:2::/64 by default).
	Remote
)

// String returns "local" or "remote".
func (s Site) String() string {
	if s == Remote {
		return "remote"
	}
	return "local"
}

// podGateway6 is the node's link-local address on every pod link, the
// pods' IPv6 default gateway.
var podGateway6 = netip.MustParseAddr("fe80::1")

// Topology is a node namespace between a client namespace and any number
// of pod namespaces, built by [New] for one test. Its methods are safe for
// concurrent use, except that the ones taking a testing.TB must be called
// from that test's goroutine.
type Topology struct {
	id     string
	cfg    config
	node   *NS
	client *NS

	mu     sync.Mutex
	owners map[netip.Addr]*NS // which namespace holds each address
	next   [2]int             // next pod index per Site
}

// Pod is one pod: a namespace of its own, attached to the node by a veth
// pair, with one address per family. Its namespace's methods (Dial, Serve,
// Do, Exec) are promoted.
type Pod struct {
	*NS
	// Site says whether the pod counts as on the node or on another.
	Site Site
	// V4 is the pod's IPv4 address.
	V4 netip.Addr
	// V6 is the pod's IPv6 address; the zero Addr under [WithoutIPv6].
	V6 netip.Addr
}

// Addr returns the pod's address of family f.
func (p Pod) Addr(f Family) netip.Addr {
	if f == IPv6 {
		return p.V6
	}
	return p.V4
}

// New builds the topology described in the package documentation for t
// and tears it down in t's Cleanup. It skips t, or fails it when
// SVCPLAN_REQUIRE_KERNEL=1, unless it runs as root on Linux with ip
// (iproute2) and can create namespaces; any other problem fails t.
func New(t testing.TB, opts ...Option) *Topology {
	t.Helper()
	Require(t, "ip")
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.ipv6 {
		if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
			skipOrFail(t, "kernel has no IPv6 (use netnstest.WithoutIPv6)")
		}
	}
	id, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	tp := &Topology{id: id, cfg: cfg, owners: map[netip.Addr]*NS{}, next: [2]int{2, 2}}
	node, err := createNS(tp.nsName("node"))
	if err != nil {
		skipOrFail(t, err.Error())
	}
	tp.node = node
	t.Cleanup(func() { tp.teardown(t) })
	client, err := createNS(tp.nsName("client"))
	if err != nil {
		t.Fatal(err)
	}
	tp.client = client
	if err := tp.wire(); err != nil {
		t.Fatal(err)
	}
	for _, f := range tp.Families() {
		tp.owners[cfg.node[f].Addr()] = node
		tp.owners[cfg.client[f].Addr()] = client
	}
	return tp
}

// wire sets the node's sysctls and links node and client.
func (tp *Topology) wire() error {
	if err := tp.setNodeSysctls(); err != nil {
		return err
	}
	nodeCmds := [][]string{{"link", "add", "name", "eth0", "type", "veth", "peer", "name", "eth0", "netns", tp.client.name}}
	var clientCmds [][]string
	for _, f := range tp.Families() {
		nodeCmds = append(nodeCmds, addrAdd(tp.cfg.node[f], "eth0"))
		clientCmds = append(clientCmds, addrAdd(tp.cfg.client[f], "eth0"))
	}
	nodeCmds = append(nodeCmds, []string{"link", "set", "eth0", "up"})
	clientCmds = append(clientCmds, []string{"link", "set", "eth0", "up"})
	for _, f := range tp.Families() {
		// The node's default route makes locally generated traffic to
		// service addresses routable, so that it reaches the OUTPUT hook
		// and its DNAT. The client does not forward, so traffic to an
		// address nobody has dies there instead of looping.
		nodeCmds = append(nodeCmds, []string{"route", "add", "default", "via", tp.cfg.client[f].Addr().String()})
		clientCmds = append(clientCmds, []string{"route", "add", "default", "via", tp.cfg.node[f].Addr().String()})
	}
	if err := tp.node.batch(nodeCmds...); err != nil {
		return err
	}
	return tp.client.batch(clientCmds...)
}

// setNodeSysctls turns on forwarding and route_localnet in the node and
// turns off ICMP redirects (which would send the client to itself for
// addresses routed back to it), before any link exists, so that links made
// later inherit the defaults.
func (tp *Topology) setNodeSysctls() error {
	sysctls := []struct{ name, value string }{
		{"ipv4/conf/all/send_redirects", "0"},
		{"ipv4/conf/default/send_redirects", "0"},
		{"ipv4/ip_forward", "1"},
		{"ipv4/conf/all/route_localnet", "1"},
	}
	if tp.cfg.ipv6 {
		sysctls = append(sysctls, struct{ name, value string }{"ipv6/conf/all/forwarding", "1"})
	}
	return tp.node.Do(func() error {
		for _, s := range sysctls {
			// /proc/sys/net belongs to the netns of the thread that opens it.
			if err := os.WriteFile("/proc/sys/net/"+s.name, []byte(s.value+"\n"), 0o644); err != nil {
				return fmt.Errorf("set sysctl net/%s in netns %s: %w", s.name, tp.node.name, err)
			}
		}
		return nil
	})
}

// teardown deletes the node and client namespaces, first logging their
// state when t failed.
func (tp *Topology) teardown(t testing.TB) {
	if t.Failed() {
		tp.dump(t)
	}
	var errs []error
	for _, ns := range []*NS{tp.client, tp.node} {
		if ns != nil {
			errs = append(errs, ns.remove())
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// dump logs the node's addresses, routes and rules, to explain a failure.
func (tp *Topology) dump(t testing.TB) {
	cmds := [][]string{{"ip", "addr"}, {"ip", "route"}, {"ip", "-6", "route"}}
	for _, tool := range []string{"iptables-save", "ip6tables-save", "nft", "ipvsadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		switch tool {
		case "nft":
			cmds = append(cmds, []string{"nft", "list", "ruleset"})
		case "ipvsadm":
			cmds = append(cmds, []string{"ipvsadm", "-Ln"})
		default:
			cmds = append(cmds, []string{tool})
		}
	}
	for _, c := range cmds {
		out, err := tp.node.Exec(context.Background(), c[0], c[1:]...)
		t.Logf("netns %s: %v (err %v):\n%s", tp.node.name, c, err, out)
	}
}

// nsName returns the name of the topology's namespace with role.
func (tp *Topology) nsName(role string) string { return NamePrefix + tp.id + "-" + role }

// Node returns the node namespace, where the test applies the proxy's
// rules. Its main link, eth0, faces the client.
func (tp *Topology) Node() *NS { return tp.node }

// Client returns the client namespace, a host on the node's LAN whose
// default route is the node.
func (tp *Topology) Client() *NS { return tp.client }

// NodeIP returns the node's LAN address of family f (10.0.0.10 or fd00::10
// by default).
func (tp *Topology) NodeIP(f Family) netip.Addr { return tp.cfg.node[f].Addr() }

// ClientIP returns the client's LAN address of family f (10.0.0.2 or
// fd00::2 by default).
func (tp *Topology) ClientIP(f Family) netip.Addr { return tp.cfg.client[f].Addr() }

// PodCIDR returns the pod CIDR of site s and family f.
func (tp *Topology) PodCIDR(s Site, f Family) netip.Prefix { return tp.cfg.pods[s][f] }

// Families returns the families the topology has addresses of: IPv4 and,
// unless [WithoutIPv6], IPv6.
func (tp *Topology) Families() []Family {
	if tp.cfg.ipv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// NSOf returns the namespace that holds address a, or nil if no namespace
// of the topology does.
func (tp *Topology) NSOf(a netip.Addr) *NS {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.owners[a.Unmap()]
}

// Serve starts a backend server for network ("tcp" or "udp") on ap in the
// namespace that holds ap's address, as [NS.Serve] does. It fails t if no
// namespace of the topology holds that address.
func (tp *Topology) Serve(t testing.TB, network string, ap netip.AddrPort) *Server {
	t.Helper()
	ns := tp.NSOf(ap.Addr())
	if ns == nil {
		t.Fatalf("serve %s %s: no namespace of the topology has address %s", network, ap, ap.Addr())
	}
	return ns.Serve(t, network, ap)
}

// AddClientAddr adds a to the client's eth0 as a host address and routes it
// from the node back through the client, so that dialing with [From](a)
// reaches the node from a (for example from inside or outside a load
// balancer's source ranges).
func (tp *Topology) AddClientAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	f := FamilyOf(a)
	if !tp.cfg.has(f) {
		t.Fatalf("add client address %s: topology has no %s", a, f)
	}
	host := netip.PrefixFrom(a, a.BitLen())
	tp.client.AddAddr(t, host)
	tp.node.Route(t, host, tp.ClientIP(f))
	tp.mu.Lock()
	tp.owners[a] = tp.client
	tp.mu.Unlock()
}

// AddPod creates a pod at site s: a namespace with the next free address of
// each family in that site's pod CIDR, attached to the node by a veth pair
// (the node routes each pod address to its link; the pod's default routes
// lead to the node). The pod is deleted in t's Cleanup.
func (tp *Topology) AddPod(t testing.TB, s Site) Pod {
	t.Helper()
	if s != Local && s != Remote {
		t.Fatalf("add pod: no such site %d", int(s))
	}
	tp.mu.Lock()
	idx := tp.next[s]
	tp.next[s]++
	tp.mu.Unlock()
	pod := Pod{Site: s}
	var err error
	if pod.V4, err = nthAddr(tp.cfg.pods[s][IPv4], idx); err != nil {
		t.Fatalf("add %s pod: %v", s, err)
	}
	if tp.cfg.ipv6 {
		if pod.V6, err = nthAddr(tp.cfg.pods[s][IPv6], idx); err != nil {
			t.Fatalf("add %s pod: %v", s, err)
		}
	}
	role := fmt.Sprintf("%c%d", s.String()[0], idx) // l2, r2, ...
	link := "v" + role
	if pod.NS, err = createNS(tp.nsName(role)); err != nil {
		t.Fatal(err)
	}
	linked := false
	t.Cleanup(func() {
		tp.mu.Lock()
		delete(tp.owners, pod.V4)
		delete(tp.owners, pod.V6)
		tp.mu.Unlock()
		var errs []error
		if linked {
			// Deleting the node's end first removes the link and its routes
			// at once; the namespace itself may go some time after
			// ip netns del.
			errs = append(errs, tp.node.ip("link", "del", link))
		}
		if err := errors.Join(append(errs, pod.remove())...); err != nil {
			t.Error(err)
		}
	})
	if err := tp.node.ip("link", "add", "name", link, "type", "veth", "peer", "name", "eth0", "netns", pod.name); err != nil {
		t.Fatal(err)
	}
	linked = true
	if err := tp.wirePod(pod, link); err != nil {
		t.Fatal(err)
	}
	tp.mu.Lock()
	tp.owners[pod.V4] = pod.NS
	if pod.V6.IsValid() {
		tp.owners[pod.V6] = pod.NS
	}
	tp.mu.Unlock()
	return pod
}

// wirePod sets up addresses and routes on both ends of the veth pair
// between the node (where its end is named link) and pod.
func (tp *Topology) wirePod(pod Pod, link string) error {
	gw4, err := nthAddr(tp.cfg.pods[pod.Site][IPv4], 1)
	if err != nil {
		return err
	}
	nodeCmds := [][]string{
		addrAdd(netip.PrefixFrom(gw4, 32), link),
		{"link", "set", link, "up"},
		{"route", "add", pod.V4.String() + "/32", "dev", link},
	}
	podCmds := [][]string{
		addrAdd(netip.PrefixFrom(pod.V4, 32), "eth0"),
		{"link", "set", "eth0", "up"},
		{"route", "add", gw4.String() + "/32", "dev", "eth0", "scope", "link"},
		{"route", "add", "default", "via", gw4.String(), "dev", "eth0"},
	}
	if pod.V6.IsValid() {
		nodeCmds = append(nodeCmds,
			addrAdd(netip.PrefixFrom(podGateway6, 64), link),
			[]string{"route", "add", pod.V6.String() + "/128", "dev", link})
		podCmds = append(podCmds,
			addrAdd(netip.PrefixFrom(pod.V6, 128), "eth0"),
			[]string{"route", "add", "default", "via", podGateway6.String(), "dev", "eth0"})
	}
	if err := tp.node.batch(nodeCmds...); err != nil {
		return err
	}
	return pod.batch(podCmds...)
}

// nthAddr returns the address n places after p's first address, which must
// still be in p and, for IPv4, not p's broadcast address.
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	last := a.Next()
	if !p.Contains(a) || (a.Is4() && !p.Contains(last)) {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s has no room for address number %d", p, n)
	}
	return a, nil
}
