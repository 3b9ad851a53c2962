package iptables

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// mustChain builds a chain from rules given as text, as translate would.
func mustChain(t testing.TB, name string, rules ...string) Chain {
	t.Helper()
	b := NewChainBuilder(name)
	for _, r := range rules {
		b.RuleText(r)
	}
	c, err := b.Chain()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kubePlan is a hand-built plan shaped like kube-proxy's: service ns/web
// (cluster IP 10.96.0.10:80, NodePort 30080, two endpoints), ns/one (one
// endpoint, for hairpin), ns/empty (no endpoints: REJECT), ns/local
// (NodePort 30013 without local endpoints: DROP) and ns/lb (a load
// balancer IP whose source ranges leave everything else dropped).
func kubePlan(t testing.TB) *Plan {
	nat := []Chain{
		mustChain(t, "KUBE-SERVICES",
			`-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-WEB`,
			`-m comment --comment "ns/one:http cluster IP" -m tcp -p tcp -d 10.96.0.11 --dport 80 -j KUBE-SVC-ONE`,
			`-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`),
		mustChain(t, "KUBE-NODEPORTS",
			`-m comment --comment ns/web:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-WEB`),
		mustChain(t, "KUBE-EXT-WEB",
			`-m comment --comment "masquerade traffic for ns/web:http external destinations" -j KUBE-MARK-MASQ`,
			`-j KUBE-SVC-WEB`),
		mustChain(t, "KUBE-SVC-WEB",
			`-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ`,
			`-m comment --comment "ns/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-A`,
			`-m comment --comment "ns/web:http -> 10.244.2.6:8080" -j KUBE-SEP-B`),
		mustChain(t, "KUBE-SEP-A",
			`-m comment --comment ns/web:http -s 10.244.1.5 -j KUBE-MARK-MASQ`,
			`-m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080`),
		mustChain(t, "KUBE-SEP-B",
			`-m comment --comment ns/web:http -s 10.244.2.6 -j KUBE-MARK-MASQ`,
			`-m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.6:8080`),
		mustChain(t, "KUBE-SVC-ONE",
			`-m comment --comment "ns/one:http -> 10.244.1.5:8080" -j KUBE-SEP-ONE`),
		mustChain(t, "KUBE-SEP-ONE",
			`-m comment --comment ns/one:http -s 10.244.1.5 -j KUBE-MARK-MASQ`,
			`-m comment --comment ns/one:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080`),
		mustChain(t, "KUBE-MARK-MASQ", `-j MARK --or-mark 0x00004000`),
		mustChain(t, "KUBE-POSTROUTING",
			`-m mark ! --mark 0x00004000/0x00004000 -j RETURN`,
			`-j MARK --xor-mark 0x00004000`,
			`-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`),
	}
	filter := []Chain{
		mustChain(t, "KUBE-SERVICES",
			`-m comment --comment "ns/empty:http has no endpoints" -m tcp -p tcp -d 10.96.0.12 --dport 80 -j REJECT`),
		mustChain(t, "KUBE-EXTERNAL-SERVICES",
			`-m comment --comment "ns/empty:http has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30012 -j REJECT`,
			`-m comment --comment "ns/local:http has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30013 -j DROP`),
		mustChain(t, "KUBE-NODEPORTS"),
		mustChain(t, "KUBE-FORWARD",
			`-m conntrack --ctstate INVALID -j DROP`,
			`-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT`,
			`-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`),
		mustChain(t, "KUBE-PROXY-FIREWALL",
			`-m comment --comment "ns/lb:http traffic not accepted by KUBE-FW-LB" -m tcp -p tcp -d 203.0.113.7 --dport 80 -j DROP`),
		mustChain(t, "KUBE-FIREWALL",
			`-m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`),
	}
	newState := []string{"-m", "conntrack", "--ctstate", "NEW"}
	return &Plan{
		Family: IPv4,
		Tables: []TableChains{{Table: TableFilter, Chains: filter}, {Table: TableNAT, Chains: nat}},
		Jumps: []Jump{
			{Table: TableFilter, Chain: "INPUT", Match: newState, Comment: "kubernetes load balancer firewall", Target: "KUBE-PROXY-FIREWALL"},
			{Table: TableFilter, Chain: "INPUT", Comment: "kubernetes health check service ports", Target: "KUBE-NODEPORTS"},
			{Table: TableFilter, Chain: "INPUT", Match: newState, Comment: "kubernetes externally-visible service portals", Target: "KUBE-EXTERNAL-SERVICES"},
			{Table: TableFilter, Chain: "INPUT", Target: "KUBE-FIREWALL"},
			{Table: TableFilter, Chain: "FORWARD", Match: newState, Comment: "kubernetes load balancer firewall", Target: "KUBE-PROXY-FIREWALL"},
			{Table: TableFilter, Chain: "FORWARD", Comment: "kubernetes forwarding rules", Target: "KUBE-FORWARD"},
			{Table: TableFilter, Chain: "FORWARD", Match: newState, Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableFilter, Chain: "FORWARD", Match: newState, Comment: "kubernetes externally-visible service portals", Target: "KUBE-EXTERNAL-SERVICES"},
			{Table: TableFilter, Chain: "OUTPUT", Match: newState, Comment: "kubernetes load balancer firewall", Target: "KUBE-PROXY-FIREWALL"},
			{Table: TableFilter, Chain: "OUTPUT", Match: newState, Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableFilter, Chain: "OUTPUT", Target: "KUBE-FIREWALL"},
			{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "POSTROUTING", Comment: "kubernetes postrouting rules", Target: "KUBE-POSTROUTING"},
		},
	}
}

// checkGolden compares got with testdata/name, rewriting it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

func TestWriteToGolden(t *testing.T) {
	p := kubePlan(t)
	var b bytes.Buffer
	n, err := p.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Errorf("WriteTo() = %d bytes, wrote %d", n, b.Len())
	}
	if p.String() != b.String() {
		t.Errorf("String() differs from WriteTo output")
	}
	checkGolden(t, "kube.golden", b.String())
}

func TestWriteTables(t *testing.T) {
	p := kubePlan(t)
	tests := []struct {
		name string
		opts RenderOptions
		want string
	}{
		{
			name: "one chain, a deletion, no jumps",
			opts: RenderOptions{
				Chains:  map[ChainKey]bool{{TableNAT, "KUBE-SVC-ONE"}: true},
				Delete:  []ChainKey{{TableNAT, "KUBE-SEP-OLD"}},
				NoJumps: true,
			},
			want: `*nat
:KUBE-SVC-ONE - [0:0]
:KUBE-SEP-OLD - [0:0]
-A KUBE-SVC-ONE -m comment --comment "ns/one:http -> 10.244.1.5:8080" -j KUBE-SEP-ONE
-X KUBE-SEP-OLD
COMMIT
`,
		},
		{
			name: "one table with jumps",
			opts: RenderOptions{Tables: []Table{TableNAT}, Chains: map[ChainKey]bool{{TableNAT, "KUBE-MARK-MASQ"}: true}},
			want: `*nat
:KUBE-MARK-MASQ - [0:0]
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
`,
		},
		{
			name: "deletion in a table of no chains",
			opts: RenderOptions{Chains: map[ChainKey]bool{}, Delete: []ChainKey{{TableRaw, "KUBE-X"}}, NoJumps: true},
			want: "*raw\n:KUBE-X - [0:0]\n-X KUBE-X\nCOMMIT\n",
		},
		{
			name: "nothing selected",
			opts: RenderOptions{Chains: map[ChainKey]bool{}, NoJumps: true},
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if _, err := p.WriteTables(&b, tt.opts); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("WriteTables() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteToJumpOnlyTable(t *testing.T) {
	p := &Plan{
		Tables: []TableChains{{Table: TableFilter}},
		Jumps: []Jump{
			{Table: TableMangle, Chain: "PREROUTING", Match: []string{"-p", "tcp", "--dport", "80"}, Target: "X"},
			{Table: TableMangle, Chain: "OUTPUT", Comment: "it's #1", Target: "X"},
			{Table: TableMangle, Chain: "PREROUTING", Target: "Y"},
			{Table: TableMangle, Chain: "INPUT", Match: []string{"-j", "DROP"}},
		},
	}
	want := `*filter
COMMIT
*mangle
-I PREROUTING 1 -p tcp --dport 80 -j X
-I OUTPUT 1 -m comment --comment "it's #1" -j X
-I PREROUTING 2 -j Y
-I INPUT 1 -j DROP
COMMIT
`
	if diff := cmp.Diff(want, p.String()); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteToErrors(t *testing.T) {
	tests := []struct {
		name    string
		plan    *Plan
		wantErr error
	}{
		{"chain name with a newline", &Plan{Tables: []TableChains{{Table: TableNAT, Chains: []Chain{{Name: "A\n-A B"}}}}}, ErrChainName},
		{"table name with a space", &Plan{Tables: []TableChains{{Table: "nat x"}}}, ErrUnsafeArgument},
		{"jump comment with a quote", &Plan{Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Comment: `a"b`, Target: "X"}}}, ErrUnsafeArgument},
		{"jump match with a newline", &Plan{Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Match: []string{"-p\n"}, Target: "X"}}}, ErrUnsafeArgument},
		{"empty jump argument", &Plan{Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Match: []string{""}, Target: "X"}}}, ErrUnsafeArgument},
		{"jump target with a space", &Plan{Jumps: []Jump{{Table: TableNAT, Chain: "OUTPUT", Target: "X Y"}}}, ErrChainName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			n, err := tt.plan.WriteTo(&b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("WriteTo() error = %v, want %v", err, tt.wantErr)
			}
			if n != 0 || b.Len() != 0 {
				t.Errorf("WriteTo() wrote %d bytes (%q) before failing", n, b.String())
			}
			if s := tt.plan.String(); !strings.HasPrefix(s, "# render error: ") {
				t.Errorf("String() = %q, want a render error line", s)
			}
		})
	}
}

func TestStats(t *testing.T) {
	got := kubePlan(t).Stats()
	want := []TableStats{
		{Table: TableFilter, Chains: 6, Rules: 8, Jumps: 11},
		{Table: TableNAT, Chains: 10, Rules: 20, Jumps: 3},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

// syntheticPlan is a plan of services × endpoints in kube-proxy's shape.
func syntheticPlan(t testing.TB, services, endpoints int) *Plan {
	b := NewChainBuilder("KUBE-SERVICES")
	svcs := NewChainBuilder("KUBE-SERVICES")
	var chains []Chain
	for s := range services {
		svc := fmt.Sprintf("KUBE-SVC-%016X", s)
		svcs.RuleText(fmt.Sprintf(`-m comment --comment "ns/svc%d:http cluster IP" -m tcp -p tcp -d 10.%d.%d.%d --dport 80 -j %s`,
			s, s>>16&255, s>>8&255, s&255, svc))
		b.Reset(svc)
		for e := range endpoints {
			b.RuleText(fmt.Sprintf(`-m comment --comment "ns/svc%d:http -> 10.244.%d.%d:8080" -m statistic --mode random --probability %.10f -j KUBE-SEP-%08X%08X`,
				s, s&255, e, 1/float64(endpoints-e), s, e))
		}
		chains = append(chains, mustBuilt(t, b))
		for e := range endpoints {
			b.Reset(fmt.Sprintf("KUBE-SEP-%08X%08X", s, e))
			b.RuleText(fmt.Sprintf("-m comment --comment ns/svc%d:http -s 10.244.%d.%d -j KUBE-MARK-MASQ", s, s&255, e))
			b.RuleText(fmt.Sprintf("-m comment --comment ns/svc%d:http -m tcp -p tcp -j DNAT --to-destination 10.244.%d.%d:8080", s, s&255, e))
			chains = append(chains, mustBuilt(t, b))
		}
	}
	chains = append(chains, mustBuilt(t, svcs))
	return &Plan{Tables: []TableChains{{Table: TableNAT, Chains: chains}},
		Jumps: []Jump{{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"}}}
}

func mustBuilt(t testing.TB, b *ChainBuilder) Chain {
	c, err := b.Chain()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWriteToAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a large plan")
	}
	p := syntheticPlan(t, 10000, 10)
	allocs := testing.AllocsPerRun(3, func() {
		if _, err := p.WriteTo(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 10 {
		t.Errorf("WriteTo of 10 000 services x 10 endpoints made %v allocations, want at most 10", allocs)
	}
}

func BenchmarkWriteTo(b *testing.B) {
	p := syntheticPlan(b, 10000, 9) // 100 001 chains
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if n, err = p.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(n)
}

// requireKernel skips a test that needs root and a tool, or fails it when
// SVCPLAN_REQUIRE_KERNEL=1.
func requireKernel(t *testing.T, tools ...string) {
	t.Helper()
	skip := func(reason string) {
		if os.Getenv("SVCPLAN_REQUIRE_KERNEL") == "1" {
			t.Fatalf("kernel test cannot run: %s", reason)
		}
		t.Skip(reason)
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		skip("needs root on Linux")
	}
	for _, tool := range append([]string{"unshare"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			skip(fmt.Sprintf("needs %s: %v", tool, err))
		}
	}
}

// restoreInNetns feeds text to iptables-restore --noflush in a fresh
// network namespace and returns what iptables-save prints then.
func restoreInNetns(t *testing.T, family Family, text string) string {
	t.Helper()
	bin := "iptables"
	if family == IPv6 {
		bin = "ip6tables"
	}
	requireKernel(t, bin+"-restore", bin+"-save")
	cmd := exec.Command("unshare", "--net", "sh", "-c", bin+"-restore --noflush && "+bin+"-save")
	cmd.Stdin = strings.NewReader(text)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s-restore: %v: %s\ninput:\n%s", bin, err, stderr.String(), text)
	}
	return stdout.String()
}

// TestRestoreKernel checks the dry-run invariant: the text is valid
// iptables-restore input, and what the kernel reads back is the plan, rule
// for rule, once both are put in iptables-save's canonical form.
func TestRestoreKernel(t *testing.T) {
	for _, p := range []*Plan{kubePlan(t), ipv6Plan(t)} {
		t.Run(string(p.Family), func(t *testing.T) {
			saved := restoreInNetns(t, p.Family, p.String())
			if Normalize(saved) != Normalize(restoreInNetns(t, p.Family, p.String())) {
				t.Errorf("two namespaces restored from the same text save differently")
			}
			got, err := ParseSave(p.Family, saved, ParseOptions{OwnerPrefix: "KUBE-"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(canonicalPlan(t, p), canonicalPlan(t, got)); diff != "" {
				t.Errorf("kernel holds another plan (-want +got):\n%s", diff)
			}
		})
	}
}

// canonicalPlan returns p's chains and jumps as canonical rule texts,
// chains sorted by name as iptables-save sorts them.
func canonicalPlan(t *testing.T, p *Plan) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	canon := func(text string) string {
		s, err := CanonicalRule(p.FamilyOrDefault(), text)
		if err != nil {
			t.Fatalf("CanonicalRule(%q): %v", text, err)
		}
		return s
	}
	for _, tc := range p.Tables {
		for i := range tc.Chains {
			c := &tc.Chains[i]
			rules := []string{}
			for _, r := range c.Rules() {
				rules = append(rules, canon(r))
			}
			out[string(tc.Table)+"/"+c.Name] = rules
		}
	}
	for _, j := range p.Jumps {
		k := string(j.Table) + "/" + j.Chain
		var b []byte
		for i, a := range j.Args() {
			if i > 0 {
				b = append(b, ' ')
			}
			b = appendSaveString(b, a)
		}
		out[k] = append(out[k], canon(string(b)))
	}
	return out
}

// ipv6Plan is a small IPv6 plan using the rest of the matches ParseRule
// knows.
func ipv6Plan(t testing.TB) *Plan {
	nat := []Chain{
		mustChain(t, "KUBE-SERVICES",
			`-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d fd00:96::10 --dport 80 -j KUBE-SVC-WEB6`),
		mustChain(t, "KUBE-SVC-WEB6",
			`-m comment --comment "ns/web:http -> [fd00:244::5]:8080" -m recent --name KUBE-SEP-V6A --rcheck --seconds 10800 --reap -j KUBE-SEP-V6A`,
			`-m comment --comment "ns/web:http -> [fd00:244::6]:8080" -m recent --name KUBE-SEP-V6B --rcheck --seconds 10800 --reap -j KUBE-SEP-V6B`,
			`-m comment --comment "ns/web:http -> [fd00:244::5]:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-V6A`,
			`-m comment --comment "ns/web:http -> [fd00:244::6]:8080" -j KUBE-SEP-V6B`),
		mustChain(t, "KUBE-SEP-V6A",
			`-s fd00:244::5/128 -j KUBE-MARK-MASQ`,
			`-m tcp -p tcp -m recent --name KUBE-SEP-V6A --set -j DNAT --to-destination [fd00:244::5]:8080`),
		mustChain(t, "KUBE-SEP-V6B",
			`-s fd00:244::6 -j KUBE-MARK-MASQ`,
			`-m tcp -p tcp -m recent --name KUBE-SEP-V6B --set -j DNAT --to-destination [fd00:244::6]:8080`),
		mustChain(t, "KUBE-MARK-MASQ", `-j MARK --set-xmark 0x4000/0x4000`),
		mustChain(t, "KUBE-PORTALS", `-p udp -d fd00:96::53 --dport 53 -j REDIRECT --to-ports 40053`),
	}
	filter := []Chain{
		mustChain(t, "KUBE-SERVICES",
			`-m comment --comment "ns/empty:dns has no endpoints" -m udp -p udp -d fd00:96::12/128 --dport 53 -j REJECT`),
		mustChain(t, "KUBE-FORWARD",
			`-p udp -m physdev ! --physdev-is-in -m multiport --dports 80,8000:8080 -j ACCEPT`,
			`-i eth0 ! -o veth+ -m mark ! --mark 0x1 -m statistic --mode nth --every 3 --packet 0 -j ACCEPT`,
			`-m addrtype ! --src-type LOCAL --dst-type UNICAST,LOCAL -m state --state NEW -j RETURN`,
			`-p tcp ! --dport 22 -j REJECT --reject-with tcp-reset`),
	}
	return &Plan{
		Family: IPv6,
		Tables: []TableChains{{Table: TableFilter, Chains: filter}, {Table: TableNAT, Chains: nat}},
		Jumps: []Jump{
			{Table: TableFilter, Chain: "FORWARD", Comment: "kubernetes forwarding rules", Target: "KUBE-FORWARD"},
			{Table: TableFilter, Chain: "OUTPUT", Match: []string{"-m", "conntrack", "--ctstate", "NEW"}, Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "PREROUTING", Target: "KUBE-PORTALS"},
			{Table: TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
		},
	}
}
