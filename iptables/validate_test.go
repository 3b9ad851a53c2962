package iptables

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	if err := kubePlan(t).Validate(); err != nil {
		t.Errorf("kubePlan().Validate() = %v", err)
	}
	if err := ipv6Plan(t).Validate(); err != nil {
		t.Errorf("ipv6Plan().Validate() = %v", err)
	}
	if err := (&Plan{}).Validate(); err != nil {
		t.Errorf("zero Plan.Validate() = %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	nat := func(chains ...Chain) []TableChains { return []TableChains{{Table: TableNAT, Chains: chains}} }
	tests := []struct {
		name    string
		plan    *Plan
		wantErr error
		// want is text the joined error must contain.
		want string
	}{
		{
			name:    "jump to a missing chain",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-j ACCEPT", "-j B"))},
			wantErr: ErrMissingChain, want: "validate nat/A rule 2",
		},
		{
			name: "jump to a chain of another table",
			plan: &Plan{Tables: []TableChains{{Table: TableNAT, Chains: []Chain{mustChain(t, "A", "-j B")}},
				{Table: TableFilter, Chains: []Chain{mustChain(t, "B")}}}},
			wantErr: ErrMissingChain, want: "nat/A rule 1",
		},
		{
			name:    "duplicate chain",
			plan:    &Plan{Tables: nat(mustChain(t, "A"), mustChain(t, "A"))},
			wantErr: ErrDuplicateChain, want: "nat/A",
		},
		{
			name:    "table twice",
			plan:    &Plan{Tables: append(nat(), nat()...)},
			wantErr: ErrDuplicateTable, want: "table nat",
		},
		{
			name:    "unknown table",
			plan:    &Plan{Tables: []TableChains{{Table: "broute"}}},
			wantErr: ErrSyntax, want: "table broute",
		},
		{
			name:    "long chain name",
			plan:    &Plan{Tables: nat(Chain{Name: strings.Repeat("K", 29)})},
			wantErr: ErrChainName,
		},
		{
			name:    "chain named like a target",
			plan:    &Plan{Tables: nat(Chain{Name: "MASQUERADE"})},
			wantErr: ErrChainName,
		},
		{
			name:    "DNAT in filter",
			plan:    &Plan{Tables: []TableChains{{Table: TableFilter, Chains: []Chain{mustChain(t, "A", "-j DNAT --to-destination 10.0.0.1:80")}}}},
			wantErr: ErrInvalidTarget, want: "filter/A rule 1",
		},
		{
			name:    "REJECT in nat",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-p tcp -j REJECT"))},
			wantErr: ErrInvalidTarget,
		},
		{
			name:    "goto a target",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-g RETURN"))},
			wantErr: ErrInvalidTarget,
		},
		{
			name:    "loop",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-j B"), mustChain(t, "B", "-j C"), mustChain(t, "C", "-g A"))},
			wantErr: ErrLoop, want: "[A B C A]",
		},
		{
			name:    "unbalanced quote",
			plan:    &Plan{Tables: nat(mustChain(t, "A", `-m comment --comment "x -j ACCEPT`))},
			wantErr: ErrUnbalancedQuote,
		},
		{
			name:    "IPv6 address in an IPv4 plan",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-d fd00::1 -j DNAT --to-destination [fd00::2]:80"))},
			wantErr: ErrWrongFamily, want: "-d fd00::1 in an ipv4 plan",
		},
		{
			name:    "IPv4 DNAT in an IPv6 plan",
			plan:    &Plan{Family: IPv6, Tables: nat(mustChain(t, "A", "-j DNAT --to-destination 10.0.0.1:80"))},
			wantErr: ErrWrongFamily,
		},
		{
			name:    "hostname",
			plan:    &Plan{Tables: nat(mustChain(t, "A", "-s example.com -j ACCEPT"))},
			wantErr: ErrSyntax,
		},
		{
			name:    "jump from an owned chain",
			plan:    &Plan{Tables: nat(mustChain(t, "A")), Jumps: []Jump{{Table: TableNAT, Chain: "FORWARD", Target: "A"}}},
			wantErr: ErrInvalidTarget, want: "nat/FORWARD rule 1",
		},
		{
			name:    "jump to a chain not owned",
			plan:    &Plan{Tables: nat(mustChain(t, "A")), Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Target: "A"}, {Table: TableNAT, Chain: "OUTPUT", Target: "B"}}},
			wantErr: ErrMissingChain, want: "nat/OUTPUT rule 2",
		},
		{
			name:    "jump with an unsafe comment",
			plan:    &Plan{Tables: nat(mustChain(t, "A")), Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Comment: "a\nb", Target: "A"}}},
			wantErr: ErrUnsafeArgument,
		},
		{
			name:    "jump with a wrong family match",
			plan:    &Plan{Tables: nat(mustChain(t, "A")), Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Match: []string{"-d", "fd00::1"}, Target: "A"}}},
			wantErr: ErrWrongFamily,
		},
		{
			name:    "bad family",
			plan:    &Plan{Family: "ipx"},
			wantErr: ErrSyntax,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.plan.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "validate" {
				t.Errorf("Validate() = %#v, want an *Error", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p := &Plan{Tables: []TableChains{{Table: TableNAT, Chains: []Chain{
		mustChain(t, "A", "-j B", "-j C"),
		mustChain(t, "A"),
	}}}}
	err := p.Validate()
	var n int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		n++
		_ = e
	}
	if n != 3 {
		t.Errorf("Validate() found %d problems, want 3: %v", n, err)
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("-j ACCEPT", "KUBE-A", "-d 10.0.0.1 -j DNAT --to-destination 10.0.0.2:80")
	f.Add(`-m comment --comment "x" -j KUBE-A`, "KUBE-B", "-g KUBE-B")
	f.Fuzz(func(t *testing.T, r1, name, r2 string) {
		b := NewChainBuilder(name)
		b.RuleText(r1)
		b.RuleText(r2)
		c, err := b.Chain()
		if err != nil {
			return
		}
		p := &Plan{Tables: []TableChains{{Table: TableNAT, Chains: []Chain{c}}},
			Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Target: name}}}
		_ = p.Validate()
	})
}
