package nftables_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"golang.org/x/sys/unix"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// requireNFT skips t, or fails it under SVCPLAN_REQUIRE_KERNEL=1, unless
// it runs as root on Linux with ip and nft.
func requireNFT(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "ip", "nft")
}

// netnsPath returns the path of a namespace made by netnstest.
func netnsPath(ns *netnstest.NS) string { return "/run/netns/" + ns.Name() }

// newKernel returns a Kernel working in ns.
func newKernel(t testing.TB, ns *netnstest.NS) *nftables.Kernel {
	t.Helper()
	k, err := nftables.New(nftables.WithNetNS(netnsPath(ns)))
	if err != nil {
		t.Fatalf("nftables.New(WithNetNS(%s)) = %v", netnsPath(ns), err)
	}
	return k
}

// nft runs nft with args in ns, with stdin as its input, and returns its
// output; it fails t when nft fails.
func nft(t testing.TB, ns *netnstest.NS, stdin string, args ...string) string {
	t.Helper()
	out, err := nftErr(ns, stdin, args...)
	if err != nil {
		t.Fatalf("nft %s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
	}
	return out
}

func nftErr(ns *netnstest.NS, stdin string, args ...string) (string, error) {
	return nftTimeout(ns, 5*time.Minute, stdin, args...)
}

// nftTimeout runs nft with args in ns, with stdin as its input, for at
// most d.
func nftTimeout(ns *netnstest.NS, d time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := ns.Command(ctx, "nft", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// listTable returns "nft list table" of p's table in ns.
func listTable(t testing.TB, ns *netnstest.NS, p *nftables.Plan) string {
	t.Helper()
	return nft(t, ns, "", "list", "table", string(p.FamilyOrDefault()), p.TableName())
}

// commentLine matches the comment line of a table or chain, which the
// netlink applier cannot write (google/nftables v0.3.0 has no way to).
var commentLine = regexp.MustCompile(`(?m)^(\t|\t\t)comment "[^"]*"\n`)

// normalize makes two listings of the same table comparable: it drops
// table and chain comments and rule handles, and sorts the chains and
// sets, which nft lists in creation order.
func normalize(listing string) string {
	listing = commentLine.ReplaceAllString(listing, "")
	listing = regexp.MustCompile(` # handle \d+`).ReplaceAllString(listing, "")
	lines := strings.SplitAfter(listing, "\n")
	var head, tail []string
	var blocks []string
	var cur strings.Builder
	for _, l := range lines {
		switch {
		case cur.Len() > 0:
			cur.WriteString(l)
			if l == "\t}\n" {
				blocks = append(blocks, cur.String())
				cur.Reset()
			}
		case strings.HasPrefix(l, "\t") && strings.HasSuffix(l, "{\n"):
			cur.WriteString(l)
		case len(blocks) == 0:
			head = append(head, l)
		default:
			tail = append(tail, l)
		}
	}
	slices.Sort(blocks)
	return strings.Join(head, "") + strings.Join(blocks, "") + strings.Join(tail, "")
}

// ruleCounts returns the number of rule lines of each chain in a
// listing.
func ruleCounts(listing string) map[string]int {
	out := map[string]int{}
	chain := ""
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "chain" && f[2] == "{":
			chain = f[1]
			out[chain] = 0
		case chain != "" && len(f) == 1 && f[0] == "}":
			chain = ""
		case chain != "" && len(f) > 0 && f[0] != "type" && f[0] != "comment":
			out[chain]++
		}
	}
	return out
}

// planRuleCounts returns the number of rules of each chain of p.
func planRuleCounts(p *nftables.Plan) map[string]int {
	out := map[string]int{}
	for i := range p.Chains {
		out[p.Chains[i].Name] = p.Chains[i].RuleCount()
	}
	return out
}

// TestKernelMatchesNFT is the executable dry run for the netlink applier:
// every golden plan of the compiler, and the plans of the example
// cluster, applied through netlink in one fresh namespace and loaded from
// its text with "nft -f" in another, list identically (but for table and
// chain comments); "nft list ruleset" of the netlink one succeeds and
// shows every chain with the plan's number of rules.
func TestKernelMatchesNFT(t *testing.T) {
	requireNFT(t)
	for _, g := range goldenPlans(t) {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			viaNetlink, viaText := netnstest.NewNS(t), netnstest.NewNS(t)
			k := newKernel(t, viaNetlink)
			if err := k.Apply(t.Context(), g.plan); err != nil {
				t.Fatalf("Kernel.Apply = %v", err)
			}
			nft(t, viaText, g.plan.String(), "-f", "-")
			got, want := listTable(t, viaNetlink, g.plan), listTable(t, viaText, g.plan)
			if diff := cmp.Diff(normalize(want), normalize(got)); diff != "" {
				t.Errorf("nft list table after nft -f and after Kernel.Apply differ (-nft +netlink):\n%s", diff)
			}
			ruleset := nft(t, viaNetlink, "", "list", "ruleset")
			if diff := cmp.Diff(planRuleCounts(g.plan), ruleCounts(ruleset)); diff != "" {
				t.Errorf("rules per chain in nft list ruleset differ from the plan's (-plan +listed):\n%s\n%s", diff, ruleset)
			}
		})
	}
}

// ruleHandles returns the handles of each chain's rules, from
// "nft -a list table".
func ruleHandles(listing string) map[string][]string {
	out := map[string][]string{}
	chain := ""
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "chain" && f[2] == "{":
			chain = f[1]
			out[chain] = nil
		case chain != "" && len(f) == 1 && f[0] == "}":
			chain = ""
		case chain != "" && len(f) > 2 && f[len(f)-2] == "handle" && f[0] != "type":
			out[chain] = append(out[chain], f[len(f)-1])
		}
	}
	return out
}

// applyAll applies plans with k, failing t on an error.
func applyAll(t testing.TB, k *nftables.Kernel, plans []*nftables.Plan) {
	t.Helper()
	for _, p := range plans {
		if err := k.Apply(t.Context(), p); err != nil {
			t.Fatalf("Kernel.Apply(%s) = %v", p.FamilyOrDefault(), err)
		}
	}
}

// checkHolds checks that ns holds exactly plans' tables: their listings
// equal those of a fresh namespace loaded with the plans' text.
func checkHolds(t *testing.T, ns *netnstest.NS, plans []*nftables.Plan) {
	t.Helper()
	ref := netnstest.NewNS(t)
	for _, p := range plans {
		nft(t, ref, p.String(), "-f", "-")
		if diff := cmp.Diff(normalize(listTable(t, ref, p)), normalize(listTable(t, ns, p))); diff != "" {
			t.Errorf("%s table differs from nft -f of the plan (-nft +netlink):\n%s", p.FamilyOrDefault(), diff)
		}
	}
}

// TestKernelIdempotent applies the example cluster twice: the second
// Apply sends no batch and reads nothing but the ruleset generation.
func TestKernelIdempotent(t *testing.T) {
	requireNFT(t)
	ns := netnstest.NewNS(t)
	k := newKernel(t, ns)
	plans := compile(t, exampleState(t))
	applyAll(t, k, plans)
	first := k.Stats()
	applyAll(t, k, plans)
	got := k.Stats()
	want := first
	want.Applies += len(plans)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats after applying the same plans again (-want +got):\n%s", diff)
	}
	if first.Batches != len(plans) || first.FullBatches != len(plans) {
		t.Errorf("first applies: %d batches, %d full, want %d each", first.Batches, first.FullBatches, len(plans))
	}
	checkHolds(t, ns, plans)
}

// TestKernelPartialSync moves one endpoint of the example cluster: the
// next Apply sends one partial batch that rewrites only that service's
// chains (every other chain keeps its rules, handles and all), and the
// table then lists as nft -f of the new plan does. Random states applied
// one after another converge the same way.
func TestKernelPartialSync(t *testing.T) {
	requireNFT(t)
	ns := netnstest.NewNS(t)
	k := newKernel(t, ns)
	st := exampleState(t)
	plans := compile(t, st)
	applyAll(t, k, plans)
	before := ruleHandles(nft(t, ns, "", "-a", "list", "table", "ip", nftables.DefaultTableName))
	si := slices.IndexFunc(st.Services, func(s proxy.Service) bool { return s.Name == "web" })
	moved := compile(t, mutate(st, si, 0))
	stats := k.Stats()
	applyAll(t, k, moved)
	got := k.Stats()
	if got.PartialBatches != stats.PartialBatches+1 || got.FullBatches != stats.FullBatches || got.Batches != stats.Batches+1 {
		t.Errorf("one endpoint change: Stats %+v after %+v, want one more partial batch", got, stats)
	}
	after := ruleHandles(nft(t, ns, "", "-a", "list", "table", "ip", nftables.DefaultTableName))
	for chain, hs := range before {
		web := strings.Contains(chain, "default/web/")
		switch ah, ok := after[chain]; {
		case !web && !slices.Equal(hs, ah):
			t.Errorf("chain %s of another service was rewritten: rule handles %v, then %v", chain, hs, ah)
		case web && ok && len(hs) > 0 && slices.Equal(hs, ah) && strings.HasPrefix(chain, "service-"):
			t.Errorf("chain %s of the changed service kept its rules", chain)
		}
	}
	checkHolds(t, ns, moved)

	g := randstate.New(11)
	for i := range 6 {
		plans := compile(t, g.State())
		applyAll(t, k, plans)
		checkHolds(t, ns, plans)
		if t.Failed() {
			t.Fatalf("random state %d", i)
		}
	}
}

// TestKernelRepairsDrift changes the table behind the applier's back with
// the nft tool, and checks that the next Apply notices (the ruleset
// generation moved), repairs with the smallest batch that does, and
// leaves the table as nft -f of the plan would.
func TestKernelRepairsDrift(t *testing.T) {
	requireNFT(t)
	plans := compile(t, exampleState(t))
	p := plans[0]
	vip := p.Set("service-ips").Elements[0]
	elem := string(nftables.AppendElement(nil, p.Set("service-ips"), &vip))
	tests := []struct {
		name     string
		edit     string
		wantFull bool
	}{
		{"delete table", "delete table ip kube-proxy", true},
		{"flush chain", "flush chain ip kube-proxy services", false},
		{"add rule", "add rule ip kube-proxy services drop", false},
		{"delete element", "delete element ip kube-proxy service-ips { " + strings.SplitN(elem, " : ", 2)[0] + " }", false},
		{"add chain", "add chain ip kube-proxy extra", true},
		{"recreate table", "delete table ip kube-proxy\n" + p.String(), true},
		{"unrelated table", "add table ip other", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := netnstest.NewNS(t)
			k := newKernel(t, ns)
			applyAll(t, k, plans)
			nft(t, ns, tc.edit+"\n", "-f", "-")
			before := k.Stats()
			applyAll(t, k, plans)
			got := k.Stats()
			repaired := tc.name != "unrelated table"
			wantRepairs := before.Repairs
			if repaired {
				wantRepairs++
			}
			switch {
			case got.Verifications != before.Verifications+len(plans):
				// Every table is verified: the generation is the namespace's.
				t.Errorf("%d verifications, want %d", got.Verifications-before.Verifications, len(plans))
			case got.Repairs != wantRepairs:
				t.Errorf("%d repairs, want %d", got.Repairs-before.Repairs, wantRepairs-before.Repairs)
			case repaired && (got.FullBatches-before.FullBatches == 1) != tc.wantFull:
				t.Errorf("repair took %d full and %d partial batches, want full %v", got.FullBatches-before.FullBatches,
					got.PartialBatches-before.PartialBatches, tc.wantFull)
			case !repaired && got.Batches != before.Batches:
				t.Errorf("an unrelated change made Apply send %d batches", got.Batches-before.Batches)
			}
			checkHolds(t, ns, plans)
			applyAll(t, k, plans)
			if after := k.Stats(); after.Batches != got.Batches || after.Verifications != got.Verifications {
				t.Errorf("after the repair, Apply sent %d batches and verified %d times, want none",
					after.Batches-got.Batches, after.Verifications-got.Verifications)
			}
		})
	}
}

// foreignRuleset is another program's table, which Apply and Cleanup
// must leave alone.
const foreignRuleset = `table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		tcp dport 22 accept
		iifname "lo" accept
	}
}
`

// TestKernelCleanup checks that Cleanup deletes the kube-proxy tables of
// both families, in one batch, and leaves another program's table, which
// Apply did not touch either.
func TestKernelCleanup(t *testing.T) {
	requireNFT(t)
	ns := netnstest.NewNS(t)
	nft(t, ns, foreignRuleset, "-f", "-")
	want := nft(t, ns, "", "list", "ruleset")
	k := newKernel(t, ns)
	plans := compile(t, exampleState(t))
	applyAll(t, k, plans)
	if got := nft(t, ns, "", "list", "table", "inet", "filter"); !strings.Contains(want, got) {
		t.Errorf("Apply changed the foreign table:\n%s", got)
	}
	before := k.Stats().Batches
	if err := k.Cleanup(t.Context()); err != nil {
		t.Fatalf("Kernel.Cleanup = %v", err)
	}
	if got := nft(t, ns, "", "list", "ruleset"); got != want {
		t.Errorf("after Cleanup the ruleset is not just the foreign table:\n%s", got)
	}
	if n := k.Stats().Batches - before; n != 1 {
		t.Errorf("Cleanup sent %d batches, want 1", n)
	}
	if err := k.Cleanup(t.Context()); err != nil || k.Stats().Batches != before+1 {
		t.Errorf("second Cleanup = %v, %d batches, want nil and none", err, k.Stats().Batches-before-1)
	}
	applyAll(t, k, plans)
	if k.Stats().FullBatches != 2*len(plans) {
		t.Errorf("Apply after Cleanup did not rewrite the tables in full")
	}
}

// TestKernelRefusedBatch checks that a batch the kernel refuses, or that
// cannot be built, changes nothing, names what failed, and leaves the
// next Apply to rewrite the table in full.
func TestKernelRefusedBatch(t *testing.T) {
	requireNFT(t)
	ns := netnstest.NewNS(t)
	k := newKernel(t, ns)
	p := compile(t, exampleState(t))[0]
	applyAll(t, k, []*nftables.Plan{p})
	listing := listTable(t, ns, p)

	// A new chain that jumps to a chain that exists nowhere: Validate
	// would refuse the plan, but partial batches leave references to the
	// kernel, which refuses the whole batch.
	bad := *p
	dangling, err := nftables.ChainFromText("dangling", "jump nowhere\n")
	if err != nil {
		t.Fatal(err)
	}
	bad.Chains = append(slices.Clone(p.Chains), dangling)
	err = k.Apply(t.Context(), &bad)
	var ae *nftables.ApplyError
	if !errors.As(err, &ae) || ae.Op != "flush" || !errors.Is(err, unix.ENOENT) {
		t.Errorf("Apply(jump to a missing chain) = %v, want an ApplyError flush wrapping ENOENT", err)
	}
	if got := listTable(t, ns, p); got != listing {
		t.Errorf("a refused batch changed the table:\n%s", got)
	}

	// A rule that does not parse: the batch is never sent.
	bad.Chains[len(bad.Chains)-1], err = nftables.ChainFromText("dangling", "frobnicate\n")
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, k, []*nftables.Plan{p})
	if s := k.Stats(); s.FullBatches != 2 {
		t.Errorf("Apply after a refused batch: %d full batches, want 2 (the first, and a rewrite)", s.FullBatches)
	}
	batches := k.Stats().Batches
	err = k.Apply(t.Context(), &bad)
	if !errors.As(err, &ae) || ae.Op != "build" || ae.Chain != "dangling" || !errors.Is(err, nftables.ErrSyntax) {
		t.Errorf("Apply(unparsable rule) = %v, want an ApplyError build of chain dangling wrapping ErrSyntax", err)
	}
	// Nothing was sent, so the table still holds p, and k knows it.
	applyAll(t, k, []*nftables.Plan{p})
	if k.Stats().Batches != batches {
		t.Errorf("a batch that could not be built, or the Apply after it, sent %d batches", k.Stats().Batches-batches)
	}
	if got := listTable(t, ns, p); got != listing {
		t.Errorf("after the refused batches the table differs:\n%s", got)
	}

	// A full batch of an invalid plan is refused before anything is sent.
	fresh := newKernel(t, ns)
	if err := fresh.Apply(t.Context(), &bad); !errors.As(err, &ae) || ae.Op != "validate" {
		t.Errorf("full Apply of an invalid plan = %v, want an ApplyError validate", err)
	}
}

// TestKernelNetNS checks the namespace options: a missing path and a file
// that is not a namespace are refused; a descriptor works like a path.
func TestKernelNetNS(t *testing.T) {
	requireNFT(t)
	if _, err := nftables.New(nftables.WithNetNS("/nonexistent/netns")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New(WithNetNS(missing)) = %v, want ErrNotExist", err)
	}
	if _, err := nftables.New(nftables.WithNetNS("/proc/self/status")); !errors.Is(err, nftables.ErrNotNetNS) {
		t.Errorf("New(WithNetNS(a plain file)) = %v, want ErrNotNetNS", err)
	}
	ns := netnstest.NewNS(t)
	f, err := os.Open(netnsPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	p := compile(t, exampleState(t))[0]
	applyAll(t, k, []*nftables.Plan{p})
	checkHolds(t, ns, []*nftables.Plan{p})
}

// TestKernelTraffic sends real connections through rules applied by the
// Kernel in a node namespace: a ClusterIP and a NodePort of a service with
// two pod backends reach both, and a service without endpoints refuses.
func TestKernelTraffic(t *testing.T) {
	requireNFT(t)
	topo := netnstest.New(t, netnstest.WithoutIPv6())
	pods := []netnstest.Pod{topo.AddPod(t, netnstest.Local), topo.AddPod(t, netnstest.Remote)}
	var backends []netip.AddrPort
	var eps []proxy.Endpoint
	for i, p := range pods {
		ap := netip.AddrPortFrom(p.V4, 8080)
		p.Serve(t, "tcp", ap)
		backends = append(backends, ap)
		eps = append(eps, proxy.Endpoint{Addr: p.V4, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}},
			Ready: true, Serving: true, NodeName: []string{"node-a", "node-b"}[i]})
	}
	web, empty := netip.MustParseAddr("172.30.0.10"), netip.MustParseAddr("172.30.0.11")
	port := []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, TargetPort: 8080, NodePort: 30080}}
	st := &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{topo.NodeIP(netnstest.IPv4)}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
		Services: []proxy.Service{
			{Namespace: "default", Name: "web", Type: proxy.ServiceTypeNodePort, ClusterIPs: []netip.Addr{web}, Ports: port, Endpoints: eps},
			{Namespace: "default", Name: "empty", ClusterIPs: []netip.Addr{empty}, Ports: []proxy.ServicePort{{Name: "http", Protocol: proxy.ProtocolTCP, Port: 80, TargetPort: 8080}}},
		},
	}
	k := newKernel(t, topo.Node())
	applyAll(t, k, compile(t, st))
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(web, 80), netip.AddrPortFrom(topo.NodeIP(netnstest.IPv4), 30080)} {
		seen := map[netip.AddrPort]int{}
		for range 24 {
			r := topo.Client().Dial(t.Context(), "tcp", dst)
			if !r.OK() || !slices.Contains(backends, r.Backend) {
				t.Fatalf("dial %s from the client = %v, want one of %v", dst, r, backends)
			}
			seen[r.Backend]++
		}
		if len(seen) != len(backends) {
			t.Errorf("24 connections to %s all reached %v, want both backends", dst, seen)
		}
	}
	if r := topo.Client().Dial(t.Context(), "tcp", netip.AddrPortFrom(empty, 80), netnstest.Timeout(time.Second)); !r.Refused() {
		t.Errorf("dial the service without endpoints = %v, want refused", r)
	}
}

// notRootEnv names the namespace path TestKernelNotRoot's unprivileged
// run of the test binary applies in.
const notRootEnv = "SVCPLAN_NFT_NOTROOT_NETNS"

// TestKernelNotRoot runs this test binary again as user nobody, which
// applies a plan in a test namespace: the applier must report
// ErrNotRoot, and the namespace must stay empty.
func TestKernelNotRoot(t *testing.T) {
	if path := os.Getenv(notRootEnv); path != "" {
		k, err := nftables.New(nftables.WithNetNS(path))
		if err == nil {
			err = k.Apply(t.Context(), &nftables.Plan{})
		}
		if !errors.Is(err, nftables.ErrNotRoot) {
			t.Fatalf("as uid %d: Apply = %v, want ErrNotRoot", os.Getuid(), err)
		}
		return
	}
	requireNFT(t)
	ns := netnstest.NewNS(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "svp-nft-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := dir + "/nftables.test"
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.WriteFile(bin, data, 0o755), os.Chmod(dir, 0o755)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "-test.run=^TestKernelNotRoot$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), notRootEnv+"="+netnsPath(ns))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("unprivileged run: %v\n%s", err, out)
	}
	if got := nft(t, ns, "", "list", "ruleset"); got != "" {
		t.Errorf("an unprivileged Apply changed the namespace:\n%s", got)
	}
}
