package nftables

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidateAcceptsTestPlan(t *testing.T) {
	if err := testPlan(t).Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	if err := (&Plan{}).Validate(); err != nil {
		t.Errorf("empty plan: Validate() = %v, want nil", err)
	}
}

// setRule replaces the rules of chain name in p.
func setRule(t *testing.T, p *Plan, name string, rules ...string) {
	t.Helper()
	c := p.Chain(name)
	if c == nil {
		t.Fatalf("no chain %s", name)
	}
	body := ""
	for _, r := range rules {
		body += r + "\n"
	}
	nc, err := ChainFromText(name, body)
	if err != nil {
		t.Fatal(err)
	}
	c.body = nc.body
}

func TestValidate(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::1")
	tests := []struct {
		name    string
		mod     func(*testing.T, *Plan)
		wantErr error
		wantMsg string
	}{
		{"family", func(_ *testing.T, p *Plan) { p.Table.Family = "inet" }, ErrSyntax, "family"},
		{"duplicate chain", func(_ *testing.T, p *Plan) { p.Chains = append(p.Chains, p.Chains[len(p.Chains)-1]) }, ErrDuplicate, "chain endpoint-a2"},
		{"duplicate set", func(_ *testing.T, p *Plan) { p.Sets = append(p.Sets, p.Sets[0]) }, ErrDuplicate, "set cluster-ips"},
		{"bad hook", func(_ *testing.T, p *Plan) { p.Chains[0].Base.Hook = "ingress" }, ErrSyntax, "hook"},
		{"nat forward", func(_ *testing.T, p *Plan) { p.Chains[4].Base.Hook = HookForward }, ErrHook, "nat chain on the forward hook"},
		{"bad rule", func(t *testing.T, p *Plan) { setRule(t, p, "external-a", "frobnicate") }, ErrSyntax, "chain external-a rule 1"},
		{"missing jump target", func(t *testing.T, p *Plan) { setRule(t, p, "external-a", "goto nowhere") }, ErrMissingChain, "goto nowhere"},
		{"jump to base chain", func(t *testing.T, p *Plan) { setRule(t, p, "external-a", "jump nat-output") }, ErrMissingChain, "jump nat-output"},
		{"missing set", func(t *testing.T, p *Plan) { setRule(t, p, "cluster-ips-check", "ip daddr @nope reject") }, ErrMissingSet, "@nope"},
		{"set used as map", func(t *testing.T, p *Plan) {
			setRule(t, p, "services", "ip daddr . meta l4proto . th dport vmap @cluster-ips")
		}, ErrMissingSet, "@cluster-ips"},
		{"map key mismatch", func(t *testing.T, p *Plan) { setRule(t, p, "services", "meta l4proto . th dport vmap @service-ips") }, ErrMissingSet, "@service-ips"},
		{"update of a static set", func(t *testing.T, p *Plan) { setRule(t, p, "endpoint-a2", "update @cluster-ips { ip saddr }") }, ErrMissingSet, "not dynamic"},
		{"ip6 rule", func(t *testing.T, p *Plan) { setRule(t, p, "endpoint-a2", "ip6 saddr fd00::1 drop") }, ErrWrongFamily, "ip6 rule"},
		{"dnat to ipv6", func(t *testing.T, p *Plan) { setRule(t, p, "endpoint-a2", "dnat to [fd00::1]:80") }, ErrWrongFamily, "dnat to"},
		{"dnat from filter", func(t *testing.T, p *Plan) {
			setRule(t, p, "service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services", "jump endpoint-a2")
		}, ErrHook, "dnat to 10.0.2.2:8080 reached from a filter chain"},
		{"masquerade from prerouting", func(t *testing.T, p *Plan) { setRule(t, p, "nat-prerouting", "jump services", "jump masquerading") }, ErrHook, "masquerade fully-random reached from a nat chain on the prerouting hook"},
		{"reject in nat", func(t *testing.T, p *Plan) { setRule(t, p, "external-a", "goto reject-chain") }, ErrHook, "reject reached from a nat chain"},
		{"loop", func(t *testing.T, p *Plan) {
			setRule(t, p, "external-a", "jump service-a")
			setRule(t, p, "service-a", "jump external-a")
		}, ErrLoop, "cycle"},
		{"element missing part", func(_ *testing.T, p *Plan) { p.Sets[1].Elements[0].Port = 0 }, ErrSyntax, "set service-ips element 1"},
		{"element of other family", func(_ *testing.T, p *Plan) { p.Sets[0].Elements[0].Addr = v6 }, ErrWrongFamily, "fd00::1"},
		{"element without verdict", func(_ *testing.T, p *Plan) { p.Sets[1].Elements[0].Action = Action{} }, ErrSyntax, "verdict"},
		{"verdict in a set", func(_ *testing.T, p *Plan) { p.Sets[0].Elements[0].Action = Drop() }, ErrSyntax, "verdict"},
		{"verdict to missing chain", func(_ *testing.T, p *Plan) { p.Sets[1].Elements[0].Action = Goto("nope") }, ErrMissingChain, "goto nope"},
		{"duplicate element", func(_ *testing.T, p *Plan) { p.Sets[0].Elements[1] = p.Sets[0].Elements[0] }, ErrDuplicate, "element 2: key of element 1"},
		{"key order", func(_ *testing.T, p *Plan) { p.Sets[2].Key = []DataType{TypeInetService, TypeInetProto} }, ErrSyntax, "in that order"},
		{"key family", func(_ *testing.T, p *Plan) { p.Sets[0].Key = []DataType{TypeIPv6Addr} }, ErrWrongFamily, "ipv6_addr"},
		{"timeout without flag", func(_ *testing.T, p *Plan) { p.Sets[4].Flags = []SetFlag{SetFlagDynamic} }, ErrSyntax, "timeout"},
		{"fractional timeout", func(_ *testing.T, p *Plan) { p.Sets[4].Timeout = 1500 * time.Millisecond }, ErrSyntax, "timeout"},
		{"unknown flag", func(_ *testing.T, p *Plan) { p.Sets[4].Flags = append(p.Sets[4].Flags, "constant") }, ErrSyntax, "flag"},
		{"bad comment", func(_ *testing.T, p *Plan) { p.Chains[0].Comment = `"` }, ErrUnsafeText, "chain filter-forward"},
		{"long rule comment", func(t *testing.T, p *Plan) {
			setRule(t, p, "external-a", `drop comment "`+strings.Repeat("x", MaxCommentLen+1)+`"`)
		}, ErrUnsafeText, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPlan(t)
			tt.mod(t, p)
			err := p.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Validate() error = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestValidateReportsEverything(t *testing.T) {
	p := testPlan(t)
	p.Sets[0].Elements[0].Addr = netip.MustParseAddr("fd00::1")
	setRule(t, p, "external-a", "goto nowhere")
	p.Chains[0].Base.Hook = "ingress"
	err := p.Validate()
	for _, want := range []error{ErrWrongFamily, ErrMissingChain, ErrSyntax} {
		if !errors.Is(err, want) {
			t.Errorf("Validate() error = %v, want it to include %v", err, want)
		}
	}
}
