package ipset

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func samplePlan() *Plan {
	a := netip.MustParseAddr
	return &Plan{Sets: []Set{
		{Name: "KUBE-CLUSTER-IP", Type: TypeHashIPPort, Family: IPv4, Comment: "Kubernetes service cluster ip + port for masquerade purpose",
			Entries: []Entry{
				{IP: a("10.0.0.1"), Protocol: SCTP, Port: 53},
				{IP: a("10.0.0.1"), Protocol: TCP, Port: 80},
				{IP: a("10.0.0.1"), Protocol: UDP, Port: 53},
			}},
		{Name: "KUBE-6-CLUSTER-IP", Type: TypeHashIPPort, Family: IPv6, Entries: []Entry{{IP: a("fd00::1"), Protocol: TCP, Port: 80}}},
		{Name: "KUBE-LOOP-BACK", Type: TypeHashIPPortIP, Family: IPv4, Entries: []Entry{{IP: a("10.0.0.1"), Protocol: TCP, Port: 80, IP2: a("10.0.0.1")}}},
		{Name: "KUBE-6-LOOP-BACK", Type: TypeHashIPPortIP, Family: IPv6, Entries: []Entry{{IP: a("fd00::1"), Protocol: TCP, Port: 80, IP2: a("fd00::1")}}},
		{Name: "KUBE-LOAD-BALANCER-SOURCE-CIDR", Type: TypeHashIPPortNet, Family: IPv4, Entries: []Entry{
			{IP: a("10.0.0.1"), Protocol: TCP, Port: 80, Net: netip.MustParsePrefix("10.0.0.0/24")},
			{IP: a("10.0.0.1"), Protocol: TCP, Port: 80, Net: netip.MustParsePrefix("10.0.0.5/32")},
		}},
		{Name: "KUBE-6-LOAD-BALANCER-SOURCE-CID", Type: TypeHashIPPortNet, Family: IPv6, Entries: []Entry{
			{IP: a("fd00::1"), Protocol: TCP, Port: 80, Net: netip.MustParsePrefix("fd00::/64")},
		}},
		{Name: "KUBE-NODE-PORT-TCP", Type: TypeBitmapPort, PortRange: PortRange{0, 65535}, Entries: []Entry{{Port: 30080}, {Port: 30443}}},
		{Name: "KUBE-IPVS-IPS", Type: TypeHashIP, Family: IPv4, Entries: []Entry{{IP: a("10.0.0.1")}, {IP: a("10.0.0.2")}}},
		{Name: "KUBE-EMPTY", Type: TypeHashIPPort, Family: IPv4},
	}}
}

const sampleText = `# KUBE-CLUSTER-IP: Kubernetes service cluster ip + port for masquerade purpose
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-CLUSTER-IP 10.0.0.1,sctp:53
add KUBE-CLUSTER-IP 10.0.0.1,tcp:80
add KUBE-CLUSTER-IP 10.0.0.1,udp:53
create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536
add KUBE-6-CLUSTER-IP fd00::1,tcp:80
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.0.0.1,tcp:80,10.0.0.1
create KUBE-6-LOOP-BACK hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536
add KUBE-6-LOOP-BACK fd00::1,tcp:80,fd00::1
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-LOAD-BALANCER-SOURCE-CIDR 10.0.0.1,tcp:80,10.0.0.0/24
add KUBE-LOAD-BALANCER-SOURCE-CIDR 10.0.0.1,tcp:80,10.0.0.5
create KUBE-6-LOAD-BALANCER-SOURCE-CID hash:ip,port,net family inet6 hashsize 1024 maxelem 65536
add KUBE-6-LOAD-BALANCER-SOURCE-CID fd00::1,tcp:80,fd00::/64
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
add KUBE-NODE-PORT-TCP 30443
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-IPS 10.0.0.1
add KUBE-IPVS-IPS 10.0.0.2
create KUBE-EMPTY hash:ip,port family inet hashsize 1024 maxelem 65536
`

func TestRender(t *testing.T) {
	p := samplePlan()
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if diff := cmp.Diff(sampleText, p.String()); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
	var b strings.Builder
	n, err := p.WriteTo(&b)
	if err != nil || n != int64(len(sampleText)) {
		t.Errorf("WriteTo = %d, %v, want %d, nil", n, err, len(sampleText))
	}
}

func TestParseSaveRoundTrip(t *testing.T) {
	got, err := ParseSave(sampleText)
	if err != nil {
		t.Fatalf("ParseSave: %v", err)
	}
	want := samplePlan()
	want.Sets[0].Comment = ""
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("ParseSave(String()) mismatch (-want +got):\n%s", diff)
	}
	for i := range want.Sets {
		if !want.Sets[i].Equal(&got.Sets[i]) {
			t.Errorf("Set %s: Equal = false after round trip", want.Sets[i].Name)
		}
	}
}

// kernelSave is what ipset v7.17 printed for part of the sample plan in a
// fresh namespace: extra create options and members in hash order.
const kernelSave = `create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x4503f3a8
add KUBE-CLUSTER-IP 10.0.0.1,tcp:80
add KUBE-CLUSTER-IP 10.0.0.1,udp:53 comment "a b"
add KUBE-CLUSTER-IP 10.0.0.1,sctp:53
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30443
add KUBE-NODE-PORT-TCP 30080
`

func TestParseSaveKernelOutput(t *testing.T) {
	got, err := ParseSave(kernelSave)
	if err != nil {
		t.Fatalf("ParseSave: %v", err)
	}
	want := samplePlan()
	for _, name := range []string{"KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP"} {
		if g, w := got.Set(name), want.Set(name); g == nil || !w.Equal(g) {
			t.Errorf("ParseSave: set %s = %+v, want %+v", name, g, w)
		}
	}
}

func TestParseSaveErrors(t *testing.T) {
	tests := []struct{ name, text string }{
		{"unknown command", "destroy KUBE-X\n"},
		{"add before create", "add KUBE-X 10.0.0.1\n"},
		{"created twice", "create A hash:ip family inet\ncreate A hash:ip family inet\n"},
		{"unknown type", "create A list:set\n"},
		{"unknown option", "create A hash:ip family inet netmask 24\n"},
		{"bad family", "create A hash:ip family inet4\n"},
		{"bitmap without range", "create A bitmap:port\n"},
		{"bad member", "create A hash:ip,port family inet\nadd A 10.0.0.1\n"},
		{"icmp member", "create A hash:ip,port family inet\nadd A 10.0.0.1,icmp:ping\n"},
		{"unknown member option", "create A hash:ip family inet\nadd A 10.0.0.1 nomatch\n"},
		{"unterminated comment", "create A hash:ip family inet\nadd A 10.0.0.1 comment \"abc\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSave(tc.text); !errors.Is(err, ErrSaveSyntax) {
				t.Errorf("ParseSave(%q) = %v, want an error wrapping ErrSaveSyntax", tc.text, err)
			}
		})
	}
}

func TestEntryString(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		e    Entry
		typ  Type
		want string
	}{
		{Entry{IP: a("10.0.0.1")}, TypeHashIP, "10.0.0.1"},
		{Entry{IP: a("fd00::1"), Protocol: UDP, Port: 53}, TypeHashIPPort, "fd00::1,udp:53"},
		{Entry{IP: a("10.0.0.1"), Protocol: TCP, Port: 80, IP2: a("10.0.0.2")}, TypeHashIPPortIP, "10.0.0.1,tcp:80,10.0.0.2"},
		{Entry{IP: a("10.0.0.1"), Protocol: SCTP, Port: 80, Net: netip.MustParsePrefix("10.1.0.0/16")}, TypeHashIPPortNet, "10.0.0.1,sctp:80,10.1.0.0/16"},
		{Entry{Port: 30080}, TypeBitmapPort, "30080"},
	}
	for _, tc := range tests {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
		back, err := ParseEntry(tc.typ, tc.want)
		if err != nil || back != tc.e {
			t.Errorf("ParseEntry(%s, %q) = %+v, %v, want %+v", tc.typ, tc.want, back, err, tc.e)
		}
	}
}

func TestSortEntries(t *testing.T) {
	a := netip.MustParseAddr
	got := SortEntries([]Entry{
		{IP: a("10.0.0.2"), Protocol: TCP, Port: 80},
		{IP: a("10.0.0.1"), Protocol: UDP, Port: 53},
		{IP: a("10.0.0.1"), Protocol: TCP, Port: 443},
		{IP: a("10.0.0.1"), Protocol: TCP, Port: 80},
		{IP: a("10.0.0.2"), Protocol: TCP, Port: 80},
	})
	want := []Entry{
		{IP: a("10.0.0.1"), Protocol: TCP, Port: 80},
		{IP: a("10.0.0.1"), Protocol: TCP, Port: 443},
		{IP: a("10.0.0.1"), Protocol: UDP, Port: 53},
		{IP: a("10.0.0.2"), Protocol: TCP, Port: 80},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("SortEntries mismatch (-want +got):\n%s", diff)
	}
	s := Set{Entries: got}
	if !s.Contains(want[2]) || s.Contains(Entry{IP: a("10.0.0.3")}) {
		t.Errorf("Contains gives wrong answers on %v", got)
	}
}
