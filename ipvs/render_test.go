package ipvs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func samplePlan() *Plan {
	ap := netip.MustParseAddrPort
	return &Plan{
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::1")},
		VirtualServers: []VirtualServer{
			{Protocol: SCTP, Addr: ap("10.96.0.1:9000"), RealServers: []RealServer{{Addr: ap("10.244.0.9:9000"), Weight: 1}}},
			{Protocol: TCP, Addr: ap("10.96.0.1:443"), Scheduler: RoundRobin, RealServers: []RealServer{
				{Addr: ap("192.168.1.10:6443"), Weight: 1}, {Addr: ap("192.168.1.11:6443"), Weight: 0},
			}},
			{Protocol: TCP, Addr: ap("192.168.0.2:30080"), Scheduler: WeightedRoundRobin, Timeout: 10800 * time.Second},
			{Protocol: TCP, Addr: ap("[fd00::1]:80"), Scheduler: LeastConnection, RealServers: []RealServer{{Addr: ap("[fd00:244::5]:8080"), Weight: 1}}},
			{Protocol: UDP, Addr: ap("10.96.0.10:53"), RealServers: []RealServer{{Addr: ap("10.244.0.2:53"), Weight: 1}, {Addr: ap("10.244.0.3:53"), Weight: 1}}},
		},
	}
}

const sampleText = `-A --sctp-service 10.96.0.1:9000 -s rr
-a --sctp-service 10.96.0.1:9000 -r 10.244.0.9:9000 -m -w 1
-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r 192.168.1.10:6443 -m -w 1
-a -t 10.96.0.1:443 -r 192.168.1.11:6443 -m -w 0
-A -t 192.168.0.2:30080 -s wrr -p 10800
-A -t [fd00::1]:80 -s lc
-a -t [fd00::1]:80 -r [fd00:244::5]:8080 -m -w 1
-A -u 10.96.0.10:53 -s rr
-a -u 10.96.0.10:53 -r 10.244.0.2:53 -m -w 1
-a -u 10.96.0.10:53 -r 10.244.0.3:53 -m -w 1
`

func TestRender(t *testing.T) {
	p := samplePlan()
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if diff := cmp.Diff(sampleText, p.String()); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
	wantAddr := "link add kube-ipvs0 type dummy\naddr add 10.96.0.1/32 dev kube-ipvs0\naddr add 10.96.0.10/32 dev kube-ipvs0\naddr add fd00::1/128 dev kube-ipvs0\n"
	if got := p.AddressText(); got != wantAddr {
		t.Errorf("AddressText() = %q, want %q", got, wantAddr)
	}
}

var addrCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

func TestParseSave(t *testing.T) {
	// The kernel lists services in hash order and ipvsadm may print the
	// default netmask; ParseSave sorts and accepts both.
	kernel := "-A -u 10.96.0.10:53 -s rr\n-a -u 10.96.0.10:53 -r 10.244.0.3:53 -m -w 1\n-a -u 10.96.0.10:53 -r 10.244.0.2:53 -m -w 1\n" +
		strings.Replace(sampleText, "-u 10.96.0.10:53", "-u 10.96.0.99:53", -1)
	got, err := ParseSave(sampleText)
	if err != nil {
		t.Fatalf("ParseSave: %v", err)
	}
	want := samplePlan()
	want.Addresses = nil
	for i := range want.VirtualServers {
		if want.VirtualServers[i].Scheduler == "" {
			want.VirtualServers[i].Scheduler = RoundRobin
		}
	}
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Errorf("ParseSave(String()) mismatch (-want +got):\n%s", diff)
	}
	k, err := ParseSave(kernel)
	if err != nil {
		t.Fatalf("ParseSave(kernel order): %v", err)
	}
	v := k.VirtualServer(UDP, netip.MustParseAddrPort("10.96.0.10:53"))
	if v == nil || !v.Equal(&want.VirtualServers[4]) {
		t.Errorf("VirtualServer(udp 10.96.0.10:53) = %+v, want %+v", v, want.VirtualServers[4])
	}
}

func TestParseSaveErrors(t *testing.T) {
	for _, text := range []string{
		"-A -f 1 -s rr\n",
		"-A -t 10.0.0.1:80 -s rr -b sh-port\n",
		"-A -t 10.0.0.1:80 -s rr --ops\n",
		"-A -t 10.0.0.1:80 -s rr -M 255.255.255.0\n",
		"-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1\n",
		"-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n",
		"-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1 -x 10\n",
		"-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n",
		"-D -t 10.0.0.1:80\n",
		"-A -t 10.0.0.1 -s rr\n",
	} {
		if _, err := ParseSave(text); !errors.Is(err, ErrSaveSyntax) {
			t.Errorf("ParseSave(%q) = %v, want an error wrapping ErrSaveSyntax", text, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ap := netip.MustParseAddrPort
	vs := func(mod func(*VirtualServer)) *Plan {
		v := VirtualServer{Protocol: TCP, Addr: ap("10.0.0.1:80"), RealServers: []RealServer{{Addr: ap("10.1.0.1:80"), Weight: 1}}}
		mod(&v)
		return &Plan{VirtualServers: []VirtualServer{v}}
	}
	tests := []struct {
		name    string
		p       *Plan
		wantErr string
	}{
		{"sample", samplePlan(), ""},
		{"zero", &Plan{}, ""},
		{"long interface", &Plan{Interface: "kube-ipvs0-much-too-long"}, "longer than 15"},
		{"interface with slash", &Plan{Interface: "a/b"}, "not allowed"},
		{"unsorted addresses", &Plan{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")}}, "not sorted"},
		{"mapped address", &Plan{Addresses: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")}}, "IPv4-mapped"},
		{"protocol", vs(func(v *VirtualServer) { v.Protocol = "icmp" }), "must be tcp, udp or sctp"},
		{"scheduler", vs(func(v *VirtualServer) { v.Scheduler = "fastest" }), "scheduler \"fastest\" unknown"},
		{"no port", vs(func(v *VirtualServer) { v.Addr = ap("10.0.0.1:0") }), "without port"},
		{"fractional timeout", vs(func(v *VirtualServer) { v.Timeout = 1500 * time.Millisecond }), "whole seconds"},
		{"real server family", vs(func(v *VirtualServer) { v.RealServers[0].Addr = ap("[fd00::1]:80") }), "other family"},
		{"weight", vs(func(v *VirtualServer) { v.RealServers[0].Weight = -1 }), "outside 0..65535"},
		{"duplicate real server", vs(func(v *VirtualServer) { v.RealServers = append(v.RealServers, v.RealServers[0]) }), "listed twice"},
		{"duplicate virtual server", &Plan{VirtualServers: []VirtualServer{{Protocol: TCP, Addr: ap("10.0.0.1:80")}, {Protocol: TCP, Addr: ap("10.0.0.1:80")}}}, "listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidPlan) {
				t.Errorf("Validate() = %v, want an ErrInvalidPlan error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestTracer(t *testing.T) {
	ap := netip.MustParseAddrPort
	p := samplePlan()
	p.VirtualServers[2].RealServers = []RealServer{{Addr: ap("10.244.0.1:80"), Weight: 1}, {Addr: ap("10.244.0.2:80"), Weight: 3}}
	tr := NewTracer(p)
	tests := []struct {
		name  string
		proto Protocol
		dst   string
		ok    bool
		want  []Choice
	}{
		{"rr skips weight 0", TCP, "10.96.0.1:443", true, []Choice{{ap("192.168.1.10:6443"), 1}}},
		{"rr equal shares", UDP, "10.96.0.10:53", true, []Choice{{ap("10.244.0.2:53"), 0.5}, {ap("10.244.0.3:53"), 0.5}}},
		{"wrr by weight", TCP, "192.168.0.2:30080", true, []Choice{{ap("10.244.0.1:80"), 0.25}, {ap("10.244.0.2:80"), 0.75}}},
		{"other protocol", UDP, "10.96.0.1:443", false, nil},
		{"ipv6", TCP, "[fd00::1]:80", true, []Choice{{ap("[fd00:244::5]:8080"), 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := tr.Lookup(tc.proto, ap(tc.dst))
			if ok != tc.ok {
				t.Fatalf("Lookup(%s %s) ok = %v, want %v", tc.proto, tc.dst, ok, tc.ok)
			}
			if diff := cmp.Diff(tc.want, l.Choices, addrCmp); diff != "" {
				t.Errorf("Lookup(%s %s) choices mismatch (-want +got):\n%s", tc.proto, tc.dst, diff)
			}
		})
	}
	if !tr.Bound(netip.MustParseAddr("fd00::1")) || tr.Bound(netip.MustParseAddr("192.168.0.2")) {
		t.Errorf("Bound gives wrong answers")
	}
}

func FuzzParseSave(f *testing.F) {
	f.Add(sampleText)
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParseSave(text)
		if err != nil || p.Validate() != nil {
			return
		}
		again, err := ParseSave(p.String())
		if err != nil {
			t.Fatalf("ParseSave(String()) = %v", err)
		}
		if diff := cmp.Diff(p, again, addrCmp); diff != "" {
			t.Fatalf("round trip changed the plan (-first +second):\n%s", diff)
		}
	})
}
