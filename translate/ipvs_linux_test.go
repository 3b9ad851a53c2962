package translate

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
)

// TestIPVSTextLoads is invariant 2 for the ipset and iptables parts of
// IPVS-mode plans: for every golden state (and a larger cluster), the
// ipset text loads with "ipset restore" into a fresh namespace and
// "ipset save" parses back into the same sets, then the iptables text of
// each family, which matches those sets, loads with iptables-restore
// (ip6tables-restore) and iptables-save shows every rule of the plan.
// The virtual servers need ip_vs, which only the VM tier has. Plans with
// "-m ipvs" rules need xt_ipvs too: on a kernel without it they are left
// to TestGuestIPVSTextLoads, which TestVM runs under the VM's kernel.
func TestIPVSTextLoads(t *testing.T) {
	testIPVSTextLoads(t, func(ipvsMatch bool) bool { return !ipvsMatch || hasModule("xt_ipvs") })
}

// TestGuestIPVSTextLoads is TestIPVSTextLoads for the plans with "-m ipvs"
// rules, inside the qemu VM (see TestVM), whose kernel has xt_ipvs.
func TestGuestIPVSTextLoads(t *testing.T) {
	vmtest.RequireGuest(t, "TestVM")
	testIPVSTextLoads(t, func(ipvsMatch bool) bool { return ipvsMatch })
}

// TestVM runs this package's guest tests under a real Debian kernel in
// qemu (internal/vmtest).
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 10 * time.Minute})
}

// testIPVSTextLoads runs the cases for which want(the plan has "-m ipvs"
// rules) is true and skips the others.
func testIPVSTextLoads(t *testing.T, want func(ipvsMatch bool) bool) {
	netnstest.Require(t, "ip", "ipset", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	cases := append(goldenCases(), goldenCase{name: "bench", st: benchState(300, 5)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.st, ModeIPVS, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			ipvsMatch := false
			for _, ip := range p.IPTables {
				ipvsMatch = ipvsMatch || strings.Contains(ip.String(), " -m ipvs ")
			}
			if !want(ipvsMatch) {
				if ipvsMatch {
					t.Skip("plan has -m ipvs rules and this kernel has no xt_ipvs; TestGuestIPVSTextLoads loads them in the qemu VM (TestVM)")
				}
				t.Skip("no -m ipvs rules; TestIPVSTextLoads loads this plan on the host")
			}
			ns := netnstest.NewNS(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if out, err := runIn(ctx, ns, p.IPSets.String(), "ipset", "restore"); err != nil {
				t.Fatalf("ipset restore: %v\n%s", err, out)
			}
			saved, err := ns.Exec(ctx, "ipset", "save")
			if err != nil {
				t.Fatal(err)
			}
			got, err := ipset.ParseSave(string(saved))
			if err != nil {
				t.Fatalf("ParseSave(ipset save): %v", err)
			}
			if len(got.Sets) != len(p.IPSets.Sets) {
				t.Fatalf("ipset save shows %d sets, want %d", len(got.Sets), len(p.IPSets.Sets))
			}
			for i := range p.IPSets.Sets {
				if !p.IPSets.Sets[i].Equal(&got.Sets[i]) {
					t.Errorf("set %s after restore = %+v, want %+v", p.IPSets.Sets[i].Name, got.Sets[i], p.IPSets.Sets[i])
				}
			}
			for _, ip := range p.IPTables {
				checkIPTablesLoads(ctx, t, ns, ip)
			}
		})
	}
}

func checkIPTablesLoads(ctx context.Context, t *testing.T, ns *netnstest.NS, ip *iptables.Plan) {
	t.Helper()
	restore, save := "iptables-restore", "iptables-save"
	if ip.FamilyOrDefault() == iptables.IPv6 {
		restore, save = "ip6tables-restore", "ip6tables-save"
	}
	if out, err := runIn(ctx, ns, ip.String(), restore); err != nil {
		t.Fatalf("%s: %v\n%s\n%s", restore, err, out, ip)
	}
	saved, err := ns.Exec(ctx, save)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(saved), "\n") {
		lines[l] = true
	}
	for _, tc := range ip.Tables {
		for i := range tc.Chains {
			c := &tc.Chains[i]
			for _, r := range c.Rules() {
				if line := "-A " + c.Name + " " + r; !lines[line] {
					t.Errorf("%s does not show %q:\n%s", save, line, saved)
				}
			}
		}
	}
}

func runIn(ctx context.Context, ns *netnstest.NS, stdin, name string, args ...string) ([]byte, error) {
	cmd := ns.Command(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd.CombinedOutput()
}

func hasModule(name string) bool {
	_, err := os.Stat("/sys/module/" + name)
	return err == nil
}
