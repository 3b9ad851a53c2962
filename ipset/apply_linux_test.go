package ipset_test

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/ipset"
)

// kernelNS makes a fresh namespace and a Kernel applier working in it.
func kernelNS(t *testing.T, opts ...ipset.Option) (*netnstest.NS, *ipset.Kernel) {
	t.Helper()
	netnstest.Require(t, "ip", "ipset")
	ns := netnstest.NewNS(t)
	k, err := ipset.New(append([]ipset.Option{ipset.WithNetNS("/run/netns/" + ns.Name())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return ns, k
}

// saved returns what "ipset save" prints in ns, parsed, sets by name.
func saved(t *testing.T, ns *netnstest.NS) *ipset.Plan {
	t.Helper()
	out, err := ns.Exec(context.Background(), "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ipset.ParseSave(string(out))
	if err != nil {
		t.Fatalf("ParseSave(ipset save) = %v\n%s", err, out)
	}
	slices.SortFunc(p.Sets, func(a, b ipset.Set) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// checkSaved fails t unless ns holds exactly want's sets (and the extra
// sets named in others, whatever they hold).
func checkSaved(t *testing.T, ns *netnstest.NS, want *ipset.Plan, others ...string) {
	t.Helper()
	got := saved(t, ns)
	got.Sets = slices.DeleteFunc(got.Sets, func(s ipset.Set) bool { return slices.Contains(others, s.Name) })
	w := &ipset.Plan{Sets: slices.Clone(want.Sets)}
	slices.SortFunc(w.Sets, func(a, b ipset.Set) int { return strings.Compare(a.Name, b.Name) })
	if diff := cmp.Diff(w, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.IgnoreFields(ipset.Set{}, "Comment"), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ipset save after Apply (-plan +kernel):\n%s", diff)
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// allTypes is a plan with every set type kube-proxy uses, in both
// families.
func allTypes() *ipset.Plan {
	return &ipset.Plan{Sets: []ipset.Set{
		{Name: "KUBE-CLUSTER-IP", Type: ipset.TypeHashIPPort, Family: ipset.IPv4, Comment: "cluster ips", Entries: []ipset.Entry{
			{IP: ip("10.96.0.1"), Protocol: ipset.TCP, Port: 443},
			{IP: ip("10.96.0.10"), Protocol: ipset.SCTP, Port: 9000},
			{IP: ip("10.96.0.10"), Protocol: ipset.UDP, Port: 53},
		}},
		{Name: "KUBE-LOOP-BACK", Type: ipset.TypeHashIPPortIP, Family: ipset.IPv4, Entries: []ipset.Entry{
			{IP: ip("10.244.1.5"), Protocol: ipset.TCP, Port: 8080, IP2: ip("10.244.1.5")},
		}},
		{Name: "KUBE-LOAD-BALANCER-SOURCE-CIDR", Type: ipset.TypeHashIPPortNet, Family: ipset.IPv4, Entries: []ipset.Entry{
			{IP: ip("192.0.2.10"), Protocol: ipset.TCP, Port: 80, Net: netip.MustParsePrefix("198.51.100.0/24")},
		}},
		{Name: "KUBE-NODE-PORT-UDP", Type: ipset.TypeBitmapPort, PortRange: ipset.PortRange{First: 30000, Last: 32767}, Entries: []ipset.Entry{
			{Port: 30053}, {Port: 31000},
		}},
		{Name: "KUBE-IPVS-IPS", Type: ipset.TypeHashIP, Family: ipset.IPv4, Entries: []ipset.Entry{
			{IP: ip("10.96.0.1")}, {IP: ip("10.96.0.10")},
		}},
		{Name: "KUBE-6-CLUSTER-IP", Type: ipset.TypeHashIPPort, Family: ipset.IPv6, Entries: []ipset.Entry{
			{IP: ip("fd00:96::1"), Protocol: ipset.TCP, Port: 443},
			{IP: ip("fd00:96::a"), Protocol: ipset.UDP, Port: 53},
		}},
		{Name: "KUBE-6-LOOP-BACK", Type: ipset.TypeHashIPPortIP, Family: ipset.IPv6, Entries: []ipset.Entry{
			{IP: ip("fd00:244::5"), Protocol: ipset.UDP, Port: 53, IP2: ip("fd00:244::5")},
		}},
		{Name: "KUBE-6-LOAD-BALANCER-SOURCE-CID", Type: ipset.TypeHashIPPortNet, Family: ipset.IPv6, Entries: []ipset.Entry{
			{IP: ip("2001:db8::10"), Protocol: ipset.TCP, Port: 80, Net: netip.MustParsePrefix("2001:db8:1::/48")},
		}},
		{Name: "KUBE-6-IPVS-IPS", Type: ipset.TypeHashIP, Family: ipset.IPv6, Entries: []ipset.Entry{
			{IP: ip("fd00:96::1")},
		}},
	}}
}

func TestKernelAllTypes(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
	members := p.Len()
	if st := k.Stats(); st.Creates != len(p.Sets) || st.Adds != members || st.LastOperations != len(p.Sets)+members {
		t.Errorf("first Apply: Stats = %+v, want %d creates and %d adds", st, len(p.Sets), members)
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := k.Stats(); st.LastOperations != 0 || st.Repairs != 0 {
		t.Errorf("second Apply of the same plan: Stats = %+v, want no write", st)
	}
}

// TestKernelMatchesRestore checks the dry-run invariant: the plan's text
// loaded with "ipset restore" in one namespace gives what the applier
// gives in another.
func TestKernelMatchesRestore(t *testing.T) {
	ns, k := kernelNS(t)
	p := allTypes()
	if err := k.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	other := netnstest.NewNS(t)
	cmd := other.Command(context.Background(), "ipset", "restore")
	cmd.Stdin = strings.NewReader(p.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore: %v\n%s", err, out)
	}
	if diff := cmp.Diff(saved(t, other), saved(t, ns), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("ipset save (-restore +applier):\n%s", diff)
	}
}

func TestKernelPartialUpdate(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	// One service endpoint changes: one member replaced in one set, one
	// NodePort added to a bitmap.
	p.Sets[1].Entries[0] = ipset.Entry{IP: ip("10.244.2.7"), Protocol: ipset.TCP, Port: 8080, IP2: ip("10.244.2.7")}
	p.Sets[3].Entries = append(p.Sets[3].Entries, ipset.Entry{Port: 32000})
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
	if st := k.Stats(); st.LastOperations != 3 || st.Rebuilds != 0 {
		t.Errorf("partial Apply: Stats = %+v, want 3 writes (2 adds, 1 delete) and no rebuild", st)
	}
}

// TestKernelOneEndpoint checks the writes of one endpoint changed among
// 1000 services with 10 endpoints each: its hairpin member replaced.
func TestKernelOneEndpoint(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	s := ipset.Set{Name: "KUBE-LOOP-BACK", Type: ipset.TypeHashIPPortIP, Family: ipset.IPv4}
	for svc := range 1000 {
		for ep := range 10 {
			a := netip.AddrFrom4([4]byte{10, 244, byte(ep), byte(svc)})
			if svc >= 256 {
				a = netip.AddrFrom4([4]byte{10, byte(244 + svc/256), byte(ep), byte(svc)})
			}
			s.Entries = append(s.Entries, ipset.Entry{IP: a, Protocol: ipset.TCP, Port: 8080, IP2: a})
		}
	}
	s.Entries = ipset.SortEntries(s.Entries)
	p := &ipset.Plan{Sets: []ipset.Set{s}}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("10.250.0.1")
	p.Sets[0].Entries[5000] = ipset.Entry{IP: a, Protocol: ipset.TCP, Port: 8080, IP2: a}
	p.Sets[0].Entries = ipset.SortEntries(p.Sets[0].Entries)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
	if st := k.Stats(); st.LastOperations != 2 {
		t.Errorf("one endpoint changed among 10 000 members: %d writes, want 2", st.LastOperations)
	}
}

func TestKernelSwap(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	set := func(first, n int) *ipset.Plan {
		s := ipset.Set{Name: "KUBE-CLUSTER-IP", Type: ipset.TypeHashIPPort, Family: ipset.IPv4}
		for i := range n {
			s.Entries = append(s.Entries, ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 96, byte((first + i) >> 8), byte(first + i)}), Protocol: ipset.TCP, Port: 80})
		}
		return &ipset.Plan{Sets: []ipset.Set{s}}
	}
	if err := k.Apply(ctx, set(0, 50)); err != nil {
		t.Fatal(err)
	}
	p := set(40, 50) // 40 of 50 members change
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
	st := k.Stats()
	if st.Rebuilds != 1 || st.Swaps != 1 || st.LastOperations != 50+3 {
		t.Errorf("Apply changing most members: Stats = %+v, want one rebuild (53 writes)", st)
	}
}

func TestKernelRepairsDrift(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"destroy", "KUBE-IPVS-IPS"},
		{"del", "KUBE-CLUSTER-IP", "10.96.0.1,tcp:443"},
		{"add", "KUBE-CLUSTER-IP", "10.96.9.9,tcp:80"},
		{"flush", "KUBE-NODE-PORT-UDP"},
	} {
		if _, err := ns.Exec(ctx, "ipset", args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
	if st := k.Stats(); st.Repairs != 3 {
		t.Errorf("Apply after outside changes: Stats = %+v, want 3 sets repaired", st)
	}
}

func TestKernelOwnership(t *testing.T) {
	netnstest.Require(t, "iptables")
	ns, k := kernelNS(t)
	ctx := context.Background()
	for _, args := range [][]string{
		{"create", "docker-allow", "hash:ip"},
		{"add", "docker-allow", "172.17.0.2"},
		{"create", "KUBE-STALE", "hash:ip"},
		{"create", "KUBE-STALE-USED", "hash:ip"},
	} {
		if _, err := ns.Exec(ctx, "ipset", args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ns.Exec(ctx, "iptables", "-A", "INPUT", "-m", "set", "--match-set", "KUBE-STALE-USED", "src", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p, "docker-allow", "KUBE-STALE-USED")
	if st := k.Stats(); st.InUse != 1 {
		t.Errorf("Apply with a stale set in use: InUse = %d, want 1", st.InUse)
	}
	if _, err := ns.Exec(ctx, "iptables", "-F", "INPUT"); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p, "docker-allow")
	if err := k.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	got := saved(t, ns)
	if names := setNames(got); !slices.Equal(names, []string{"docker-allow"}) {
		t.Errorf("sets after Cleanup = %v, want only the foreign docker-allow", names)
	}
	if s := got.Set("docker-allow"); s == nil || len(s.Entries) != 1 {
		t.Errorf("foreign set after Cleanup = %+v, want its member kept", s)
	}
}

// TestKernelOwnedByPlan checks that with no owner prefix only the sets
// the plans named are owned.
func TestKernelOwnedByPlan(t *testing.T) {
	ns, k := kernelNS(t, ipset.WithOwnerPrefix(""))
	ctx := context.Background()
	if _, err := ns.Exec(ctx, "ipset", "create", "KUBE-OTHER", "hash:ip"); err != nil {
		t.Fatal(err)
	}
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Sets = p.Sets[:2]
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p, "KUBE-OTHER")
	if err := k.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if names := setNames(saved(t, ns)); !slices.Equal(names, []string{"KUBE-OTHER"}) {
		t.Errorf("sets after Cleanup = %v, want [KUBE-OTHER]", names)
	}
}

// TestKernelRedefined checks that a set of another type, family or range
// than planned is replaced.
func TestKernelRedefined(t *testing.T) {
	ns, k := kernelNS(t)
	ctx := context.Background()
	for _, args := range [][]string{
		{"create", "KUBE-CLUSTER-IP", "hash:ip"},
		{"create", "KUBE-6-CLUSTER-IP", "hash:ip,port", "family", "inet"},
		{"create", "KUBE-NODE-PORT-UDP", "bitmap:port", "range", "0-65535"},
	} {
		if _, err := ns.Exec(ctx, "ipset", args...); err != nil {
			t.Fatal(err)
		}
	}
	p := allTypes()
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
}

func TestKernelBadMember(t *testing.T) {
	ns, k := kernelNS(t)
	p := &ipset.Plan{Sets: []ipset.Set{{Name: "KUBE-IPVS-IPS", Type: ipset.TypeHashIP, Family: ipset.IPv4,
		Entries: []ipset.Entry{{IP: ip("fd00::1")}}}}}
	err := k.Apply(context.Background(), p)
	var ae *ipset.ApplyError
	if !errors.As(err, &ae) || ae.Op != "validate" {
		t.Fatalf("Apply(IPv6 member in an IPv4 set) = %v, want a validate ApplyError", err)
	}
	if got := setNames(saved(t, ns)); len(got) != 0 {
		t.Errorf("sets after a refused plan = %v, want none", got)
	}
}

func TestKernelNetNSFd(t *testing.T) {
	ns, _ := kernelNS(t)
	f, err := os.Open("/run/netns/" + ns.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := ipset.New(ipset.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	p := allTypes()
	if err := k.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)

	_, err = ipset.New(ipset.WithNetNS("/etc/hostname"))
	if !errors.Is(err, ipset.ErrNotNetNS) {
		t.Errorf("New(WithNetNS(regular file)) = %v, want ErrNotNetNS", err)
	}
}

// TestKernelLarge applies a set larger than the kernel's default maxelem.
func TestKernelLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 70 000 members")
	}
	ns, k := kernelNS(t)
	s := ipset.Set{Name: "KUBE-LOOP-BACK", Type: ipset.TypeHashIPPortIP, Family: ipset.IPv4}
	for i := range 70000 {
		a := netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
		s.Entries = append(s.Entries, ipset.Entry{IP: a, Protocol: ipset.Protocol([]string{"tcp", "udp"}[i/65536]), Port: 80, IP2: a})
	}
	s.Entries = ipset.SortEntries(s.Entries)
	p := &ipset.Plan{Sets: []ipset.Set{s}}
	if err := k.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	checkSaved(t, ns, p)
}

func setNames(p *ipset.Plan) []string {
	m := map[string]bool{}
	for _, s := range p.Sets {
		m[s.Name] = true
	}
	return slices.Sorted(maps.Keys(m))
}
