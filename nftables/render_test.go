package nftables

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestWriteToGolden(t *testing.T) {
	got := testPlan(t).String()
	path := filepath.Join("testdata", "plan.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteToCount(t *testing.T) {
	p := testPlan(t)
	var b strings.Builder
	n, err := p.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Errorf("WriteTo() = %d, %v; wrote %d bytes", n, err, b.Len())
	}
}

func TestWriteToEmptyIPv6(t *testing.T) {
	p := &Plan{Table: Table{Family: IPv6, Name: "t"}}
	want := "add table ip6 t\ndelete table ip6 t\nadd table ip6 t\n\n"
	if got := p.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestWriteToRefusesUnsafeText(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Plan)
		wantErr error
	}{
		{"table comment quote", func(p *Plan) { p.Table.Comment = `a" ; flush ruleset ; "` }, ErrUnsafeText},
		{"table name", func(p *Plan) { p.Table.Name = "kube proxy" }, ErrName},
		{"family", func(p *Plan) { p.Table.Family = "inet6" }, ErrSyntax},
		{"chain comment newline", func(p *Plan) { p.Chains[0].Comment = "a\nb" }, ErrUnsafeText},
		{"chain name", func(p *Plan) { p.Chains[0].Name = "a b" }, ErrName},
		{"set name", func(p *Plan) { p.Sets[0].Name = "a;b" }, ErrName},
		{"element comment", func(p *Plan) { p.Sets[0].Elements[0].Comment = `"` }, ErrUnsafeText},
		{"long comment", func(p *Plan) { p.Sets[0].Comment = strings.Repeat("x", MaxCommentLen+1) }, ErrUnsafeText},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPlan(t)
			tt.mod(p)
			var b strings.Builder
			if _, err := p.WriteTo(&b); !errors.Is(err, tt.wantErr) {
				t.Fatalf("WriteTo() error = %v, want %v", err, tt.wantErr)
			}
			if b.Len() != 0 {
				t.Errorf("WriteTo() wrote %q before failing", b.String())
			}
			if s := p.String(); !strings.HasPrefix(s, "# render error: ") || strings.Count(s, "\n") != 1 {
				t.Errorf("String() = %q, want one comment line naming the error", s)
			}
		})
	}
}
