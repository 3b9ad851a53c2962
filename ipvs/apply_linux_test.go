package ipvs_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipvs"
)

// The kernel tests need IPVS and dummy links, which the VM tier's kernel
// has: TestVM runs the TestGuest tests there. On the host they skip;
// TestKernelNoIPVS checks the error of a kernel without IPVS instead.

func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 10 * time.Minute})
}

// hasIPVS tells whether the running kernel has IPVS (the module loaded or
// built in).
func hasIPVS() bool {
	_, err := os.Stat("/proc/net/ip_vs")
	return err == nil
}

// kernelNS makes a fresh namespace and a Kernel applier working in it,
// inside the VM.
func kernelNS(t *testing.T) (*netnstest.NS, *ipvs.Kernel) {
	t.Helper()
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm")
	ns := netnstest.NewNS(t)
	k, err := ipvs.New(ipvs.WithNetNS("/run/netns/" + ns.Name()))
	if err != nil {
		t.Fatal(err)
	}
	return ns, k
}

// kernelState reads what ns holds: "ipvsadm -S -n" parsed, and the
// addresses of iface.
func kernelState(t *testing.T, ns *netnstest.NS, iface string) *ipvs.Plan {
	t.Helper()
	ctx := context.Background()
	out, err := ns.Exec(ctx, "ipvsadm", "-S", "-n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ipvs.ParseSave(string(out))
	if err != nil {
		t.Fatalf("ParseSave(ipvsadm -S -n) = %v\n%s", err, out)
	}
	p.Interface = iface
	addrs, err := ns.Exec(ctx, "ip", "-o", "addr", "show", "dev", iface)
	if err != nil {
		return p // no interface
	}
	for _, line := range strings.Split(string(addrs), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" && f[i] != "inet6" {
				continue
			}
			pr, err := netip.ParsePrefix(f[i+1])
			if err != nil || pr.Addr().IsLinkLocalUnicast() {
				continue
			}
			if pr.Bits() != pr.Addr().BitLen() {
				t.Errorf("address %s on %s is not a host route", pr, iface)
			}
			p.Addresses = append(p.Addresses, pr.Addr())
		}
	}
	slices.SortFunc(p.Addresses, netip.Addr.Compare)
	return p
}

// checkKernel fails t unless ns holds exactly want.
func checkKernel(t *testing.T, ns *netnstest.NS, want *ipvs.Plan) {
	t.Helper()
	w := *want
	w.Interface = want.InterfaceOrDefault()
	w.VirtualServers = slices.Clone(want.VirtualServers)
	for i := range w.VirtualServers {
		w.VirtualServers[i].Scheduler = w.VirtualServers[i].SchedulerOrDefault()
	}
	if diff := cmp.Diff(&w, kernelState(t, ns, w.Interface), cmpAddrs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("kernel after Apply (-plan +kernel):\n%s", diff)
	}
}

// TestKernelNoIPVS checks the error on a kernel without IPVS, the host's.
func TestKernelNoIPVS(t *testing.T) {
	netnstest.Require(t, "ip")
	if hasIPVS() {
		t.Skip("the kernel has IPVS")
	}
	ns := netnstest.NewNS(t)
	k, err := ipvs.New(ipvs.WithNetNS("/run/netns/" + ns.Name()))
	if err != nil {
		t.Fatal(err)
	}
	err = k.Apply(context.Background(), plan(1, 1))
	if !errors.Is(err, ipvs.ErrNoIPVS) || !strings.Contains(err.Error(), "ip_vs module not loaded") {
		t.Errorf("Apply without IPVS = %v, want an error saying ip_vs module not loaded", err)
	}
}

func TestGuestApply(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := plan(3, 2)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, ns, p)
	for _, sc := range k.Sysctls() {
		out, err := ns.Exec(ctx, "cat", "/proc/sys/"+sc.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "1" || sc.Value != "1" {
			t.Errorf("sysctl %s = %q in the namespace, reported %q, want 1", sc.Name, got, sc.Value)
		}
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := k.Stats(); st.LastOperations != 0 {
		t.Errorf("second Apply of the same plan: Stats = %+v, want no write", st)
	}
}

// TestKernelMatchesRestore checks the dry-run invariant: the plan's text
// fed to "ipvsadm -R" and "ip -batch" in one namespace gives what the
// applier gives in another.
func TestGuestMatchesRestore(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := plan(5, 3)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	other := netnstest.NewNS(t)
	restore := other.Command(ctx, "ipvsadm", "-R")
	restore.Stdin = strings.NewReader(p.String())
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("ipvsadm -R: %v\n%s", err, out)
	}
	batch := other.Command(ctx, "ip", "-batch", "-")
	batch.Stdin = strings.NewReader(p.AddressText() + "link set " + ipvs.DefaultInterface + " up\n")
	if out, err := batch.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	if diff := cmp.Diff(kernelState(t, other, ipvs.DefaultInterface), kernelState(t, ns, ipvs.DefaultInterface), cmpAddrs); diff != "" {
		t.Errorf("kernel state (-restored +applied):\n%s", diff)
	}
}

func TestGuestOneEndpoint(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := plan(1000, 10)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.VirtualServers[500].RealServers[3].Addr = ap("10.250.0.1:8080")
	sortReals(p.VirtualServers[500].RealServers)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, ns, p)
	if st := k.Stats(); st.LastOperations > 10 {
		t.Errorf("one endpoint changed at 1000 services: %d kernel operations, want at most 10", st.LastOperations)
	} else {
		t.Logf("one endpoint changed at 1000 services × 10: %d kernel writes", st.LastOperations)
	}
}

func TestGuestRepairsDrift(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := plan(3, 2)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	v := p.VirtualServers[0]
	for _, args := range [][]string{
		{"ipvsadm", "-D", "-t", v.Addr.String()},
		{"ipvsadm", "-E", "-t", p.VirtualServers[1].Addr.String(), "-s", "wrr"},
		{"ipvsadm", "-A", "-t", "10.99.0.1:80"},
		{"ip", "addr", "del", p.Addresses[2].String() + "/32", "dev", ipvs.DefaultInterface},
	} {
		if _, err := ns.Exec(ctx, args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, ns, p)
	if st := k.Stats(); st.Repairs != 3 {
		t.Errorf("Repairs = %d, want 3", st.Repairs)
	}
	// The whole interface deleted.
	if _, err := ns.Exec(ctx, "ip", "link", "del", ipvs.DefaultInterface); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, ns, p)
}

func TestGuestCleanup(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	if _, err := ns.Exec(ctx, "ip", "link", "add", "foreign0", "type", "dummy"); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(ctx, plan(3, 2)); err != nil {
		t.Fatal(err)
	}
	if err := k.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kernelState(t, ns, ipvs.DefaultInterface); len(got.VirtualServers) != 0 || len(got.Addresses) != 0 {
		t.Errorf("after Cleanup: %+v, want no virtual server and no address", got)
	}
	if _, err := ns.Exec(ctx, "ip", "link", "show", ipvs.DefaultInterface); err == nil {
		t.Errorf("after Cleanup %s still exists", ipvs.DefaultInterface)
	}
	if _, err := ns.Exec(ctx, "ip", "link", "show", "foreign0"); err != nil {
		t.Errorf("Cleanup removed the foreign link foreign0: %v", err)
	}
}

func TestGuestForeignLink(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	if _, err := ns.Exec(ctx, "ip", "link", "add", ipvs.DefaultInterface, "type", "veth", "peer", "name", "peer0"); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(ctx, plan(1, 1)); !errors.Is(err, ipvs.ErrForeignLink) {
		t.Errorf("Apply over a veth named %s = %v, want ErrForeignLink", ipvs.DefaultInterface, err)
	}
}

// TestGuestDrain checks graceful termination with real traffic: a client
// keeps its connection to a real server removed from the plan, which stays
// with weight 0, while new connections go to the new real server.
func TestGuestDrain(t *testing.T) {
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm")
	ctx := context.Background()
	tp := netnstest.New(t, netnstest.WithoutIPv6())
	podA, podB := tp.AddPod(t, netnstest.Local), tp.AddPod(t, netnstest.Remote)
	a := netip.AddrPortFrom(podA.Addr(netnstest.IPv4), 8080)
	b := netip.AddrPortFrom(podB.Addr(netnstest.IPv4), 8080)
	tp.Serve(t, "tcp", a)
	tp.Serve(t, "tcp", b)
	k, err := ipvs.New(ipvs.WithNetNS("/run/netns/" + tp.Node().Name()))
	if err != nil {
		t.Fatal(err)
	}
	vip := ap("10.96.0.1:80")
	mk := func(reals ...ipvs.RealServer) *ipvs.Plan {
		return &ipvs.Plan{Addresses: []netip.Addr{vip.Addr()}, VirtualServers: []ipvs.VirtualServer{{Protocol: ipvs.TCP, Addr: vip, RealServers: reals}}}
	}
	if err := k.Apply(ctx, mk(ipvs.RealServer{Addr: a, Weight: 1})); err != nil {
		t.Fatal(err)
	}
	var held net.Conn
	if err := tp.Client().Do(func() error {
		c, err := net.DialTimeout("tcp", vip.String(), 3*time.Second)
		held = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(held)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "backend="+a.String()) {
		t.Fatalf("first connection: greeting %q, %v; want backend %s", line, err, a)
	}
	if err := k.Apply(ctx, mk(ipvs.RealServer{Addr: b, Weight: 1})); err != nil {
		t.Fatal(err)
	}
	reals := []ipvs.RealServer{{Addr: a, Weight: 0}, {Addr: b, Weight: 1}}
	sortReals(reals)
	checkKernel(t, tp.Node(), mk(reals...))
	if st := k.Stats(); st.Draining != 1 {
		t.Errorf("Draining = %d with a connection open, want 1", st.Draining)
	}
	if _, err := held.Write([]byte("still there\n")); err != nil {
		t.Fatal(err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "still there\n" {
		t.Errorf("the draining real server's connection: echo %q, %v; want it to keep working", echo, err)
	}
	for range 3 {
		if r := tp.Client().Dial(ctx, "tcp", vip); !r.OK() || r.Backend != b {
			t.Errorf("new connection while %s drains: %v, want backend %s", a, r, b)
		}
	}
	// Still connected: a later Apply keeps it.
	if err := k.Apply(ctx, mk(ipvs.RealServer{Addr: b, Weight: 1})); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, tp.Node(), mk(reals...))
}

func TestNewNotNetNS(t *testing.T) {
	if _, err := ipvs.New(ipvs.WithNetNS("/etc/hostname")); !errors.Is(err, ipvs.ErrNotNetNS) {
		t.Errorf("New(WithNetNS(regular file)) = %v, want ErrNotNetNS", err)
	}
}

// TestGuestNetNSFd applies through a namespace descriptor, which the
// applier duplicates and keeps open for each call.
func TestGuestNetNSFd(t *testing.T) {
	ns, _ := kernelNS(t)
	f, err := os.Open("/run/netns/" + ns.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := ipvs.New(ipvs.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	p := plan(2, 2)
	if err := k.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	checkKernel(t, ns, p)
	if err := k.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := kernelState(t, ns, ipvs.DefaultInterface); len(got.VirtualServers) != 0 {
		t.Errorf("after Cleanup: %d virtual servers, want none", len(got.VirtualServers))
	}
}
