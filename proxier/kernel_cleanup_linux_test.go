package proxier_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/translate"
)

// TestKernelCleanupBothBackends writes iptables mode's rules through
// iptables-legacy and through iptables-nft, then one Cleanup of a
// proxier with the default backend removes both.
func TestKernelCleanupBothBackends(t *testing.T) {
	netnstest.Require(t, "iptables-legacy", "iptables-legacy-save", "iptables-nft", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save")
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx := context.Background()
	save := func(tool string) string {
		t.Helper()
		out, err := ns.Exec(ctx, tool)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tool, err, out)
		}
		return string(out)
	}
	for _, b := range []iptables.Backend{iptables.BackendLegacy, iptables.BackendNFT} {
		p, err := proxier.New(translate.ModeIPTables, proxier.WithNetNS(path), proxier.WithoutConntrackCleanup(),
			proxier.WithIPTablesOptions(iptables.WithBackend(b)))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Sync(ctx, state(epLocal)); err != nil {
			t.Fatalf("Sync through iptables-%s = %v", b, err)
		}
		if out := save("iptables-" + string(b) + "-save"); !strings.Contains(out, ":KUBE-SERVICES") {
			t.Fatalf("iptables-%s-save after Sync lacks KUBE-SERVICES:\n%s", b, out)
		}
	}
	p, err := proxier.New(translate.ModeIPTables, proxier.WithNetNS(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	for _, tool := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		if out := save(tool); strings.Contains(out, "KUBE-") {
			t.Errorf("after Cleanup %s shows owned chains:\n%s", tool, out)
		}
	}
}

// TestKernelIPVSModeCleanup runs IPVS mode where the kernel may lack
// IPVS (this machine's does; the VM's has it): Sync either works or says
// plainly that ip_vs is missing, and Cleanup works either way, removing
// the KUBE- sets and the rules that match them, and leaving a foreign
// set.
func TestKernelIPVSModeCleanup(t *testing.T) {
	netnstest.Require(t, "ipset", "iptables", "iptables-save")
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx := context.Background()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := ns.Exec(ctx, name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("ipset", "create", "FOREIGN", "hash:ip")
	run("ipset", "create", "KUBE-LEFTOVER", "hash:ip,port")
	// A leftover rule of an earlier IPVS-mode run that matches the set:
	// Cleanup must remove it before it can destroy the set.
	run("iptables", "-t", "nat", "-N", "KUBE-SERVICES")
	run("iptables", "-t", "nat", "-A", "KUBE-SERVICES", "-m", "set", "--match-set", "KUBE-LEFTOVER", "dst,dst", "-j", "ACCEPT")
	run("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
	p, err := proxier.New(translate.ModeIPVS, proxier.WithNetNS(path), proxier.WithoutConntrackCleanup())
	if err != nil {
		t.Fatal(err)
	}
	err = p.Sync(ctx, state(epLocal))
	_, statErr := os.Stat("/proc/net/ip_vs")
	switch {
	case err == nil && statErr != nil:
		t.Errorf("Sync in IPVS mode worked though this kernel shows no /proc/net/ip_vs")
	case err != nil && !errors.Is(err, ipvs.ErrNoIPVS):
		t.Fatalf("Sync in IPVS mode = %v", err)
	case err != nil && !strings.Contains(err.Error(), "ip_vs module not loaded"):
		t.Errorf("Sync error %q does not say that ip_vs is missing", err)
	case err != nil:
		t.Logf("this kernel has no IPVS: %v", err)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v", err)
	}
	if out := run("ipset", "list", "-n"); strings.Contains(out, "KUBE-") || !strings.Contains(out, "FOREIGN") {
		t.Errorf("after Cleanup ipset list -n shows:\n%s", out)
	}
	if out := run("iptables-save"); strings.Contains(out, "KUBE-") {
		t.Errorf("after Cleanup iptables-save shows:\n%s", out)
	}
}
