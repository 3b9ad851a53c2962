package userspace

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestPlanValidate(t *testing.T) {
	good := Listener{Name: "ns/a:p", Protocol: ProtocolTCP, Addr: ap("0.0.0.0:20000"), Backends: []netip.AddrPort{ap("10.0.0.1:80")}}
	with := func(mod func(*Listener)) Listener {
		l := good.clone()
		mod(&l)
		return l
	}
	tests := []struct {
		name    string
		plan    Plan
		wantErr []string // substrings, one per problem
	}{
		{name: "empty", plan: Plan{}},
		{name: "good", plan: Plan{Listeners: []Listener{good}}},
		{name: "udp and tcp on one port", plan: Plan{Listeners: []Listener{good, with(func(l *Listener) { l.Protocol = ProtocolUDP })}}},
		{name: "two families on one port", plan: Plan{Listeners: []Listener{good, with(func(l *Listener) { l.Addr = ap("[::]:20000") })}}},
		{name: "kernel-chosen ports told apart by name", plan: Plan{Listeners: []Listener{
			with(func(l *Listener) { l.Addr = ap("127.0.0.1:0") }),
			with(func(l *Listener) { l.Addr, l.Name = ap("127.0.0.1:0"), "ns/b:p" }),
		}}},
		{name: "sctp", plan: Plan{Listeners: []Listener{with(func(l *Listener) { l.Protocol = "SCTP" })}},
			wantErr: []string{`listeners[0] (ns/a:p): protocol "SCTP" not supported`}},
		{name: "no address", plan: Plan{Listeners: []Listener{with(func(l *Listener) { l.Addr = netip.AddrPort{} })}},
			wantErr: []string{"listeners[0] (ns/a:p): address"}},
		{name: "bad backend and timeouts", plan: Plan{Listeners: []Listener{with(func(l *Listener) {
			l.Backends = append(l.Backends, ap("10.0.0.2:0"))
			l.AffinityTimeout = -time.Second
			l.UDPIdleTimeout = -time.Second
		})}}, wantErr: []string{"backends[1]", "negative affinity timeout", "negative UDP idle timeout"}},
		{name: "duplicate", plan: Plan{Listeners: []Listener{good, with(func(l *Listener) { l.Name = "ns/b:p" })}},
			wantErr: []string{"listeners[1] (ns/b:p): same protocol and address as listeners[0] (ns/a:p)"}},
		{name: "duplicate through a mapped address", plan: Plan{Listeners: []Listener{
			with(func(l *Listener) { l.Addr = ap("10.0.0.10:20000") }),
			with(func(l *Listener) { l.Addr = ap("[::ffff:10.0.0.10]:20000") }),
		}}, wantErr: []string{"listeners[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.plan.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidPlan", err)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestPlanString(t *testing.T) {
	p := Plan{Listeners: []Listener{
		{Name: "ns1/svc1:p80", Protocol: ProtocolTCP, Addr: ap("0.0.0.0:20000"),
			Backends: []netip.AddrPort{ap("10.180.0.1:80"), ap("10.180.0.2:80")}},
		{Name: "ns2/dns:dns", Protocol: ProtocolUDP, Addr: ap("0.0.0.0:20001"),
			Backends: []netip.AddrPort{ap("10.180.0.3:53")}, AffinityTimeout: 3 * time.Hour},
		{Name: "ns3/empty (local)", Addr: ap("[::]:20002")},
	}}
	want := `LISTENER           PROTOCOL  ADDRESS        AFFINITY  UDP IDLE  BACKENDS
ns1/svc1:p80       tcp       0.0.0.0:20000  -         -         10.180.0.1:80 10.180.0.2:80
ns2/dns:dns        udp       0.0.0.0:20001  3h0m0s    250ms     10.180.0.3:53
ns3/empty (local)  tcp       [::]:20002     -         -         none
`
	if diff := cmp.Diff(want, p.String()); diff != "" {
		t.Errorf("Plan.String() mismatch (-want +got):\n%s", diff)
	}
	if got, want := (&Plan{}).String(), "LISTENER  PROTOCOL  ADDRESS  AFFINITY  UDP IDLE  BACKENDS\n"; got != want {
		t.Errorf("empty Plan.String() = %q, want %q", got, want)
	}
}

func TestPlanPorts(t *testing.T) {
	p := Plan{Listeners: []Listener{
		{Name: "ns1/svc1:p80", Addr: ap("0.0.0.0:20000")},
		{Name: "ns1/svc1:p80", Addr: ap("[::]:20000")},
		{Name: "ns1/svc1:dns", Protocol: ProtocolUDP, Addr: ap("0.0.0.0:20001")},
		{Name: "kernel-chosen", Addr: ap("127.0.0.1:0")},
	}}
	want := map[string]int{"tcp/ns1/svc1:p80": 20000, "udp/ns1/svc1:dns": 20001}
	if diff := cmp.Diff(want, p.Ports()); diff != "" {
		t.Errorf("Plan.Ports() mismatch (-want +got):\n%s", diff)
	}
	if l := p.Listener("ns1/svc1:p80", ProtocolTCP, true); l == nil || l.Addr != ap("[::]:20000") {
		t.Errorf("Plan.Listener(ns1/svc1:p80, TCP, ipv6) = %v, want the [::]:20000 one", l)
	}
	if l := p.Listener("ns1/svc1:p80", ProtocolUDP, false); l != nil {
		t.Errorf("Plan.Listener(ns1/svc1:p80, UDP, ipv4) = %v, want nil", l)
	}
}
