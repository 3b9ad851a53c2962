package nftables

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var exprCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParseRule(t *testing.T) {
	tests := []struct {
		name string
		text string
		want Rule
	}{
		{"ct jump", "ct state new jump firewall-check",
			Rule{Exprs: []Expr{CTState{State: "new"}, Jump("firewall-check")}}},
		{"masquerade rule", "ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
			Rule{Family: IPv4, Exprs: []Expr{
				AddrMatch{Field: FieldDAddr, Prefixes: []netip.Prefix{pfx("172.30.0.41/32")}},
				DPort{Proto: ProtocolTCP, Port: 80},
				AddrMatch{Field: FieldSAddr, Negate: true, Prefixes: []netip.Prefix{pfx("10.0.0.0/8")}},
				Jump("mark-for-masquerade"),
			}}},
		{"vmap", "ip6 daddr . meta l4proto . th dport vmap @service-ips",
			Rule{Family: IPv6, Exprs: []Expr{VMap{Key: []KeyField{KeyDAddr, KeyL4Proto, KeyDPort}, Map: "service-ips"}}}},
		{"nodeports", "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
			Rule{Family: IPv4, Exprs: []Expr{
				FibLocal{Field: FieldDAddr},
				AddrMatch{Field: FieldDAddr, Negate: true, Prefixes: []netip.Prefix{pfx("127.0.0.0/8")}},
				VMap{Key: []KeyField{KeyL4Proto, KeyDPort}, Map: "service-nodeports"},
			}}},
		{"set and comment", `ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`,
			Rule{Family: IPv4, Exprs: []Expr{AddrInSet{Field: FieldDAddr, Set: "cluster-ips"}, Reject{}},
				Comment: "Reject traffic to invalid ports of ClusterIPs"}},
		{"marks", "mark and 0x00004000 == 0 return",
			Rule{Exprs: []Expr{MarkMatch{Mask: 0x4000}, Action{Kind: ActionReturn}}}},
		{"mark set", "mark set mark xor 0x00004000", Rule{Exprs: []Expr{MarkSet{Op: MarkXor, Value: 0x4000}}}},
		{"numgen", "numgen random mod 2 vmap { 0 : goto endpoint-A/x , 1 : goto endpoint-B/y }",
			Rule{Exprs: []Expr{Numgen{Actions: []Action{Goto("endpoint-A/x"), Goto("endpoint-B/y")}}}}},
		{"affinity", "update @affinity-X { ip6 saddr }", Rule{Family: IPv6, Exprs: []Expr{SetUpdate{Set: "affinity-X", Field: FieldSAddr}}}},
		{"dnat", "meta l4proto sctp dnat to [fd00::1]:8080",
			Rule{Exprs: []Expr{L4Proto{Proto: ProtocolSCTP}, DNAT{To: netip.MustParseAddrPort("[fd00::1]:8080")}}}},
		{"firewall", "ip saddr != { 203.0.113.0/25 , 5.6.7.8 } drop",
			Rule{Family: IPv4, Exprs: []Expr{
				AddrMatch{Field: FieldSAddr, Negate: true, Braces: true, Prefixes: []netip.Prefix{pfx("203.0.113.0/25"), pfx("5.6.7.8/32")}},
				Drop(),
			}}},
		{"one in braces", "ip saddr != { 203.0.113.0/25 } drop",
			Rule{Family: IPv4, Exprs: []Expr{
				AddrMatch{Field: FieldSAddr, Negate: true, Braces: true, Prefixes: []netip.Prefix{pfx("203.0.113.0/25")}},
				Drop(),
			}}},
		{"masquerade", "masquerade fully-random", Rule{Exprs: []Expr{Masquerade{FullyRandom: true}}}},
		{"service CIDR drop", `ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"`,
			Rule{Family: IPv4, Exprs: []Expr{
				AddrMatch{Field: FieldDAddr, Braces: true, Prefixes: []netip.Prefix{pfx("172.30.0.0/16")}},
				Drop(),
			}, Comment: "Drop traffic to unallocated ClusterIPs"}},
		{"short-circuit", `fib saddr type local goto service-X/ns/svc/tcp/p comment "short-circuit local traffic"`,
			Rule{Exprs: []Expr{FibLocal{Field: FieldSAddr}, Goto("service-X/ns/svc/tcp/p")}, Comment: "short-circuit local traffic"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRule(tt.text)
			if err != nil {
				t.Fatalf("ParseRule(%q) error: %v", tt.text, err)
			}
			if diff := cmp.Diff(tt.want, got, exprCmp); diff != "" {
				t.Errorf("ParseRule(%q) mismatch (-want +got):\n%s", tt.text, diff)
			}
			if s := got.String(); s != tt.text {
				t.Errorf("ParseRule(%q).String() = %q, want the input back", tt.text, s)
			}
		})
	}
}

func TestParseRuleListSpelling(t *testing.T) {
	// "nft list" attaches commas to set elements.
	r, err := ParseRule("ip saddr != { 10.0.0.0/8, 203.0.113.0/25 } drop")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "ip saddr != { 10.0.0.0/8 , 203.0.113.0/25 } drop"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParseRuleErrors(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantErr error
	}{
		{"empty", "", ErrSyntax},
		{"unknown word", "counter accept", ErrSyntax},
		{"bad address", "ip saddr 10.0.0.300 drop", ErrSyntax},
		{"host bits", "ip saddr 10.0.0.1/8 drop", ErrSyntax},
		{"both families", "ip saddr 10.0.0.1 ip6 daddr ::1 drop", ErrWrongFamily},
		{"unbalanced quote", `drop comment "x`, ErrSyntax},
		{"quote not comment", `jump "x"`, ErrSyntax},
		{"text after comment", `drop comment "x" accept`, ErrSyntax},
		{"numgen out of order", "numgen random mod 2 vmap { 1 : goto a , 0 : goto b }", ErrSyntax},
		{"numgen count", "numgen random mod 3 vmap { 0 : goto a , 1 : goto b }", ErrSyntax},
		{"bad chain name", "jump 1abc", ErrName},
		{"bad set name", "ip daddr @-x drop", ErrName},
		{"port zero", "tcp dport 0 drop", ErrSyntax},
		{"protocol", "meta l4proto icmp drop", ErrSyntax},
		{"mark op", "mark set mark and 0x1", ErrSyntax},
		{"backslash", `drop comment "a\b"`, ErrUnsafeText},
		{"semicolon", `drop comment "a;b"`, ErrUnsafeText},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRule(tt.text)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseRule(%q) error = %v, want %v", tt.text, err, tt.wantErr)
			}
		})
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"ct state new jump firewall-check",
		"ip daddr . meta l4proto . th dport vmap @service-ips",
		"numgen random mod 2 vmap { 0 : goto a , 1 : goto b }",
		`ip saddr != { 203.0.113.0/25 , 5.6.7.8 } drop comment "x"`,
		"meta l4proto tcp dnat to [fd00::1]:80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseRule(text)
		if err != nil {
			return
		}
		// What parses renders to text that parses to the same rule.
		again, err := ParseRule(r.String())
		if err != nil {
			t.Fatalf("ParseRule(%q) = %q, which does not parse: %v", text, r.String(), err)
		}
		if diff := cmp.Diff(r, again, exprCmp); diff != "" {
			t.Fatalf("round trip of %q changed the rule (-first +second):\n%s", text, diff)
		}
	})
}
