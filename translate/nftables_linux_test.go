package translate

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/nftables"
)

// TestNFTablesTextLoads is invariant 2 for nftables plans: the text of
// every golden plan (and of a larger cluster) is valid "nft -f" input in
// a fresh network namespace, loading it twice gives the same table, and
// "nft list" shows every chain with its number of rules and every set.
// It needs root and nft; without them it skips, or fails when
// SVCPLAN_REQUIRE_KERNEL=1.
func TestNFTablesTextLoads(t *testing.T) {
	netnstest.Require(t, "ip", "nft")
	cases := append(nftGoldenCases(), goldenCase{name: "bench", st: benchState(200, 5)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.st, ModeNFTables, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			ns := netnstest.NewNS(t)
			for _, np := range p.NFTables {
				text := np.String()
				for i := range 2 {
					if out, err := nft(ns, text, "-f", "-"); err != nil {
						t.Fatalf("nft -f (load %d of the %s plan): %v\n%s", i+1, np.FamilyOrDefault(), err, out)
					}
				}
				listing, err := nft(ns, "", "list", "table", string(np.FamilyOrDefault()), np.TableName())
				if err != nil {
					t.Fatalf("nft list table: %v\n%s", err, listing)
				}
				if diff := cmp.Diff(planObjects(np), listedObjects(listing)); diff != "" {
					t.Errorf("%s table as nft lists it differs from the plan (-plan +listed):\n%s\nlisting:\n%s", np.FamilyOrDefault(), diff, listing)
				}
			}
		})
	}
}

// TestNFTablesRandomPlansLoad loads the plans of random states one after
// the other into one namespace: each is valid nft input, and each
// replaces the table its predecessor left, whatever that held.
func TestNFTablesRandomPlansLoad(t *testing.T) {
	netnstest.Require(t, "ip", "nft")
	ns := netnstest.NewNS(t)
	for seed := uint64(1); seed <= 40; seed++ {
		st := randstate.New(seed).State()
		p, err := Compile(st, ModeNFTables)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, np := range p.NFTables {
			if out, err := nft(ns, np.String(), "-f", "-"); err != nil {
				t.Fatalf("seed %d: nft -f of the %s plan: %v\n%s\nplan:\n%s", seed, np.FamilyOrDefault(), err, out, np)
			}
			listing, err := nft(ns, "", "list", "table", string(np.FamilyOrDefault()), np.TableName())
			if err != nil {
				t.Fatalf("seed %d: nft list table: %v\n%s", seed, err, listing)
			}
			if diff := cmp.Diff(planObjects(np), listedObjects(listing)); diff != "" {
				t.Fatalf("seed %d: %s table as nft lists it differs from the plan (-plan +listed):\n%s", seed, np.FamilyOrDefault(), diff)
			}
		}
	}
}

// nft runs nft in ns with stdin as its input.
func nft(ns *netnstest.NS, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := ns.Command(ctx, "nft", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// planObjects lists a plan's chains with their rule counts, and its sets
// and maps.
func planObjects(p *nftables.Plan) []string {
	var out []string
	for i := range p.Chains {
		out = append(out, fmt.Sprintf("chain %s %d", p.Chains[i].Name, p.Chains[i].RuleCount()))
	}
	for i := range p.Sets {
		kind := "set"
		if p.Sets[i].IsMap() {
			kind = "map"
		}
		out = append(out, kind+" "+p.Sets[i].Name)
	}
	return sortedCopy(out)
}

// listedObjects reads the same from "nft list table" output: chains
// with the number of lines in them that are rules (not the type or
// comment line), sets and maps.
func listedObjects(listing string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(listing))
	chain, rules := "", 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case chain != "" && f[0] == "}":
			out = append(out, fmt.Sprintf("chain %s %d", chain, rules))
			chain = ""
		case chain != "":
			if f[0] != "type" && f[0] != "comment" {
				rules++
			}
		case len(f) == 3 && f[0] == "chain" && f[2] == "{":
			chain, rules = f[1], 0
		case len(f) == 3 && (f[0] == "set" || f[0] == "map") && f[2] == "{":
			out = append(out, f[0]+" "+f[1])
		}
	}
	return sortedCopy(out)
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
