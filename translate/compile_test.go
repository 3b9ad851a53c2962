package translate

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

var addrCmp = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestCompileRefusesInvalidState(t *testing.T) {
	bad := func(mod func(*proxy.State)) *proxy.State {
		st := baseState(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)))
		mod(st)
		return st
	}
	tests := []struct {
		name    string
		st      *proxy.State
		wantErr error
	}{
		{"port out of range", bad(func(st *proxy.State) { st.Services[0].Ports[0].Port = 70000 }), proxy.ErrOutOfRange},
		{"name with a quote", bad(func(st *proxy.State) { st.Services[0].Name = `svc"1` }), proxy.ErrInvalid},
		{"port name with a space", bad(func(st *proxy.State) { st.Services[0].Ports[0].Name = "p 80" }), proxy.ErrInvalid},
		{"duplicate service", bad(func(st *proxy.State) { st.Services = append(st.Services, st.Services[0]) }), proxy.ErrDuplicate},
		{"zero address", bad(func(st *proxy.State) { st.Services[0].Endpoints[0].Addr = netip.Addr{} }), proxy.ErrInvalid},
		{"nil state", nil, ErrNilState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.st, ModeIPTables)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Compile() error = %v, want %v", err, tt.wantErr)
			}
			if p != nil {
				t.Errorf("Compile() = %v, want no plan with the error", p)
			}
			if tt.st != nil {
				verr := tt.st.Validate()
				if inner := errors.Unwrap(err); inner == nil || inner.Error() != verr.Error() {
					t.Errorf("Compile() error = %v, want it to wrap Validate's %v", err, verr)
				}
			}
		})
	}
}

func TestCompileModes(t *testing.T) {
	st := baseState(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)))
	tests := []struct {
		mode    Mode
		wantErr error
	}{
		{ModeIPTables, nil},
		{ModeIPVS, nil},
		{ModeNFTables, nil},
		{ModeUserspace, nil},
		{"bogus", ErrUnsupportedMode},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			p, err := Compile(st, tt.mode)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Compile(%q) error = %v, want %v", tt.mode, err, tt.wantErr)
			}
			if err == nil && (p == nil || p.Mode != tt.mode) {
				t.Errorf("Compile(%q) = %+v, want a plan of mode %q", tt.mode, p, tt.mode)
			}
		})
	}
}

func TestCompileFamilies(t *testing.T) {
	v6 := clusterIP("ns1", "svc6", "fd00:172:30::41")
	tests := []struct {
		name string
		st   *proxy.State
		want []iptables.Family
	}{
		{"empty state", &proxy.State{}, []iptables.Family{iptables.IPv4}},
		{"ipv4 node", baseState(), []iptables.Family{iptables.IPv4}},
		{"ipv6 node", &proxy.State{Node: proxy.Node{IPs: addrs("fd00::2")}}, []iptables.Family{iptables.IPv6}},
		{"ipv6 service", &proxy.State{Services: []proxy.Service{v6}}, []iptables.Family{iptables.IPv6}},
		{"ipv4 node, ipv6 service", baseState(v6), []iptables.Family{iptables.IPv4, iptables.IPv6}},
		{"dual-stack", dualStackState(), []iptables.Family{iptables.IPv4, iptables.IPv6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.st, ModeIPTables)
			if err != nil {
				t.Fatal(err)
			}
			var got []iptables.Family
			for _, ip := range p.IPTables {
				got = append(got, ip.FamilyOrDefault())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Compile() families mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCompileDeterministic is invariant 1: the order of services and
// endpoints in the State does not change the plan text, nor does the
// number of goroutines compiling it.
func TestCompileDeterministic(t *testing.T) {
	cases := append(goldenCases(), goldenCase{name: "bench", st: benchState(300, 7)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := compileText(t, tc.st, tc.opts...)
			r := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			for i := range 5 {
				st := shuffled(tc.st, r)
				opts := append([]Option{WithParallelism(i + 1)}, tc.opts...)
				if diff := cmp.Diff(want, compileText(t, st, opts...)); diff != "" {
					t.Fatalf("shuffled state, parallelism %d: text mismatch (-want +got):\n%s", i+1, diff)
				}
			}
		})
	}
}

// shuffled returns a copy of st with its services and each service's
// endpoints in random order.
func shuffled(st *proxy.State, r *rand.Rand) *proxy.State {
	out := *st
	out.Services = make([]proxy.Service, len(st.Services))
	copy(out.Services, st.Services)
	r.Shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	for i := range out.Services {
		eps := make([]proxy.Endpoint, len(out.Services[i].Endpoints))
		copy(eps, out.Services[i].Endpoints)
		r.Shuffle(len(eps), func(a, b int) { eps[a], eps[b] = eps[b], eps[a] })
		out.Services[i].Endpoints = eps
	}
	return &out
}

// TestCompileDoesNotMutate checks that Compile leaves its input as it was,
// against an independently built copy.
func TestCompileDoesNotMutate(t *testing.T) {
	cases, fresh := goldenCases(), goldenCases()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Compile(tc.st, ModeIPTables, tc.opts...); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(fresh[i].st, tc.st, addrCmp...); diff != "" {
				t.Errorf("Compile changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

// TestCompileLargeClusterThreshold checks where per-endpoint comments
// stop: above the threshold, counted over one family's endpoints.
func TestCompileLargeClusterThreshold(t *testing.T) {
	st := baseState(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80), ep("10.180.0.2", "p80", 80)))
	tests := []struct {
		name         string
		opts         []Option
		wantComments bool
	}{
		{"default", nil, true},
		{"at threshold", []Option{WithLargeClusterThreshold(2)}, true},
		{"above threshold", []Option{WithLargeClusterThreshold(1)}, false},
		{"negative", []Option{WithLargeClusterThreshold(-1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(st, ModeIPTables, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			sep := p.IPTables[0].Chain(iptables.TableNAT, EndpointChainName("ns1/svc1:p80", "tcp", "10.180.0.1:80"))
			if sep == nil {
				t.Fatal("no KUBE-SEP- chain for 10.180.0.1:80")
			}
			got := false
			for _, r := range sep.Rules() {
				got = got || len(r) > 0 && contains(r, "-m comment")
			}
			if got != tt.wantComments {
				t.Errorf("KUBE-SEP- rules %q: comments = %v, want %v", sep.Rules(), got, tt.wantComments)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestCompilerRefusesUnsafeNames checks that the compiler itself, without
// Validate in front of it, refuses names that would change the meaning of
// restore input.
func TestCompilerRefusesUnsafeNames(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*proxy.Service)
	}{
		{"quote in name", func(s *proxy.Service) { s.Name = `svc"1` }},
		{"space in namespace", func(s *proxy.Service) { s.Namespace = "ns 1" }},
		{"newline in port name", func(s *proxy.Service) { s.Ports[0].Name = "p80\n-A X"; s.Endpoints[0].Ports[0].Name = s.Ports[0].Name }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80))
			tt.mod(&svc)
			o := defaultOptions()
			if _, err := compileIPTables(baseState(svc), &o); !errors.Is(err, iptables.ErrUnsafeArgument) {
				t.Errorf("compileIPTables() error = %v, want %v", err, iptables.ErrUnsafeArgument)
			}
		})
	}
}
