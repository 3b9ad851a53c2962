package iptables

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rtPlan returns a small nat plan; edit changes it before it is returned.
func rtPlan(t *testing.T, edit func(nat map[string][][]string, jumps *[]Jump)) *Plan {
	t.Helper()
	nat := map[string][][]string{
		"KUBE-SERVICES":  {{"-d", "10.96.0.1/32", "-j", "KUBE-SVC-A"}},
		"KUBE-SVC-A":     {{"-j", "KUBE-SEP-A1"}},
		"KUBE-SEP-A1":    {{"-p", "tcp", "-j", "DNAT", "--to-destination", "10.1.0.1:80"}},
		"KUBE-MARK-MASQ": {{"-j", "MARK", "--or-mark", "0x4000"}},
	}
	jumps := []Jump{
		{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
		{Table: TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
	}
	if edit != nil {
		edit(nat, &jumps)
	}
	order := []string{"KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-SVC-A", "KUBE-SEP-A1", "KUBE-SVC-B", "KUBE-SEP-B1"}
	var chains []Chain
	for _, name := range order {
		if rules, ok := nat[name]; ok {
			c, err := NewChain(name, rules...)
			if err != nil {
				t.Fatal(err)
			}
			chains = append(chains, c)
		}
	}
	return &Plan{Tables: []TableChains{{Table: TableNAT, Chains: chains}}, Jumps: jumps}
}

// rtLines returns input's lines with the chain declarations sorted, since
// their order is scrambled on purpose.
func rtLines(input []byte) []string {
	if input == nil {
		return nil
	}
	lines := strings.Split(strings.TrimSuffix(string(input), "\n"), "\n")
	first := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, ":") })
	if first < 0 {
		return lines
	}
	last := first
	for last < len(lines) && strings.HasPrefix(lines[last], ":") {
		last++
	}
	slices.Sort(lines[first:last])
	return lines
}

const (
	rtPortals   = `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`
	rtSEPRule   = "-A KUBE-SEP-A1 -p tcp -j DNAT --to-destination 10.1.0.1:80"
	rtSvcRule   = "-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-A"
	rtMasqRule  = "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"
	rtSvcARule  = "-A KUBE-SVC-A -j KUBE-SEP-A1"
	rtCanaryDcl = ":KUBE-PROXY-CANARY - [0:0]"
)

func TestFullRestore(t *testing.T) {
	tests := []struct {
		name string
		opts RestoreOptions
		want []string
	}{
		{
			name: "fresh table",
			opts: RestoreOptions{Canary: "KUBE-PROXY-CANARY"},
			want: []string{"*nat",
				":KUBE-MARK-MASQ - [0:0]", rtCanaryDcl, ":KUBE-SEP-A1 - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]",
				rtSvcRule, rtMasqRule, rtSvcARule, rtSEPRule,
				"-I PREROUTING 1 " + rtPortals, "-I OUTPUT 1 " + rtPortals, "COMMIT"},
		},
		{
			name: "stale chains, jumps in place, list first",
			opts: RestoreOptions{Delete: []string{"KUBE-SVC-OLD", "KUBE-SVC-A"}, ListFirst: true,
				Builtin: map[string][]string{"PREROUTING": {rtPortals, "-j DOCKER"}, "OUTPUT": {rtPortals}}},
			want: []string{"*nat", "-S",
				":KUBE-MARK-MASQ - [0:0]", ":KUBE-SEP-A1 - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]", ":KUBE-SVC-OLD - [0:0]",
				rtSvcRule, rtMasqRule, rtSvcARule, rtSEPRule, "-X KUBE-SVC-OLD", "COMMIT"},
		},
		{
			name: "jumps below a foreign rule, stale and duplicate jumps",
			opts: RestoreOptions{Builtin: map[string][]string{
				"PREROUTING":  {"-j DOCKER", rtPortals},
				"OUTPUT":      {rtPortals, rtPortals},
				"POSTROUTING": {"-j KUBE-POSTROUTING", "-j MASQUERADE"},
			}},
			want: []string{"*nat",
				":KUBE-MARK-MASQ - [0:0]", ":KUBE-SEP-A1 - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]",
				"-D PREROUTING " + rtPortals, "-D OUTPUT " + rtPortals, "-D OUTPUT " + rtPortals, "-D POSTROUTING -j KUBE-POSTROUTING",
				rtSvcRule, rtMasqRule, rtSvcARule, rtSEPRule,
				"-I PREROUTING 1 " + rtPortals, "-A OUTPUT " + rtPortals, "COMMIT"},
		},
		{
			name: "jumps in another spelling",
			opts: RestoreOptions{Builtin: map[string][]string{
				"PREROUTING": {`-m comment --comment "kubernetes service portals" --jump KUBE-SERVICES`},
				"OUTPUT":     {rtPortals},
			}},
			want: []string{"*nat",
				":KUBE-MARK-MASQ - [0:0]", ":KUBE-SEP-A1 - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]",
				rtSvcRule, rtMasqRule, rtSvcARule, rtSEPRule, "COMMIT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FullRestore(rtPlan(t, nil), TableNAT, tt.opts)
			if err != nil {
				t.Fatalf("FullRestore: %v", err)
			}
			if diff := cmp.Diff(tt.want, rtLines(got)); diff != "" {
				t.Errorf("FullRestore (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPartialRestore(t *testing.T) {
	endpointMoved := func(nat map[string][][]string, _ *[]Jump) {
		nat["KUBE-SVC-A"] = [][]string{{"-j", "KUBE-SEP-A2"}}
		delete(nat, "KUBE-SEP-A1")
		nat["KUBE-SEP-A2"] = [][]string{{"-p", "tcp", "-j", "DNAT", "--to-destination", "10.1.0.2:80"}}
	}
	tests := []struct {
		name       string
		prev, next func(map[string][][]string, *[]Jump)
		opts       RestoreOptions
		want       []string
	}{
		{name: "same plan", want: nil},
		{
			name: "endpoint moved",
			next: endpointMoved,
			want: []string{"*nat", ":KUBE-SEP-A1 - [0:0]", ":KUBE-SVC-A - [0:0]", "-A KUBE-SVC-A -j KUBE-SEP-A2", "-X KUBE-SEP-A1", "COMMIT"},
		},
		{
			name: "service added",
			next: func(nat map[string][][]string, _ *[]Jump) {
				nat["KUBE-SERVICES"] = append(nat["KUBE-SERVICES"], []string{"-d", "10.96.0.2/32", "-j", "KUBE-SVC-B"})
				nat["KUBE-SVC-B"] = [][]string{{"-j", "KUBE-SEP-B1"}}
				nat["KUBE-SEP-B1"] = [][]string{{"-j", "DNAT", "-p", "udp", "--to-destination", "10.1.0.9:53"}}
			},
			want: []string{"*nat", ":KUBE-SEP-B1 - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-B - [0:0]",
				rtSvcRule, "-A KUBE-SERVICES -d 10.96.0.2/32 -j KUBE-SVC-B", "-A KUBE-SVC-B -j KUBE-SEP-B1",
				"-A KUBE-SEP-B1 -j DNAT -p udp --to-destination 10.1.0.9:53", "COMMIT"},
		},
		{
			name: "jump dropped and another added",
			next: func(_ map[string][][]string, jumps *[]Jump) {
				*jumps = []Jump{(*jumps)[0], {Table: TableNAT, Chain: "PREROUTING", Match: []string{"-p", "tcp"}, Target: "KUBE-MARK-MASQ"}}
			},
			want: []string{"*nat", "-D PREROUTING " + rtPortals, "-D OUTPUT " + rtPortals,
				"-I PREROUTING 1 " + rtPortals, "-I PREROUTING 2 -p tcp -j KUBE-MARK-MASQ", "COMMIT"},
		},
		{
			name: "drift repaired",
			opts: RestoreOptions{Rewrite: []string{"KUBE-SVC-A", "KUBE-NOT-IN-PLAN"}, Delete: []string{"KUBE-SVC-STALE", "KUBE-SEP-A1"},
				Builtin: map[string][]string{"OUTPUT": {rtPortals}}},
			want: []string{"*nat", ":KUBE-SVC-A - [0:0]", ":KUBE-SVC-STALE - [0:0]", rtSvcARule,
				"-A PREROUTING " + rtPortals, "-X KUBE-SVC-STALE", "COMMIT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PartialRestore(rtPlan(t, tt.prev), rtPlan(t, tt.next), TableNAT, tt.opts)
			if err != nil {
				t.Fatalf("PartialRestore: %v", err)
			}
			if diff := cmp.Diff(tt.want, rtLines(got)); diff != "" {
				t.Errorf("PartialRestore (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPartialRestoreFromNothing(t *testing.T) {
	p := rtPlan(t, nil)
	got, err := PartialRestore(nil, p, TableNAT, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	full, err := FullRestore(p, TableNAT, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rtLines(full), rtLines(got)); diff != "" {
		t.Errorf("PartialRestore(nil, p) differs from FullRestore(p) (-full +partial):\n%s", diff)
	}
	if got, err := PartialRestore(p, p, TableFilter, RestoreOptions{}); err != nil || got != nil {
		t.Errorf("PartialRestore for an unused table = %q, %v; want nil, nil", got, err)
	}
}

// TestDeclarationOrder checks that chains are not declared in name order,
// which would make iptables-nft-save quadratic.
func TestDeclarationOrder(t *testing.T) {
	var chains []Chain
	for i := range 200 {
		chains = append(chains, Chain{Name: fmt.Sprintf("KUBE-SEP-%04d", i)})
	}
	p := &Plan{Tables: []TableChains{{Table: TableNAT, Chains: chains}}}
	text, err := FullRestore(p, TableNAT, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var decls []string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(l, ":") {
			decls = append(decls, l)
		}
	}
	if len(decls) != 200 {
		t.Fatalf("declared %d chains, want 200", len(decls))
	}
	ascending := 0
	for i := 1; i < len(decls); i++ {
		if decls[i] > decls[i-1] {
			ascending++
		}
	}
	if ascending < 60 || ascending > 140 {
		t.Errorf("%d of 199 neighbouring declarations ascend, want about half (scrambled order)", ascending)
	}
	again, _ := FullRestore(p, TableNAT, RestoreOptions{})
	if string(again) != string(text) {
		t.Errorf("FullRestore is not deterministic")
	}
}

func TestParseRestoreError(t *testing.T) {
	input := []byte("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -m nosuchmatch -j ACCEPT\nCOMMIT\n")
	exit := &exec.ExitError{}
	tests := []struct {
		name     string
		stderr   string
		wantLine int
		wantText string
		wantRoot bool
		wantMsg  string
	}{
		{
			name:     "nft parse error",
			stderr:   "iptables-nft-restore v1.8.9 (nf_tables): Couldn't load match `nosuchmatch':No such file or directory\n\nError occurred at line: 3\nTry `iptables-nft-restore -h' or 'iptables-nft-restore --help' for more information.\n",
			wantLine: 3, wantText: "-A KUBE-A -m nosuchmatch -j ACCEPT",
			wantMsg: "iptables-restore of table nat at line 3 (-A KUBE-A -m nosuchmatch -j ACCEPT): iptables-nft-restore v1.8.9 (nf_tables): Couldn't load match `nosuchmatch':No such file or directory",
		},
		{
			name:     "nft commit error",
			stderr:   "iptables-nft-restore v1.8.9 (nf_tables): \nline 4: RULE_APPEND failed (Invalid argument): rule in chain KUBE-A\n",
			wantLine: 4, wantText: "COMMIT",
		},
		{
			name:     "legacy commit error",
			stderr:   "Ignoring deprecated --wait-interval option.\niptables-restore: line 4 failed\n",
			wantLine: 4, wantText: "COMMIT",
			wantMsg: "iptables-restore of table nat at line 4 (COMMIT): iptables-restore: line 4 failed",
		},
		{
			name:     "not root",
			stderr:   "iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n",
			wantRoot: true,
		},
		{name: "nothing said", stderr: "", wantMsg: "iptables-restore of table nat: <nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cause error = exit
			if tt.stderr == "" {
				cause = nil
			}
			e := parseRestoreError(TableNAT, input, tt.stderr, cause)
			if e.Line != tt.wantLine || e.LineText != tt.wantText {
				t.Errorf("line = %d %q, want %d %q", e.Line, e.LineText, tt.wantLine, tt.wantText)
			}
			if got := errors.Is(e, ErrNotRoot); got != tt.wantRoot {
				t.Errorf("errors.Is(ErrNotRoot) = %v, want %v", got, tt.wantRoot)
			}
			if tt.stderr != "" && !errors.Is(e, exit) {
				t.Errorf("error does not wrap the exit error")
			}
			if tt.wantMsg != "" && e.Error() != tt.wantMsg && !(tt.stderr == "" && strings.HasPrefix(e.Error(), "iptables-restore of table nat")) {
				t.Errorf("Error() = %q, want %q", e.Error(), tt.wantMsg)
			}
		})
	}
}

const rtSave = `# Generated by iptables-save v1.8.9 on Tue Dec  1 17:25:21 2026
*nat
:PREROUTING ACCEPT [10:600]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SVC-OLD - [0:0]
[3:180] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -i docker0 -j RETURN
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A1
-A KUBE-SVC-A -j KUBE-SEP-A2
COMMIT
# Completed on Tue Dec  1 17:25:21 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -s 192.0.2.1/32 -j DROP
COMMIT
`

func TestScanSave(t *testing.T) {
	got := scanSave(rtSave, "KUBE-")
	want := map[Table]*savedTable{
		TableNAT: {
			owned: map[string]int{"KUBE-PROXY-CANARY": 0, "KUBE-SERVICES": 1, "KUBE-SVC-A": 2, "KUBE-SVC-OLD": 0},
			builtin: map[string][]string{"PREROUTING": {
				`-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
				"-m addrtype --dst-type LOCAL -j DOCKER"}},
			rules: 6,
		},
		TableFilter: {owned: map[string]int{}, builtin: map[string][]string{"INPUT": {"-s 192.0.2.1/32 -j DROP"}}, rules: 1},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(savedTable{})); diff != "" {
		t.Errorf("scanSave (-want +got):\n%s", diff)
	}
	nat := got[TableNAT]
	applied := rtPlan(t, nil).Table(TableNAT).Chains
	rewrite, stale := nat.drift(applied, rtPlan(t, nil), TableNAT, "KUBE-PROXY-CANARY")
	if diff := cmp.Diff([]string{"KUBE-MARK-MASQ", "KUBE-SVC-A", "KUBE-SEP-A1"}, sortLike(rewrite, applied)); diff != "" {
		t.Errorf("drift rewrite (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"KUBE-SVC-OLD"}, stale); diff != "" {
		t.Errorf("drift stale (-want +got):\n%s", diff)
	}
	cleanup := rtLines(nat.cleanupRestore(TableNAT, "KUBE-"))
	wantCleanup := []string{"*nat", ":KUBE-PROXY-CANARY - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]", ":KUBE-SVC-OLD - [0:0]",
		"-D PREROUTING " + rtPortals,
		"-X KUBE-PROXY-CANARY", "-X KUBE-SERVICES", "-X KUBE-SVC-A", "-X KUBE-SVC-OLD", "COMMIT"}
	if diff := cmp.Diff(wantCleanup, cleanup); diff != "" {
		t.Errorf("cleanupRestore (-want +got):\n%s", diff)
	}
	if in := got[TableFilter].cleanupRestore(TableFilter, "KUBE-"); in != nil {
		t.Errorf("cleanupRestore of a table without owned chains = %q, want nil", in)
	}
}

// sortLike orders names as chains holds them.
func sortLike(names []string, chains []Chain) []string {
	var out []string
	for _, c := range chains {
		if slices.Contains(names, c.Name) {
			out = append(out, c.Name)
		}
	}
	return out
}

func TestDiffChains(t *testing.T) {
	a, _ := NewChain("KUBE-A", []string{"-j", "ACCEPT"})
	b, _ := NewChain("KUBE-B", []string{"-j", "DROP"})
	b2, _ := NewChain("KUBE-B", []string{"-j", "RETURN"})
	c, _ := NewChain("KUBE-C")
	d, _ := NewChain("KUBE-D")
	tests := []struct {
		name     string
		old, new []Chain
		write    []int
		removed  []string
	}{
		{name: "same", old: []Chain{a, b}, new: []Chain{a, b}},
		{name: "changed body", old: []Chain{a, b}, new: []Chain{a, b2}, write: []int{1}},
		{name: "added", old: []Chain{a}, new: []Chain{a, c}, write: []int{1}},
		{name: "removed and reordered", old: []Chain{a, b, c}, new: []Chain{c, a}, removed: []string{"KUBE-B"}},
		{name: "replaced in place", old: []Chain{a, b, c}, new: []Chain{a, d, c}, write: []int{1}, removed: []string{"KUBE-B"}},
		{name: "moved and changed", old: []Chain{a, b, c}, new: []Chain{b2, a, c}, write: []int{0}},
		{name: "from nothing", new: []Chain{a, b}, write: []int{0, 1}},
		{name: "to nothing", old: []Chain{a, b}, removed: []string{"KUBE-A", "KUBE-B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := diffChains(tt.old, tt.new)
			if diff := cmp.Diff(tt.write, d.write); diff != "" {
				t.Errorf("write (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.removed, d.removed); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateWrites(t *testing.T) {
	p := rtPlan(t, func(nat map[string][][]string, _ *[]Jump) {
		nat["KUBE-SVC-B"] = [][]string{{"-j", "KUBE-SEP-MISSING"}}
		nat["KUBE-SEP-B1"] = [][]string{{"-s", "fd00::1", "-j", "KUBE-MARK-MASQ"}}
	})
	chains := p.Table(TableNAT).Chains
	index := func(name string) int {
		return slices.IndexFunc(chains, func(c Chain) bool { return c.Name == name })
	}
	tests := []struct {
		name    string
		write   []int
		wantErr error
	}{
		{name: "good chains, targets elsewhere", write: []int{index("KUBE-SVC-A"), index("KUBE-SERVICES")}},
		{name: "nothing", write: []int{}},
		{name: "jump to a missing chain", write: []int{index("KUBE-SVC-B")}, wantErr: ErrMissingChain},
		{name: "wrong family", write: []int{index("KUBE-SEP-B1")}, wantErr: ErrWrongFamily},
		{name: "whole table", write: nil, wantErr: ErrMissingChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateWrites(p, TableNAT, tt.write)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("validateWrites = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestListFirst(t *testing.T) {
	tests := []struct {
		lines, chains, rules int
		want                 bool
	}{
		{lines: 20, chains: 5, rules: 300000, want: false},
		{lines: 430000, chains: 110000, rules: 0, want: true},
		{lines: 430000, chains: 110000, rules: 310000, want: true},
		{lines: 2000, chains: 300, rules: 310000, want: false},
	}
	for _, tt := range tests {
		if got := listFirstPays(tt.lines, tt.chains, tt.rules); got != tt.want {
			t.Errorf("listFirstPays(%d, %d, %d) = %v, want %v", tt.lines, tt.chains, tt.rules, got, tt.want)
		}
	}
	in := []byte("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\nCOMMIT\n")
	if lines, chains := countDecls(in); lines != 4 || chains != 1 {
		t.Errorf("countDecls = %d, %d, want 4, 1", lines, chains)
	}
	if got, want := string(withListFirst(in)), "*nat\n-S\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\nCOMMIT\n"; got != want {
		t.Errorf("withListFirst = %q, want %q", got, want)
	}
}

func TestStderrMessage(t *testing.T) {
	got := stderrMessage("Ignoring deprecated --wait-interval option.\nBad argument `y'\nError occurred at line: 3\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n")
	if want := "Bad argument `y'"; got != want {
		t.Errorf("stderrMessage = %q, want %q", got, want)
	}
}
