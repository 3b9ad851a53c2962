package nftables

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testPlan is a small plan in kube-proxy's shape: a ClusterIP service
// with two endpoints, one with affinity, a NodePort and a service without
// endpoints.
func testPlan(t testing.TB) *Plan {
	t.Helper()
	chain := func(name string, rules ...string) Chain {
		c, err := NewChain(name, rules...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := func(name string, typ ChainType, hook Hook, prio int, rules ...string) Chain {
		c := chain(name, rules...)
		c.Base = &BaseChain{Type: typ, Hook: hook, Priority: prio}
		return c
	}
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	svcKey := []DataType{TypeIPv4Addr, TypeInetProto, TypeInetService}
	reject := chain("reject-chain", "reject")
	reject.Comment = "helper"
	return &Plan{
		Table: Table{Comment: "rules for kube-proxy"},
		Sets: []Set{
			{Name: "cluster-ips", Key: []DataType{TypeIPv4Addr}, Comment: "Active ClusterIPs",
				Elements: []Element{{Addr: addr("172.30.0.1")}, {Addr: addr("172.30.0.2")}}},
			{Name: "service-ips", Key: svcKey, Value: TypeVerdict, Elements: []Element{
				{Addr: addr("172.30.0.1"), Proto: ProtocolTCP, Port: 80, Action: Goto("service-a")},
			}},
			{Name: "service-nodeports", Key: []DataType{TypeInetProto, TypeInetService}, Value: TypeVerdict, Elements: []Element{
				{Proto: ProtocolTCP, Port: 30080, Action: Goto("external-a")},
			}},
			{Name: "no-endpoint-services", Key: svcKey, Value: TypeVerdict, Elements: []Element{
				{Addr: addr("172.30.0.2"), Proto: ProtocolUDP, Port: 53, Action: Goto("reject-chain"), Comment: "ns/b:dns"},
			}},
			{Name: "affinity-a1", Key: []DataType{TypeIPv4Addr}, Flags: []SetFlag{SetFlagDynamic, SetFlagTimeout}, Timeout: 3 * time.Hour},
		},
		Chains: []Chain{
			base("filter-forward", ChainTypeFilter, HookForward, -110, "ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"),
			base("filter-output", ChainTypeFilter, HookOutput, -110, "ct state new jump service-endpoints-check"),
			base("filter-output-post-dnat", ChainTypeFilter, HookOutput, -90, "ct state new jump cluster-ips-check"),
			base("filter-input", ChainTypeFilter, HookInput, -110, "ct state new jump service-endpoints-check"),
			base("nat-prerouting", ChainTypeNAT, HookPrerouting, -100, "jump services"),
			base("nat-output", ChainTypeNAT, HookOutput, -100, "jump services"),
			base("nat-postrouting", ChainTypeNAT, HookPostrouting, 100, "jump masquerading"),
			chain("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"),
			chain("cluster-ips-check", "ip daddr @cluster-ips reject"),
			chain("services", "ip daddr . meta l4proto . th dport vmap @service-ips",
				"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"),
			chain("masquerading", "mark and 0x00004000 == 0 return", "mark set mark xor 0x00004000", "masquerade fully-random"),
			chain("mark-for-masquerade", "mark set mark or 0x00004000"),
			reject,
			chain("service-a", "ip daddr 172.30.0.1 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
				"ip saddr @affinity-a1 goto endpoint-a1",
				"numgen random mod 2 vmap { 0 : goto endpoint-a1 , 1 : goto endpoint-a2 }"),
			chain("external-a", "jump mark-for-masquerade", "goto service-a"),
			chain("endpoint-a1", "ip saddr 10.0.1.1 jump mark-for-masquerade", "update @affinity-a1 { ip saddr }", "meta l4proto tcp dnat to 10.0.1.1:8080"),
			chain("endpoint-a2", "ip saddr 10.0.2.2 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.0.2.2:8080"),
		},
	}
}

func TestChainFromText(t *testing.T) {
	tests := []struct {
		name, chain, text string
		wantRules         []string
		wantErr           error
	}{
		{"empty", "c", "", nil, nil},
		{"rules", "c", "drop\naccept\n", []string{"drop", "accept"}, nil},
		{"no final newline", "c", "drop", nil, ErrUnsafeText},
		{"carriage return", "c", "drop\r\n", nil, ErrUnsafeText},
		{"semicolon", "c", "drop ; delete table ip x\n", nil, ErrUnsafeText},
		{"hash", "c", "drop # x\n", nil, ErrUnsafeText},
		{"bad name", "-c", "drop\n", nil, ErrName},
		{"long name", strings.Repeat("c", MaxNameLen+1), "", nil, ErrName},
		{"longest name", strings.Repeat("c", MaxNameLen), "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ChainFromText(tt.chain, tt.text)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ChainFromText(%q, %q) error = %v, want %v", tt.chain, tt.text, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.wantRules, c.Rules()); diff != "" {
				t.Errorf("Rules() mismatch (-want +got):\n%s", diff)
			}
			if c.RuleCount() != len(tt.wantRules) {
				t.Errorf("RuleCount() = %d, want %d", c.RuleCount(), len(tt.wantRules))
			}
		})
	}
}

func TestNewChainRefusesBadRule(t *testing.T) {
	_, err := NewChain("c", "drop", "frobnicate")
	var e *Error
	if !errors.As(err, &e) || e.Rule != 2 || !errors.Is(err, ErrSyntax) {
		t.Errorf("NewChain() error = %v, want a syntax error naming rule 2", err)
	}
}

// TestNameCharacters checks every byte against nft's identifier rules.
func TestNameCharacters(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		first := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || b == '_' || b == '.'
		inside := first || '0' <= b && b <= '9' || b == '/' || b == '-'
		if got := checkName(string([]byte{'a', b})) == nil; got != inside {
			t.Errorf("checkName(%q) ok = %v, want %v", []byte{'a', b}, got, inside)
		}
		if got := checkName(string([]byte{b})) == nil; got != first {
			t.Errorf("checkName(%q) ok = %v, want %v", []byte{b}, got, first)
		}
	}
}

func TestPlanLookups(t *testing.T) {
	p := testPlan(t)
	if c := p.Chain("services"); c == nil || c.RuleCount() != 2 {
		t.Errorf("Chain(services) = %v, want the chain with 2 rules", c)
	}
	if p.Chain("nope") != nil || p.Set("nope") != nil {
		t.Error("lookups of missing objects found something")
	}
	if s := p.Set("service-ips"); s == nil || !s.IsMap() {
		t.Errorf("Set(service-ips) = %v, want the map", s)
	}
	if p.FamilyOrDefault() != IPv4 || p.TableName() != DefaultTableName {
		t.Errorf("defaults = %s %s, want ip kube-proxy", p.FamilyOrDefault(), p.TableName())
	}
	a, b := p.Chains[0], p.Chains[0]
	if !a.Equal(&b) {
		t.Error("a chain is not Equal to its copy")
	}
	b.Base = &BaseChain{Type: ChainTypeFilter, Hook: HookForward, Priority: 0}
	if a.Equal(&b) {
		t.Error("chains with different priorities are Equal")
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Op: "validate", Chain: "services", Rule: 2, Err: ErrMissingSet}
	if got, want := e.Error(), "nftables validate chain services rule 2: set does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Op: "render", Set: "service-ips", Element: 3, Err: ErrUnsafeText}
	if got, want := e.Error(), "nftables render set service-ips element 3: text cannot be written safely"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, ErrUnsafeText) {
		t.Error("errors.Is(e, ErrUnsafeText) = false")
	}
}
