package translate

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// ipvsText compiles st in ModeIPVS and returns its four texts, each
// preceded by a comment line naming it. Every part must validate.
func ipvsText(t *testing.T, st *proxy.State, opts ...Option) string {
	t.Helper()
	p, err := Compile(st, ModeIPVS, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if err := p.IPSets.Validate(); err != nil {
		t.Errorf("ipset plan does not validate: %v", err)
	}
	if err := p.IPVS.Validate(); err != nil {
		t.Errorf("ipvs plan does not validate: %v", err)
	}
	var b strings.Builder
	b.WriteString("# ipset\n" + p.IPSets.String())
	b.WriteString("# ipvsadm\n" + p.IPVS.String())
	b.WriteString("# addresses\n" + p.IPVS.AddressText())
	for _, ip := range p.IPTables {
		if err := ip.Validate(); err != nil {
			t.Errorf("%s plan does not validate: %v", ip.FamilyOrDefault(), err)
		}
		b.WriteString("# iptables " + string(ip.FamilyOrDefault()) + "\n")
		b.WriteString(ip.String())
	}
	return b.String()
}

func TestCompileIPVSGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := ipvsText(t, tc.st, tc.opts...)
			checkGolden(t, filepath.Join("testdata", "ipvs-"+tc.name+".golden"), got, "Compile(ipvs, "+tc.name+")")
		})
	}
}

func TestCompileIPVSParallelismAndScheduler(t *testing.T) {
	st := benchState(1200, 3)
	one := ipvsText(t, st, WithParallelism(1))
	if many := ipvsText(t, st, WithParallelism(5)); many != one {
		t.Errorf("Compile(ipvs) with 5 goroutines differs from 1")
	}
	p, err := Compile(st, ModeIPVS, WithIPVSScheduler(ipvs.SourceHashing))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range p.IPVS.VirtualServers {
		if v.Scheduler != ipvs.SourceHashing {
			t.Fatalf("virtual server %s has scheduler %q, want sh", v.Addr, v.Scheduler)
		}
	}
	if _, err := Compile(st, ModeIPVS, WithIPVSScheduler("fastest")); !errors.Is(err, ipvs.ErrInvalidPlan) {
		t.Errorf("Compile with scheduler fastest = %v, want ErrInvalidPlan", err)
	}
	// The rules do not grow with the number of services.
	small, err := Compile(benchState(3, 3), ModeIPVS)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := small.IPTables[0].String(), p.IPTables[0].String(); a != b {
		t.Errorf("fixed rules differ between 3 and 1200 services:\n%s\n---\n%s", a, b)
	}
}
