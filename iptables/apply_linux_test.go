package iptables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ktRequireKernel skips the test unless it runs as root with the tools of
// backend installed, or fails instead when SVCPLAN_REQUIRE_KERNEL=1.
func ktRequireKernel(t testing.TB, backend Backend, family Family) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	}
	base := "iptables"
	if family == IPv6 {
		base = "ip6tables"
	}
	for _, ktTool := range []string{"ip", base + "-" + string(backend) + "-restore", base + "-" + string(backend) + "-save", base + "-" + string(backend)} {
		if _, err := exec.LookPath(ktTool); err != nil && why == "" {
			why = ktTool + " not installed (apt-get install iptables iproute2)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("SVCPLAN_REQUIRE_KERNEL") == "1" {
		t.Fatalf("kernel test cannot run: %s (SVCPLAN_REQUIRE_KERNEL=1)", why)
	}
	t.Skipf("kernel test skipped: %s", why)
}

// ktTestNS is a network namespace made for one test.
type ktTestNS struct {
	name string
	path string
}

// ktNewTestNS makes a network namespace that t's cleanup removes.
func ktNewTestNS(t testing.TB) *ktTestNS {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	ns := &ktTestNS{name: "svcplan-test-" + hex.EncodeToString(b)}
	ns.path = filepath.Join("/run/netns", ns.name)
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	return ns
}

// run runs a command in ns and returns its output, failing t on error.
func (ns *ktTestNS) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.try(args...)
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), ns.name, err, out)
	}
	return out
}

// try runs a command in ns and returns its output and error.
func (ns *ktTestNS) try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// ktTool returns the name of an iptables command of backend and family, such
// as "ip6tables-legacy-save" for suffix "-save".
func ktTool(backend Backend, family Family, suffix string) string {
	base := "iptables"
	if family == IPv6 {
		base = "ip6tables"
	}
	return base + "-" + string(backend) + suffix
}

// ktKernelCase is one backend and family to run a kernel test with.
type ktKernelCase struct {
	backend Backend
	family  Family
}

func (c ktKernelCase) String() string { return string(c.backend) + "-" + string(c.family) }

var ktBothBackends = []ktKernelCase{{BackendNFT, IPv4}, {BackendLegacy, IPv4}}

// ktForBackends runs f as a subtest for each case, each in its own
// namespace with its own Kernel.
func ktForBackends(t *testing.T, cases []ktKernelCase, f func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, inputs *ktRestoreLog)) {
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			ktRequireKernel(t, c.backend, c.family)
			ns := ktNewTestNS(t)
			log := &ktRestoreLog{}
			k, err := New(c.family, WithNetNS(ns.path), WithBackend(c.backend), WithRestoreObserver(log.observe))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if k.Backend() != c.backend {
				t.Fatalf("Backend() = %s, want %s", k.Backend(), c.backend)
			}
			f(t, c, ns, k, log)
		})
	}
}

// ktRestoreLog records restore inputs.
type ktRestoreLog struct {
	mu     sync.Mutex
	inputs []string
}

func (l *ktRestoreLog) observe(t Table, input []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inputs = append(l.inputs, string(input))
}

// since returns the inputs recorded after the first n.
func (l *ktRestoreLog) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.inputs[n:])
}

func (l *ktRestoreLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inputs)
}

// ktMustChain builds a chain or fails t.
func ktMustChain(t testing.TB, name string, rules ...[]string) Chain {
	t.Helper()
	c, err := NewChain(name, rules...)
	if err != nil {
		t.Fatalf("NewChain(%s): %v", name, err)
	}
	return c
}

// ktHandPlan returns a small kube-proxy-shaped plan: two services with
// endpoints in nat, a forward chain in filter, and the usual jumps. With
// second, one endpoint of the first service differs.
func ktHandPlan(t testing.TB, family Family, second bool) *Plan {
	t.Helper()
	vip, ep1, ep2, ep3, src := "10.96.0.10/32", "10.244.1.2", "10.244.1.3", "10.244.2.2", "10.0.0.0/8"
	if family == IPv6 {
		vip, ep1, ep2, ep3, src = "fd00:96::10/128", "fd00:244:1::2", "fd00:244:1::3", "fd00:244:2::2", "fd00::/8"
	}
	if second {
		ep2 = strings.Replace(ep2, "3", "9", 1)
	}
	hostport := func(ip string) string {
		if family == IPv6 {
			return "[" + ip + "]:8080"
		}
		return ip + ":8080"
	}
	sepName := func(ip string) string {
		return "KUBE-SEP-" + strings.ToUpper(hex.EncodeToString([]byte(ip))[len(hex.EncodeToString([]byte(ip)))-16:])
	}
	sep := func(ip string) Chain {
		return ktMustChain(t, sepName(ip),
			[]string{"-s", ip, "-m", "comment", "--comment", "ns/web:http", "-j", "KUBE-MARK-MASQ"},
			[]string{"-p", "tcp", "-m", "comment", "--comment", "ns/web:http", "-m", "tcp", "-j", "DNAT", "--to-destination", hostport(ip)})
	}
	nat := []Chain{
		ktMustChain(t, "KUBE-SERVICES",
			[]string{"-d", vip, "-p", "tcp", "-m", "comment", "--comment", "ns/web:http cluster IP", "-m", "tcp", "--dport", "80", "-j", "KUBE-SVC-WEB"},
			[]string{"-d", strings.Replace(vip, "10", "11", 1), "-p", "tcp", "-m", "comment", "--comment", "ns/db:sql cluster IP", "-m", "tcp", "--dport", "5432", "-j", "KUBE-SVC-DB"}),
		ktMustChain(t, "KUBE-MARK-MASQ", []string{"-j", "MARK", "--or-mark", "0x4000"}),
		ktMustChain(t, "KUBE-POSTROUTING",
			[]string{"-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"},
			[]string{"-j", "MARK", "--xor-mark", "0x4000"},
			[]string{"-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE"}),
		ktMustChain(t, "KUBE-SVC-WEB",
			[]string{"!", "-s", src, "-d", vip, "-p", "tcp", "-m", "comment", "--comment", "ns/web:http cluster IP", "-m", "tcp", "--dport", "80", "-j", "KUBE-MARK-MASQ"},
			[]string{"-m", "comment", "--comment", "ns/web:http -> " + hostport(ep1), "-m", "statistic", "--mode", "random", "--probability", "0.50000000000", "-j", sepName(ep1)},
			[]string{"-m", "comment", "--comment", "ns/web:http -> " + hostport(ep2), "-j", sepName(ep2)}),
		sep(ep1),
		sep(ep2),
		ktMustChain(t, "KUBE-SVC-DB", []string{"-m", "comment", "--comment", "ns/db:sql -> " + hostport(ep3), "-j", sepName(ep3)}),
		sep(ep3),
	}
	filter := []Chain{
		ktMustChain(t, "KUBE-FORWARD",
			[]string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"},
			[]string{"-m", "comment", "--comment", "kubernetes forwarding rules", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "ACCEPT"}),
	}
	return &Plan{
		Family: family,
		Tables: []TableChains{{Table: TableNAT, Chains: nat}, {Table: TableFilter, Chains: filter}},
		Jumps: []Jump{
			{Table: TableNAT, Chain: "PREROUTING", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "OUTPUT", Comment: "kubernetes service portals", Target: "KUBE-SERVICES"},
			{Table: TableNAT, Chain: "POSTROUTING", Comment: "kubernetes postrouting rules", Target: "KUBE-POSTROUTING"},
			{Table: TableFilter, Chain: "FORWARD", Comment: "kubernetes forwarding rules", Target: "KUBE-FORWARD"},
		},
	}
}

// ktKernelOwned reads ns back with iptables-save and returns the owned
// chains (except the canary) and the built-in chain rules, normalised, as
// "table chain rule" lines.
func ktKernelOwned(t testing.TB, ns *ktTestNS, c ktKernelCase) []string {
	t.Helper()
	text := ns.run(t, ktTool(c.backend, c.family, "-save"))
	var out []string
	table := ""
	for _, line := range strings.Split(Normalize(text), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":KUBE-") && !strings.HasPrefix(line, ":KUBE-PROXY-CANARY "):
			out = append(out, table+" "+strings.TrimSuffix(line, " - [0:0]"))
		case strings.HasPrefix(line, "-A "):
			chain, _, _ := strings.Cut(line[3:], " ")
			if strings.HasPrefix(chain, "KUBE-") || slices.Contains(builtinChains(Table(table)), chain) {
				out = append(out, table+" "+line)
			}
		}
	}
	return out
}

// ktPlanOwned returns p's chains and jumps in the form of ktKernelOwned, each
// rule in ktCanonical form, given the foreign rules of built-in chains that
// follow the jumps.
func ktPlanOwned(t testing.TB, p *Plan, foreign map[string][]string) []string {
	t.Helper()
	var out []string
	for _, table := range []Table{TableNAT, TableFilter} {
		var decls, rules []string
		for _, b := range builtinChains(table) {
			for _, j := range p.Jumps {
				if j.Table == table && j.Chain == b {
					rules = append(rules, string(table)+" -A "+b+" "+ktCanonical(t, p.FamilyOrDefault(), ktJumpText(t, j)))
				}
			}
			rules = append(rules, foreign[string(table)+" "+b]...)
		}
		if tc := p.Table(table); tc != nil {
			sorted := slices.Clone(tc.Chains)
			slices.SortFunc(sorted, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
			for _, c := range sorted {
				decls = append(decls, string(table)+" :"+c.Name)
				for _, r := range c.Rules() {
					rules = append(rules, string(table)+" -A "+c.Name+" "+ktCanonical(t, p.FamilyOrDefault(), r))
				}
			}
		}
		out = append(append(out, decls...), rules...)
	}
	return out
}

func ktJumpText(t testing.TB, j Jump) string {
	c := ktMustChain(t, "X", j.Args())
	return strings.TrimSuffix(c.Body(), "\n")
}

func ktCanonical(t testing.TB, f Family, rule string) string {
	t.Helper()
	s, err := CanonicalRule(f, rule)
	if err != nil {
		t.Fatalf("CanonicalRule(%q): %v", rule, err)
	}
	return s
}

// sortedOwned sorts ktKernelOwned's output per table the way iptables-save
// prints chains, so both sides compare.
func ktCheckKernel(t *testing.T, ns *ktTestNS, c ktKernelCase, p *Plan, foreign map[string][]string) {
	t.Helper()
	got := ktKernelOwned(t, ns, c)
	want := ktPlanOwned(t, p, foreign)
	filtered := got[:0:0]
	for _, g := range got {
		table, rest, _ := strings.Cut(g, " ")
		if table == "nat" || table == "filter" {
			filtered = append(filtered, table+" "+rest)
		}
	}
	sortDecls := func(s []string) {
		slices.SortStableFunc(s, func(a, b string) int {
			ad, bd := strings.Contains(a, " :"), strings.Contains(b, " :")
			at, _, _ := strings.Cut(a, " ")
			bt, _, _ := strings.Cut(b, " ")
			if at != bt {
				return strings.Compare(bt, at) // nat before filter
			}
			switch {
			case ad && bd:
				return strings.Compare(a, b)
			case ad:
				return -1
			case bd:
				return 1
			}
			return 0
		})
	}
	sortDecls(filtered)
	sortDecls(want)
	if diff := cmp.Diff(want, filtered); diff != "" {
		t.Errorf("kernel owned chains (-want +got):\n%s", diff)
	}
}

func TestKernelApply(t *testing.T) {
	cases := append(slices.Clone(ktBothBackends), ktKernelCase{BackendNFT, IPv6}, ktKernelCase{BackendLegacy, IPv6})
	ktForBackends(t, cases, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		p := ktHandPlan(t, c.family, false)
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		ktCheckKernel(t, ns, c, p, nil)
		if s := k.Stats(); s.Restores != 2 || s.FullRestores != 2 {
			t.Errorf("Stats after first Apply = %+v, want 2 full restores", s)
		}
	})
}

// TestKernelNetNS checks that processes the Kernel starts run in its
// namespace, not the caller's.
func TestKernelNetNS(t *testing.T) {
	ktRequireKernel(t, BackendNFT, IPv4)
	ns := ktNewTestNS(t)
	k, err := New(IPv4, WithNetNS(ns.path), WithBackend(BackendNFT))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	out, _, err := k.run(context.Background(), nil, false, "readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatalf("readlink in namespace: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(ns.path, &st); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("net:[%d]", st.Ino); got != want {
		t.Errorf("child's namespace = %s, want %s", got, want)
	}
	f, err := os.Open(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kf, err := New(IPv4, WithNetNSFd(int(f.Fd())), WithBackend(BackendNFT))
	if err != nil {
		t.Fatalf("New(WithNetNSFd): %v", err)
	}
	byFd, _, err := kf.run(context.Background(), nil, false, "readlink", "/proc/self/ns/net")
	if err != nil || string(byFd) != string(out) {
		t.Errorf("with WithNetNSFd the child runs in %q (%v), want %q", byFd, err, out)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, _, err := k.run(context.Background(), nil, false, "true"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Every thread must be back in the test process's namespace: a
	// thread left in the test namespace would show in its task entry.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err == nil && ns == strings.TrimSpace(string(out)) {
			t.Errorf("thread %s of the test process is in the test namespace %s", task.Name(), ns)
		}
	}
}

func TestKernelNoOpAndPartial(t *testing.T) {
	ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		p1, p2 := ktHandPlan(t, c.family, false), ktHandPlan(t, c.family, true)
		if err := k.Apply(ctx, p1); err != nil {
			t.Fatalf("Apply(p1): %v", err)
		}
		n := log.len()
		if err := k.Apply(ctx, ktHandPlan(t, c.family, false)); err != nil {
			t.Fatalf("Apply(p1) again: %v", err)
		}
		if got := log.since(n); len(got) != 0 {
			t.Errorf("second Apply of the same plan ran %d restores, want 0:\n%s", len(got), strings.Join(got, "\n"))
		}
		if err := k.Apply(ctx, p2); err != nil {
			t.Fatalf("Apply(p2): %v", err)
		}
		got := log.since(n)
		if len(got) != 1 {
			t.Fatalf("Apply(p2) ran %d restores, want 1 (nat)", len(got))
		}
		old, changed := p1.Table(TableNAT).Chains[5].Name, p2.Table(TableNAT).Chains[5].Name
		want := []string{":" + changed + " - [0:0]", ":" + old + " - [0:0]", ":KUBE-SVC-WEB - [0:0]"}
		var decls []string
		for _, line := range strings.Split(got[0], "\n") {
			if strings.HasPrefix(line, ":") {
				decls = append(decls, line)
			}
		}
		slices.Sort(decls)
		slices.Sort(want)
		if diff := cmp.Diff(want, decls); diff != "" {
			t.Errorf("partial restore declares (-want +got):\n%s\ninput:\n%s", diff, got[0])
		}
		if !strings.Contains(got[0], "-X "+old+"\n") {
			t.Errorf("partial restore does not delete %s:\n%s", old, got[0])
		}
		ktCheckKernel(t, ns, c, p2, nil)
		if s := k.Stats(); s.PartialRestores != 1 || s.Fallbacks != 0 {
			t.Errorf("Stats = %+v, want 1 partial restore, no fallback", s)
		}
	})
}

// TestKernelDrift changes owned chains and jumps from outside and checks
// that the next Apply repairs them, writing only what is needed.
func TestKernelDrift(t *testing.T) {
	drifts := []struct {
		name     string
		cmds     [][]string // iptables arguments, run in the namespace
		full     bool       // whether the repair rewrites the table
		foreign  map[string][]string
		declares []string // chains the repair declares, when partial
	}{
		{name: "flushed chain", cmds: [][]string{{"-t", "nat", "-F", "KUBE-SVC-WEB"}}, declares: []string{"KUBE-SVC-WEB"}},
		{name: "deleted chain", cmds: [][]string{{"-t", "nat", "-D", "KUBE-SERVICES", "2"}, {"-t", "nat", "-F", "KUBE-SVC-DB"}, {"-t", "nat", "-X", "KUBE-SVC-DB"}},
			declares: []string{"KUBE-SERVICES", "KUBE-SVC-DB"}},
		{name: "deleted jump", cmds: [][]string{{"-t", "nat", "-D", "PREROUTING", "1"}}},
		{name: "rule above jump", cmds: [][]string{{"-t", "nat", "-I", "OUTPUT", "1", "-d", "192.0.2.7", "-j", "ACCEPT"}},
			foreign: map[string][]string{"nat OUTPUT": {"nat -A OUTPUT -d 192.0.2.7/32 -j ACCEPT"}}},
		{name: "duplicate jump", cmds: [][]string{{"-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"}}},
		{name: "stale chain", cmds: [][]string{{"-t", "nat", "-N", "KUBE-SVC-GONE"}, {"-t", "nat", "-A", "KUBE-SVC-GONE", "-j", "KUBE-MARK-MASQ"}},
			declares: []string{"KUBE-SVC-GONE"}},
		{name: "flushed table", cmds: [][]string{{"-t", "nat", "-F"}, {"-t", "nat", "-X"}}, full: true},
	}
	for _, d := range drifts {
		t.Run(d.name, func(t *testing.T) {
			ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
				ctx := context.Background()
				p := ktHandPlan(t, c.family, false)
				if err := k.Apply(ctx, p); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				for _, cmd := range d.cmds {
					ns.run(t, append([]string{ktTool(c.backend, c.family, ""), "-w", "5"}, cmd...)...)
				}
				before, n := k.Stats(), log.len()
				if err := k.Apply(ctx, p); err != nil {
					t.Fatalf("Apply after drift: %v", err)
				}
				ktCheckKernel(t, ns, c, p, d.foreign)
				after, got := k.Stats(), log.since(n)
				if len(got) != 1 {
					t.Fatalf("repair ran %d restores, want 1: %q", len(got), got)
				}
				if full := after.FullRestores > before.FullRestores; full != d.full {
					t.Errorf("repair full = %v, want %v; input:\n%s", full, d.full, got[0])
				}
				if !d.full {
					var decls []string
					for _, line := range strings.Split(got[0], "\n") {
						if name, ok := strings.CutPrefix(line, ":"); ok {
							decls = append(decls, strings.TrimSuffix(name, " - [0:0]"))
						}
					}
					slices.Sort(decls)
					if diff := cmp.Diff(d.declares, decls); diff != "" {
						t.Errorf("repair declares (-want +got):\n%s\ninput:\n%s", diff, got[0])
					}
				}
				n = log.len()
				if err := k.Apply(ctx, p); err != nil {
					t.Fatalf("Apply after repair: %v", err)
				}
				if got := log.since(n); len(got) != 0 {
					t.Errorf("Apply after repair ran %d restores, want 0: %q", len(got), got)
				}
			})
		})
	}
}

// TestKernelFallback makes a partial restore fail (a chain it relies on
// was deleted behind the applier's back, unnoticed because only the cheap
// check runs) and checks that the full restore after it succeeds.
func TestKernelFallback(t *testing.T) {
	ktRequireKernel(t, BackendNFT, IPv4)
	ns := ktNewTestNS(t)
	k, err := New(IPv4, WithNetNS(ns.path), WithBackend(BackendNFT), WithVerifyLimit(-1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := ktHandPlan(t, IPv4, false)
	if err := k.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	sep := p.Table(TableNAT).Chains[7].Name
	ns.run(t, "iptables-nft", "-t", "nat", "-F", "KUBE-SVC-DB")
	ns.run(t, "iptables-nft", "-t", "nat", "-F", sep)
	ns.run(t, "iptables-nft", "-t", "nat", "-X", sep)
	p2 := ktHandPlan(t, IPv4, false)
	db, err := NewChain("KUBE-SVC-DB", []string{"-m", "comment", "--comment", "changed", "-j", sep})
	if err != nil {
		t.Fatal(err)
	}
	p2.Table(TableNAT).Chains[6] = db
	if err := k.Apply(ctx, p2); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if s := k.Stats(); s.Fallbacks != 1 {
		t.Errorf("Stats = %+v, want 1 fallback", s)
	}
	ktCheckKernel(t, ns, ktKernelCase{BackendNFT, IPv4}, p2, nil)
}

// TestKernelRestoreError applies a plan the kernel refuses and checks the
// error names the line and the earlier rules stay.
func TestKernelRestoreError(t *testing.T) {
	ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		p := ktHandPlan(t, c.family, false)
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		bad := ktHandPlan(t, c.family, false)
		nat := bad.Table(TableNAT)
		nat.Chains = append(nat.Chains, ktMustChain(t, "KUBE-BAD", []string{"-m", "nosuchmatch", "--foo", "-j", "ACCEPT"}))
		err := k.Apply(ctx, bad)
		var re *RestoreError
		if !errors.As(err, &re) {
			t.Fatalf("Apply(bad) = %v, want a *RestoreError", err)
		}
		if re.Table != TableNAT || re.Line == 0 || !strings.Contains(re.LineText, "nosuchmatch") {
			t.Errorf("RestoreError = %+v, want table nat and the line of the nosuchmatch rule", re)
		}
		var e *Error
		if !errors.As(err, &e) || e.Op != "apply" || e.Line != re.Line {
			t.Errorf("Apply(bad) = %#v, want an *Error with Op apply and the line", err)
		}
		if !strings.Contains(err.Error(), "nosuchmatch") {
			t.Errorf("error %q does not name the failing rule", err)
		}
		if s := k.Stats(); s.Fallbacks != 1 {
			t.Errorf("Stats = %+v, want the partial restore to fall back once", s)
		}
		ktCheckKernel(t, ns, c, p, nil)
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply(p) after failure: %v", err)
		}
		ktCheckKernel(t, ns, c, p, nil)
	})
}

// TestKernelForeign checks that Apply and Cleanup leave other programs'
// chains and rules alone, and that Apply removes owned chains a previous
// run left.
func TestKernelForeign(t *testing.T) {
	ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		ipt := ktTool(c.backend, c.family, "")
		for _, cmd := range [][]string{
			{"-t", "nat", "-N", "DOCKER"},
			{"-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN"},
			{"-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
			{"-A", "INPUT", "-s", "192.0.2.1/32", "-j", "DROP"},
			{"-t", "nat", "-N", "KUBE-SVC-LEFTOVER"},
			{"-t", "nat", "-A", "KUBE-SVC-LEFTOVER", "-j", "DOCKER"},
			{"-t", "nat", "-A", "OUTPUT", "-j", "KUBE-SVC-LEFTOVER"},
		} {
			ns.run(t, append([]string{ipt, "-w", "5"}, cmd...)...)
		}
		foreign := map[string][]string{
			"nat PREROUTING": {"nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"},
			"filter INPUT":   {"filter -A INPUT -s 192.0.2.1/32 -j DROP"},
		}
		p := ktHandPlan(t, c.family, false)
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		save := ns.run(t, ktTool(c.backend, c.family, "-save"))
		for _, want := range []string{":DOCKER - [0:0]", "-A DOCKER -i docker0 -j RETURN", "-A INPUT -s 192.0.2.1/32 -j DROP",
			"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"} {
			if !strings.Contains(save, want+"\n") {
				t.Errorf("after Apply, iptables-save lacks %q:\n%s", want, save)
			}
		}
		if strings.Contains(save, "LEFTOVER") {
			t.Errorf("after Apply, the leftover chain stays:\n%s", save)
		}
		got := ktKernelOwned(t, ns, c)
		if i, j := slices.Index(got, "nat -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
			slices.Index(got, foreign["nat PREROUTING"][0]); i < 0 || j < 0 || i > j {
			t.Errorf("PREROUTING: jump at %d, DOCKER rule at %d, want the jump first:\n%s", i, j, strings.Join(got, "\n"))
		}
		if err := k.Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		after := ns.run(t, ktTool(c.backend, c.family, "-save"))
		if strings.Contains(after, "KUBE-") {
			t.Errorf("after Cleanup, owned chains or jumps stay:\n%s", after)
		}
		for _, want := range []string{":DOCKER - [0:0]", "-A DOCKER -i docker0 -j RETURN", "-A INPUT -s 192.0.2.1/32 -j DROP",
			"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"} {
			if !strings.Contains(after, want+"\n") {
				t.Errorf("after Cleanup, iptables-save lacks %q:\n%s", want, after)
			}
		}
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply after Cleanup: %v", err)
		}
		ktCheckKernel(t, ns, c, p, foreign)
	})
}

// TestKernelJumpChanges removes and reorders jumps between applies.
func TestKernelJumpChanges(t *testing.T) {
	ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		p := ktHandPlan(t, c.family, false)
		p.Jumps = append(p.Jumps, Jump{Table: TableNAT, Chain: "PREROUTING", Match: []string{"-p", "tcp"}, Target: "KUBE-MARK-MASQ"})
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		ktCheckKernel(t, ns, c, p, nil)
		q := ktHandPlan(t, c.family, false)
		q.Jumps = append([]Jump{{Table: TableNAT, Chain: "PREROUTING", Match: []string{"-p", "udp"}, Target: "KUBE-MARK-MASQ"}}, q.Jumps[1:]...)
		if err := k.Apply(ctx, q); err != nil {
			t.Fatalf("Apply(q): %v", err)
		}
		ktCheckKernel(t, ns, c, q, nil)
		r := ktHandPlan(t, c.family, false)
		r.Jumps = r.Jumps[1:3]
		r.Tables = r.Tables[:1]
		if err := k.Apply(ctx, r); err != nil {
			t.Fatalf("Apply(r): %v", err)
		}
		ktCheckKernel(t, ns, c, r, nil)
		if save := ns.run(t, ktTool(c.backend, c.family, "-save"), "-t", "filter"); strings.Contains(save, "KUBE-") {
			t.Errorf("filter keeps owned chains after the plan dropped them:\n%s", save)
		}
	})
}

// TestKernelInvalidPlan checks that a plan Validate refuses writes nothing,
// on a full restore (where validation runs alongside iptables-restore's
// parsing, holding back its COMMIT) and on a partial one.
func TestKernelInvalidPlan(t *testing.T) {
	ktForBackends(t, ktBothBackends, func(t *testing.T, c ktKernelCase, ns *ktTestNS, k *Kernel, log *ktRestoreLog) {
		ctx := context.Background()
		p := ktHandPlan(t, c.family, false)
		if err := k.Apply(ctx, p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		bad := ktHandPlan(t, c.family, true)
		nat := bad.Table(TableNAT)
		nat.Chains = append(nat.Chains, ktMustChain(t, "KUBE-SVC-BAD", []string{"-j", "KUBE-SEP-MISSING"}))
		nat.Chains[0] = ktMustChain(t, "KUBE-SERVICES", []string{"-d", "10.96.9.9/32", "-j", "KUBE-SVC-BAD"})
		if err := k.Apply(ctx, bad); !errors.Is(err, ErrMissingChain) {
			t.Errorf("partial Apply(bad) = %v, want ErrMissingChain", err)
		}
		ktCheckKernel(t, ns, c, p, nil)
		fresh, err := New(c.family, WithNetNS(ns.path), WithBackend(c.backend))
		if err != nil {
			t.Fatal(err)
		}
		if err := fresh.Apply(ctx, bad); !errors.Is(err, ErrMissingChain) {
			t.Errorf("full Apply(bad) = %v, want ErrMissingChain", err)
		}
		if s := fresh.Stats(); s.FullRestores != 2 {
			t.Errorf("Stats = %+v, want 2 full restores: filter written, nat started and abandoned", s)
		}
		ktCheckKernel(t, ns, c, p, nil)
	})
}

func TestNewToolMissing(t *testing.T) {
	_, err := New(IPv4, WithBinaries("/nonexistent/iptables-nft-restore", "/nonexistent/iptables-nft-save"))
	if !errors.Is(err, ErrToolMissing) {
		t.Errorf("New with missing binaries = %v, want ErrToolMissing", err)
	}
	if _, err := New("ipv5"); !errors.Is(err, ErrSyntax) {
		t.Errorf("New(ipv5) = %v, want ErrSyntax", err)
	}
}
