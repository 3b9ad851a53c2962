package ipset

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// TestRestoreMatchesSave is the dry-run invariant for ipsets: the plan's
// text loads with "ipset restore" into a fresh namespace, and "ipset save"
// there parses back into the same plan.
func TestRestoreMatchesSave(t *testing.T) {
	netnstest.Require(t, "ipset")
	ns := netnstest.NewNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := samplePlan()
	cmd := ns.Command(ctx, "ipset", "restore")
	cmd.Stdin = strings.NewReader(p.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore in %s: %v: %s", ns, err, out)
	}
	out, err := ns.Exec(ctx, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSave(string(out))
	if err != nil {
		t.Fatalf("ParseSave(ipset save): %v\n%s", err, out)
	}
	if len(got.Sets) != len(p.Sets) {
		t.Fatalf("ipset save shows %d sets, want %d:\n%s", len(got.Sets), len(p.Sets), out)
	}
	for i := range p.Sets {
		if !p.Sets[i].Equal(&got.Sets[i]) {
			t.Errorf("set %s after restore = %+v, want %+v", p.Sets[i].Name, got.Sets[i], p.Sets[i])
		}
	}
}
