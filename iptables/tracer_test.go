package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	nodeIP   = netip.MustParseAddr("192.168.0.10")
	epA      = netip.MustParseAddrPort("10.244.1.5:8080")
	epB      = netip.MustParseAddrPort("10.244.2.6:8080")
	outcomes = cmp.Options{
		cmpopts.EquateApprox(0, 1e-9),
		cmpopts.IgnoreFields(Outcome{}, "Path"),
		cmpopts.EquateComparable(netip.AddrPort{}),
	}
)

func accept(p float64, dst netip.AddrPort, dnat, masq bool) Outcome {
	return Outcome{Probability: p, Verdict: VerdictAccept, Dst: dst, DNAT: dnat, Masquerade: masq}
}

func TestTraceKube(t *testing.T) {
	tr, err := NewTracer(kubePlan(t), WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	pod := netip.MustParseAddr("10.244.3.3")
	outside := netip.MustParseAddr("198.51.100.1")
	svc := netip.MustParseAddrPort("10.96.0.10:80")
	tests := []struct {
		name string
		pkt  Packet
		want []Outcome
	}{
		{
			name: "cluster IP from a pod: two endpoints, half each",
			pkt:  Packet{Src: pod, Dst: svc, Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{accept(0.5, epA, true, false), accept(0.5, epB, true, false)},
		},
		{
			name: "cluster IP from outside the cluster CIDR is masqueraded",
			pkt:  Packet{Src: outside, Dst: svc, Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{accept(0.5, epA, true, true), accept(0.5, epB, true, true)},
		},
		{
			name: "cluster IP on another protocol is not translated",
			pkt:  Packet{Src: pod, Dst: svc, Protocol: "udp", Hook: HookPrerouting},
			want: []Outcome{accept(1, svc, false, false)},
		},
		{
			name: "hairpin: the endpoint reaching itself is masqueraded",
			pkt:  Packet{Src: epA.Addr(), Dst: netip.MustParseAddrPort("10.96.0.11:80"), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{accept(1, epA, true, true)},
		},
		{
			name: "NodePort via addrtype LOCAL",
			pkt:  Packet{Src: outside, Dst: netip.AddrPortFrom(nodeIP, 30080), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{accept(0.5, epA, true, true), accept(0.5, epB, true, true)},
		},
		{
			name: "NodePort on localhost from the node",
			pkt:  Packet{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddrPort("127.0.0.1:30080"), Protocol: "tcp", Hook: HookOutput},
			want: []Outcome{accept(0.5, epA, true, true), accept(0.5, epB, true, true)},
		},
		{
			name: "cluster IP from the node itself",
			pkt:  Packet{Src: nodeIP, Dst: svc, Protocol: "tcp", Hook: HookOutput},
			want: []Outcome{accept(0.5, epA, true, true), accept(0.5, epB, true, true)},
		},
		{
			name: "no endpoints: REJECT in filter FORWARD",
			pkt:  Packet{Src: pod, Dst: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{{Probability: 1, Verdict: VerdictReject, Dst: netip.MustParseAddrPort("10.96.0.12:80")}},
		},
		{
			name: "no endpoints: REJECT in filter OUTPUT",
			pkt:  Packet{Src: nodeIP, Dst: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: "tcp", Hook: HookOutput},
			want: []Outcome{{Probability: 1, Verdict: VerdictReject, Dst: netip.MustParseAddrPort("10.96.0.12:80")}},
		},
		{
			name: "no endpoints: NodePort REJECT in filter INPUT",
			pkt:  Packet{Src: outside, Dst: netip.AddrPortFrom(nodeIP, 30012), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{{Probability: 1, Verdict: VerdictReject, Dst: netip.AddrPortFrom(nodeIP, 30012)}},
		},
		{
			name: "no local endpoints: NodePort DROP",
			pkt:  Packet{Src: outside, Dst: netip.AddrPortFrom(nodeIP, 30013), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{{Probability: 1, Verdict: VerdictDrop, Dst: netip.AddrPortFrom(nodeIP, 30013)}},
		},
		{
			name: "load balancer source ranges: DROP in KUBE-PROXY-FIREWALL",
			pkt:  Packet{Src: outside, Dst: netip.MustParseAddrPort("203.0.113.7:80"), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{{Probability: 1, Verdict: VerdictDrop, Dst: netip.MustParseAddrPort("203.0.113.7:80")}},
		},
		{
			name: "localnet from outside: DROP in KUBE-FIREWALL",
			pkt:  Packet{Src: outside, Dst: netip.MustParseAddrPort("127.0.0.1:22"), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{{Probability: 1, Verdict: VerdictDrop, Dst: netip.MustParseAddrPort("127.0.0.1:22")}},
		},
		{
			name: "unrelated traffic passes",
			pkt:  Packet{Src: outside, Dst: netip.AddrPortFrom(nodeIP, 22), Protocol: "tcp", Hook: HookPrerouting},
			want: []Outcome{accept(1, netip.AddrPortFrom(nodeIP, 22), false, false)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Trace(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Outcomes, outcomes); diff != "" {
				t.Errorf("Trace(%+v) mismatch (-want +got):\n%s%s", tt.pkt, diff, got)
			}
		})
	}
}

func TestTracePathAndString(t *testing.T) {
	tr, err := NewTracer(kubePlan(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := tr.Trace(Packet{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddrPort("10.96.0.10:80"),
		Protocol: "TCP", Hook: HookPrerouting})
	if err != nil {
		t.Fatal(err)
	}
	wantPath := []string{"nat/PREROUTING", "KUBE-SERVICES", "KUBE-SVC-WEB", "KUBE-MARK-MASQ", "KUBE-SEP-A",
		"filter/FORWARD", "KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "nat/POSTROUTING", "KUBE-POSTROUTING"}
	if diff := cmp.Diff(wantPath, got.Outcomes[0].Path); diff != "" {
		t.Errorf("Trace() path mismatch (-want +got):\n%s", diff)
	}
	want := " 50.00% accept 10.244.1.5:8080 dnat masquerade via " + strings.Join(wantPath, " > ") + "\n"
	if s := got.String(); !strings.HasPrefix(s, want) || strings.Count(s, "\n") != 2 {
		t.Errorf("Result.String() =\n%s\nwant first line\n%s", s, want)
	}
}

func TestTraceIPv6(t *testing.T) {
	tr, err := NewTracer(ipv6Plan(t), WithLocalAddrs([]netip.Addr{netip.MustParseAddr("fd00::10")}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pkt  Packet
		want []Outcome
	}{
		{
			name: "affinity rules do not match a fresh client; one third and two thirds",
			pkt: Packet{Src: netip.MustParseAddr("fd00:244::9"), Dst: netip.MustParseAddrPort("[fd00:96::10]:80"), Protocol: "tcp", Hook: HookPrerouting,
				InInterface: "eth0", OutInterface: "eth1"},
			want: []Outcome{
				accept(0.33333333333, netip.MustParseAddrPort("[fd00:244::5]:8080"), true, false),
				accept(0.66666666667, netip.MustParseAddrPort("[fd00:244::6]:8080"), true, false),
			},
		},
		{
			name: "REDIRECT to the node's first address",
			pkt:  Packet{Src: netip.MustParseAddr("fd00:244::9"), Dst: netip.MustParseAddrPort("[fd00:96::53]:53"), Protocol: "udp", Hook: HookPrerouting},
			want: []Outcome{accept(1, netip.MustParseAddrPort("[fd00::10]:40053"), true, false)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Trace(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Outcomes, outcomes); diff != "" {
				t.Errorf("Trace(%+v) mismatch (-want +got):\n%s%s", tt.pkt, diff, got)
			}
		})
	}
}

// natPlan returns a plan whose nat PREROUTING jumps to chain X of the
// given rules, plus the other chains given as name, rules....
func natPlan(t *testing.T, chains map[string][]string) *Plan {
	var cs []Chain
	for _, name := range []string{"X", "Y", "Z"} {
		if rules, ok := chains[name]; ok {
			cs = append(cs, mustChain(t, name, rules...))
		}
	}
	return &Plan{
		Tables: []TableChains{{Table: TableNAT, Chains: cs}},
		Jumps:  []Jump{{Table: TableNAT, Chain: "PREROUTING", Target: "X"}},
	}
}

func TestTraceSemantics(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	to := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	tests := []struct {
		name   string
		chains map[string][]string
		want   []Outcome
	}{
		{
			name: "three endpoints by kube-proxy's probabilities",
			chains: map[string][]string{"X": {
				"-m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 10.1.0.1:80",
				"-m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 10.1.0.2:80",
				"-j DNAT --to-destination 10.1.0.3:80",
			}},
			want: []Outcome{accept(0.3333333333, to("10.1.0.1:80"), true, false),
				accept(0.33333333335, to("10.1.0.2:80"), true, false), accept(0.33333333335, to("10.1.0.3:80"), true, false)},
		},
		{
			name: "equal outcomes merge",
			chains: map[string][]string{"X": {
				"-m statistic --mode random --probability 0.25 -j DNAT --to-destination 10.1.0.1",
				"-j DNAT --to-destination 10.1.0.1:80",
			}},
			want: []Outcome{accept(1, to("10.1.0.1:80"), true, false)},
		},
		{
			name: "RETURN and goto",
			chains: map[string][]string{
				"X": {"-g Y", "-j DROP"},
				"Y": {"-j Z", "-j RETURN", "-j DROP"},
				"Z": {"-j RETURN", "-j DROP"},
			},
			want: []Outcome{accept(1, dst, false, false)},
		},
		{
			name: "mark set in one chain, checked in another",
			chains: map[string][]string{
				"X": {"-j Y", "-m mark --mark 0x1/0x1 -j DNAT --to-destination 10.1.0.1:81", "-j DROP"},
				"Y": {"-j MARK --set-xmark 0x1/0x1"},
			},
			want: []Outcome{accept(1, to("10.1.0.1:81"), true, false)},
		},
		{
			name:   "wrong family address never matches, even inverted",
			chains: map[string][]string{"X": {"! -s fd00::/8 -j DROP", "-d fd00::1 -j DROP"}},
			want:   []Outcome{accept(1, dst, false, false)},
		},
		{
			name:   "inverted statistic and nth",
			chains: map[string][]string{"X": {"-m statistic ! --mode random --probability 0.75 -j DROP", "-m statistic --mode nth --every 3 --packet 0 -j REJECT"}},
			want: []Outcome{accept(0.5, dst, false, false), {Probability: 0.25, Verdict: VerdictDrop, Dst: dst},
				{Probability: 0.25, Verdict: VerdictReject, Dst: dst}},
		},
		{
			name:   "physdev on a packet that was not bridged",
			chains: map[string][]string{"X": {"-m physdev --physdev-is-bridged -j DROP", "-m physdev ! --physdev-is-in ! --physdev-in br0 -j REJECT"}},
			want:   []Outcome{{Probability: 1, Verdict: VerdictReject, Dst: dst}},
		},
		{
			name:   "conntrack state of a new connection",
			chains: map[string][]string{"X": {"-m conntrack --ctstate RELATED,ESTABLISHED -j DROP", "-m conntrack --ctstate DNAT -j DROP", "-m state ! --state NEW -j DROP"}},
			want:   []Outcome{accept(1, dst, false, false)},
		},
		{
			name:   "port ranges and multiport",
			chains: map[string][]string{"X": {"-p tcp --dport 81:90 -j DROP", "-p tcp -m multiport ! --dports 80,443 -j DROP", "-p tcp -m multiport --dports 1:79,80 -j REJECT"}},
			want:   []Outcome{{Probability: 1, Verdict: VerdictReject, Dst: dst}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTracer(natPlan(t, tt.chains))
			if err != nil {
				t.Fatal(err)
			}
			got, err := tr.Trace(Packet{Src: netip.MustParseAddr("10.2.0.1"), Dst: dst, Protocol: "tcp", Hook: HookPrerouting})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Outcomes, outcomes); diff != "" {
				t.Errorf("Trace() mismatch (-want +got):\n%s%s", diff, got)
			}
		})
	}
}

func TestTraceErrors(t *testing.T) {
	pkt := Packet{Src: netip.MustParseAddr("10.2.0.1"), Dst: netip.MustParseAddrPort("10.0.0.1:80"), Protocol: "tcp", Hook: HookPrerouting}
	tests := []struct {
		name    string
		chains  map[string][]string
		pkt     *Packet
		wantErr error
	}{
		{name: "loop", chains: map[string][]string{"X": {"-j Y"}, "Y": {"-j X"}}, wantErr: ErrLoop},
		{name: "missing chain", chains: map[string][]string{"X": {"-j NOWHERE"}}, wantErr: ErrMissingChain},
		{name: "goto a target", chains: map[string][]string{"X": {"-g ACCEPT"}}, wantErr: ErrMissingChain},
		{name: "ipset", chains: map[string][]string{"X": {"-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"}}, wantErr: ErrUnsupported},
		{name: "source port", chains: map[string][]string{"X": {"-p tcp --sport 80 -j ACCEPT"}}, wantErr: ErrUnsupported},
		{name: "unknown interface", chains: map[string][]string{"X": {"-i eth0 -j ACCEPT"}}, wantErr: ErrUnsupported},
		{name: "address type", chains: map[string][]string{"X": {"-m addrtype --dst-type BLACKHOLE -j ACCEPT"}}, wantErr: ErrUnsupported},
		{
			name:    "packet of the other family",
			chains:  map[string][]string{"X": {}},
			pkt:     &Packet{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddrPort("[fd00::2]:80"), Protocol: "tcp", Hook: HookPrerouting},
			wantErr: ErrWrongFamily,
		},
		{
			name:    "no hook",
			chains:  map[string][]string{"X": {}},
			pkt:     &Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: "tcp"},
			wantErr: ErrSyntax,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTracer(natPlan(t, tt.chains))
			if err != nil {
				t.Fatal(err)
			}
			p := pkt
			if tt.pkt != nil {
				p = *tt.pkt
			}
			got, err := tr.Trace(p)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Trace() = %v, %v; want error %v", got, err, tt.wantErr)
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "trace" {
				t.Errorf("Trace() error = %#v, want an *Error", err)
			}
		})
	}
}

func TestTraceInterfaces(t *testing.T) {
	tr, err := NewTracer(natPlan(t, map[string][]string{"X": {"-i veth+ -j DROP", "! -i eth0 -j REJECT"}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		iface string
		want  Verdict
	}{{"veth12", VerdictDrop}, {"eth1", VerdictReject}, {"eth0", VerdictAccept}} {
		got, err := tr.Trace(Packet{Src: netip.MustParseAddr("10.2.0.1"), Dst: netip.MustParseAddrPort("10.0.0.1:80"),
			Protocol: "tcp", Hook: HookPrerouting, InInterface: tt.iface})
		if err != nil {
			t.Fatal(err)
		}
		if v := got.Outcomes[0].Verdict; v != tt.want {
			t.Errorf("Trace(in %s) = %s, want %s", tt.iface, v, tt.want)
		}
	}
}

func TestNewTracerErrors(t *testing.T) {
	p := natPlan(t, map[string][]string{"X": {"-j ACCEPT", "-m limit --limit 1/s -j ACCEPT"}})
	_, err := NewTracer(p)
	var e *Error
	if !errors.Is(err, ErrUnknownMatch) || !errors.As(err, &e) || e.Chain != "X" || e.Rule != 2 {
		t.Errorf("NewTracer() error = %v, want an unknown match at X rule 2", err)
	}
}

// TestTraceKernelSave traces the rules as the kernel reads them back and
// expects the same outcomes as for the plan.
func TestTraceKernelSave(t *testing.T) {
	p := kubePlan(t)
	saved, err := ParseSave(IPv4, restoreInNetns(t, IPv4, p.String()), ParseOptions{OwnerPrefix: "KUBE-"})
	if err != nil {
		t.Fatal(err)
	}
	want, err := NewTracer(p, WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewTracer(saved, WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	for _, pkt := range []Packet{
		{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: "tcp", Hook: HookPrerouting},
		{Src: epA.Addr(), Dst: netip.MustParseAddrPort("10.96.0.11:80"), Protocol: "tcp", Hook: HookPrerouting},
		{Src: nodeIP, Dst: netip.AddrPortFrom(nodeIP, 30080), Protocol: "tcp", Hook: HookOutput},
		{Src: nodeIP, Dst: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: "tcp", Hook: HookOutput},
	} {
		a, err := want.Trace(pkt)
		if err != nil {
			t.Fatal(err)
		}
		b, err := got.Trace(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a.Outcomes, b.Outcomes, cmpopts.EquateApprox(0, 1e-9), cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
			t.Errorf("Trace(%+v) differs on the kernel's rules (-plan +kernel):\n%s", pkt, diff)
		}
	}
}

func BenchmarkTrace(b *testing.B) {
	p := syntheticPlan(b, 10000, 10)
	b.Run("NewTracer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := NewTracer(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	tr, err := NewTracer(p)
	if err != nil {
		b.Fatal(err)
	}
	// The last service: every rule of KUBE-SERVICES is evaluated.
	pkt := Packet{Src: netip.MustParseAddr("10.2.0.1"), Dst: netip.MustParseAddrPort("10.0.39.15:80"), Protocol: "tcp", Hook: HookPrerouting}
	b.Run("Trace", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := tr.Trace(pkt)
			if err != nil || len(res.Outcomes) != 10 {
				b.Fatalf("Trace() = %v, %v; want 10 outcomes", res, err)
			}
		}
	})
}

func ExampleTracer_Trace() {
	plan, err := ParseSave(IPv4, `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-WEB - [0:0]
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-WEB
-A KUBE-SVC-WEB -m statistic --mode random --probability 0.25 -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SVC-WEB -j DNAT --to-destination 10.244.2.6:8080
-I PREROUTING 1 -j KUBE-SERVICES
COMMIT
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	tr, err := NewTracer(plan)
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := tr.Trace(Packet{
		Src:      netip.MustParseAddr("10.244.3.3"),
		Dst:      netip.MustParseAddrPort("10.96.0.10:80"),
		Protocol: "tcp",
		Hook:     HookPrerouting,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(res)
	// Output:
	//  25.00% accept 10.244.1.5:8080 dnat via nat/PREROUTING > KUBE-SERVICES > KUBE-SVC-WEB
	//  75.00% accept 10.244.2.6:8080 dnat via nat/PREROUTING > KUBE-SERVICES > KUBE-SVC-WEB
}
