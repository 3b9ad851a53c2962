package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ftPlan returns a small plan with nat chains for one service and a
// filter chain, and the jumps into them; moved moves the endpoint.
func ftPlan(t *testing.T, moved bool) *Plan {
	t.Helper()
	sep, ep := "KUBE-SEP-ONE", "10.244.1.2:80"
	if moved {
		sep, ep = "KUBE-SEP-TWO", "10.244.1.3:80"
	}
	chain := func(name string, rules ...[]string) Chain {
		c, err := NewChain(name, rules...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &Plan{
		Tables: []TableChains{
			{Table: TableNAT, Chains: []Chain{
				chain("KUBE-SERVICES", []string{"-d", "10.96.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "KUBE-SVC-WEB"}),
				chain("KUBE-SVC-WEB", []string{"-m", "comment", "--comment", "ns/web:http -> " + ep, "-j", sep}),
				chain(sep, []string{"-p", "tcp", "-m", "tcp", "-j", "DNAT", "--to-destination", ep}),
			}},
			{Table: TableFilter, Chains: []Chain{
				chain("KUBE-FORWARD", []string{"-m", "mark", "--mark", "0x4000/0x4000", "-j", "ACCEPT"}),
			}},
		},
		Jumps: []Jump{
			{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableFilter, Chain: "FORWARD", Target: "KUBE-FORWARD"},
		},
	}
}

const ftDump = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SEP-ONE - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-WEB - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SEP-ONE -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-WEB
-A KUBE-SVC-WEB -m comment --comment "ns/web:http -> 10.244.1.2:80" -j KUBE-SEP-ONE
COMMIT
`

func TestFakeApply(t *testing.T) {
	ctx := context.Background()
	var inputs []string
	f := NewFake(IPv4, WithRestoreObserver(func(_ Table, in []byte) { inputs = append(inputs, string(in)) }))
	if err := f.Apply(ctx, ftPlan(t, false)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if diff := cmp.Diff(ftDump, f.Dump()); diff != "" {
		t.Errorf("Dump after Apply (-want +got):\n%s", diff)
	}
	if got := f.Restores(); got != 2 {
		t.Errorf("Restores() = %d, want 2 (nat and filter)", got)
	}
	if err := f.Apply(ctx, ftPlan(t, false)); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	if got := f.Restores(); got != 2 {
		t.Errorf("Restores() after the same plan = %d, want still 2", got)
	}
	inputs = nil
	if err := f.Apply(ctx, ftPlan(t, true)); err != nil {
		t.Fatalf("Apply(moved): %v", err)
	}
	want := []string{"*nat\n:KUBE-SVC-WEB - [0:0]\n:KUBE-SEP-TWO - [0:0]\n:KUBE-SEP-ONE - [0:0]\n" +
		"-A KUBE-SVC-WEB -m comment --comment \"ns/web:http -> 10.244.1.3:80\" -j KUBE-SEP-TWO\n" +
		"-A KUBE-SEP-TWO -p tcp -m tcp -j DNAT --to-destination 10.244.1.3:80\n-X KUBE-SEP-ONE\nCOMMIT\n"}
	if diff := cmp.Diff(rtLinesAll(want), rtLinesAll(inputs)); diff != "" {
		t.Errorf("restore input for a moved endpoint (-want +got):\n%s", diff)
	}
	if s := f.Stats(); s.Applies != 3 || s.Restores != 3 {
		t.Errorf("Stats() = %+v, want 3 applies and 3 restores", s)
	}
}

func rtLinesAll(inputs []string) [][]string {
	var out [][]string
	for _, in := range inputs {
		out = append(out, rtLines([]byte(in)))
	}
	return out
}

func TestFakeDriftAndForeign(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv4)
	f.AddForeign(TableNAT, "DOCKER", "-i docker0 -j RETURN")
	f.AddForeign(TableNAT, "PREROUTING", "-m addrtype --dst-type LOCAL -j DOCKER")
	f.AddForeign(TableFilter, "INPUT", "-s 192.0.2.1/32 -j DROP")
	f.AddForeign(TableNAT, "KUBE-SVC-LEFTOVER", "-j DOCKER")
	p := ftPlan(t, false)
	if err := f.Apply(ctx, p); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	dump := f.Dump()
	for _, want := range []string{
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n",
		"-A DOCKER -i docker0 -j RETURN\n", "-A INPUT -s 192.0.2.1/32 -j DROP\n"} {
		if !strings.Contains(dump, want) {
			t.Errorf("Dump lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "LEFTOVER") {
		t.Errorf("Apply kept the leftover owned chain:\n%s", dump)
	}
	clean := f.Dump()

	f.FlushChain(TableNAT, "KUBE-SVC-WEB")
	f.DeleteRule(TableFilter, "FORWARD", 1)
	f.AddForeign(TableNAT, "PREROUTING", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
	if err := f.Apply(ctx, p); err != nil {
		t.Fatalf("Apply after drift: %v", err)
	}
	if diff := cmp.Diff(clean, f.Dump()); diff != "" {
		t.Errorf("Dump after repair (-want +got):\n%s", diff)
	}

	if err := f.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n" +
		"*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n" +
		"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n-A DOCKER -i docker0 -j RETURN\nCOMMIT\n"
	if diff := cmp.Diff(want, f.Dump()); diff != "" {
		t.Errorf("Dump after Cleanup (-want +got):\n%s", diff)
	}
}

func TestFakeRefuses(t *testing.T) {
	withChain := func(table Table, name string, rule ...string) func(*Plan) {
		return func(p *Plan) {
			c, err := NewChain(name, rule)
			if err != nil {
				t.Fatal(err)
			}
			for i := range p.Tables {
				if p.Tables[i].Table == table {
					p.Tables[i].Chains = append(p.Tables[i].Chains, c)
				}
			}
		}
	}
	tests := []struct {
		name     string
		edit     func(*Plan)
		family   Family
		wantErr  error
		wantLine bool
	}{
		{name: "jump to a missing chain", edit: withChain(TableNAT, "KUBE-X", "-j", "KUBE-MISSING"), wantErr: ErrMissingChain},
		{name: "DNAT outside nat", edit: withChain(TableFilter, "KUBE-X", "-j", "DNAT", "--to-destination", "10.0.0.1:80"), wantErr: ErrInvalidTarget},
		{name: "address of the other family", edit: withChain(TableNAT, "KUBE-X", "-s", "fd00::1", "-j", "ACCEPT"), wantErr: ErrWrongFamily},
		{name: "not owned", edit: withChain(TableNAT, "DOCKER-X", "-j", "ACCEPT"), wantErr: ErrChainName},
		{name: "plan of another family", family: IPv6, wantErr: ErrFamily},
		{name: "unknown match", edit: withChain(TableNAT, "KUBE-X", "-m", "nosuchmatch", "-j", "ACCEPT"), wantErr: ErrUnknownMatch, wantLine: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			family := tt.family
			if family == "" {
				family = IPv4
			}
			f := NewFake(family)
			if family == IPv4 {
				if err := f.Apply(ctx, ftPlan(t, false)); err != nil {
					t.Fatal(err)
				}
			}
			before := f.Dump()
			p := ftPlan(t, true)
			if tt.edit != nil {
				tt.edit(p)
			}
			err := f.Apply(ctx, p)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			}
			var re *RestoreError
			if got := errors.As(err, &re); got != tt.wantLine {
				t.Errorf("Apply = %v: RestoreError %v, want %v", err, got, tt.wantLine)
			} else if got && (re.Line == 0 || !strings.Contains(re.LineText, "nosuchmatch")) {
				t.Errorf("RestoreError = %+v, want the line of the bad rule", re)
			}
			if diff := cmp.Diff(before, f.Dump()); diff != "" {
				t.Errorf("a refused Apply changed the Fake (-before +after):\n%s", diff)
			}
		})
	}
}

func TestFakeInterpreter(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string // error text part; empty for success
	}{
		{name: "delete a referenced chain", input: "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-X KUBE-B\nCOMMIT\n", want: "still jumped to"},
		{name: "delete a missing rule", input: "*nat\n-D PREROUTING -j KUBE-A\nCOMMIT\n", want: "no such rule"},
		{name: "insert past the end", input: "*nat\n:KUBE-A - [0:0]\n-I PREROUTING 2 -j KUBE-A\nCOMMIT\n", want: "rule position"},
		{name: "rule in a missing chain", input: "*nat\n-A KUBE-NONE -j ACCEPT\nCOMMIT\n", want: "does not exist"},
		{name: "wrong table", input: "*filter\nCOMMIT\n", want: "table"},
		{name: "fine", input: "*nat\n-S\n:KUBE-A - [0:0]\n-I PREROUTING 1 -j KUBE-A\n-A KUBE-A -j RETURN\nCOMMIT\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(IPv4)
			err := f.restore(TableNAT, []byte(tt.input))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("restore = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
