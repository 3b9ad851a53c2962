package ipset_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/svcplan/svcplan/ipset"
)

func fakeSaved(t *testing.T, f *ipset.Fake, want *ipset.Plan) {
	t.Helper()
	w := ipset.Plan{}
	for _, name := range setNames(want) {
		w.Sets = append(w.Sets, *want.Set(name))
	}
	if diff := cmp.Diff(&w, f.Dump(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.IgnoreFields(ipset.Set{}, "Comment")); diff != "" {
		t.Errorf("Fake.Dump() (-plan +fake):\n%s", diff)
	}
}

func TestFakeApply(t *testing.T) {
	ctx := context.Background()
	f := ipset.NewFake()
	p := allTypes()
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	fakeSaved(t, f, p)
	if st := f.Stats(); st.LastOperations != len(p.Sets)+p.Len() {
		t.Errorf("first Apply: LastOperations = %d, want %d", st.LastOperations, len(p.Sets)+p.Len())
	}
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.LastOperations != 0 {
		t.Errorf("no-op Apply: LastOperations = %d, want 0", st.LastOperations)
	}
	p.Sets[0].Entries = p.Sets[0].Entries[1:]
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	fakeSaved(t, f, p)
	if st := f.Stats(); st.LastOperations != 1 || st.Deletes != 1 {
		t.Errorf("Apply removing one member: Stats = %+v, want one delete", st)
	}
}

func TestFakeRefuses(t *testing.T) {
	f := ipset.NewFake()
	tests := []struct {
		name    string
		plan    *ipset.Plan
		wantErr error
	}{
		{
			name:    "IPv6 member in an IPv4 set",
			plan:    &ipset.Plan{Sets: []ipset.Set{{Name: "X", Type: ipset.TypeHashIP, Family: ipset.IPv4, Entries: []ipset.Entry{{IP: ip("fd00::1")}}}}},
			wantErr: ipset.ErrEntryFamily,
		},
		{
			name:    "port outside the bitmap",
			plan:    &ipset.Plan{Sets: []ipset.Set{{Name: "Y", Type: ipset.TypeBitmapPort, PortRange: ipset.PortRange{First: 30000, Last: 32767}, Entries: []ipset.Entry{{Port: 80}}}}},
			wantErr: ipset.ErrEntry,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.Load(tt.plan); !errors.Is(err, tt.wantErr) {
				t.Errorf("Load() = %v, want %v", err, tt.wantErr)
			}
			if err := f.Apply(context.Background(), tt.plan); err == nil {
				t.Errorf("Apply() = nil, want an error")
			}
		})
	}
	if err := f.Delete("NOPE", ipset.Entry{Port: 1}); !errors.Is(err, ipset.ErrNoSuchSet) {
		t.Errorf("Delete(unknown set) = %v, want ErrNoSuchSet", err)
	}
	dup := &ipset.Plan{Sets: []ipset.Set{{Name: "Z", Type: ipset.TypeHashIP, Family: ipset.IPv4,
		Entries: []ipset.Entry{{IP: ip("10.0.0.1")}, {IP: ip("10.0.0.1")}}}}}
	if err := f.Apply(context.Background(), dup); err == nil {
		t.Errorf("Apply(duplicate member) = nil, want an error")
	}
}

func TestFakeDriftAndOwnership(t *testing.T) {
	ctx := context.Background()
	f := ipset.NewFake()
	foreign := &ipset.Plan{Sets: []ipset.Set{{Name: "docker-allow", Type: ipset.TypeHashIP, Family: ipset.IPv4, Entries: []ipset.Entry{{IP: ip("172.17.0.2")}}}}}
	if err := f.Load(foreign); err != nil {
		t.Fatal(err)
	}
	p := allTypes()
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := f.Destroy("KUBE-IPVS-IPS"); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete("KUBE-CLUSTER-IP", p.Sets[0].Entries[0]); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Repairs != 2 || st.LastOperations != 2+1+1 {
		t.Errorf("Apply after drift: Stats = %+v, want 2 repairs in 4 writes", st)
	}
	// A stale set still referenced stays until it is released.
	if err := f.SetReferences("KUBE-IPVS-IPS", 1); err != nil {
		t.Fatal(err)
	}
	p.Sets = p.Sets[:1]
	if err := f.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.InUse != 1 {
		t.Errorf("Apply with a referenced stale set: InUse = %d, want 1", st.InUse)
	}
	if err := f.Cleanup(ctx); !errors.Is(err, ipset.ErrSetInUse) {
		t.Errorf("Cleanup with a referenced set = %v, want ErrSetInUse", err)
	}
	if err := f.SetReferences("KUBE-IPVS-IPS", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	fakeSaved(t, f, foreign)
}

func TestFakeSwap(t *testing.T) {
	ctx := context.Background()
	f := ipset.NewFake()
	mk := func(first int) *ipset.Plan {
		s := ipset.Set{Name: "KUBE-IPVS-IPS", Type: ipset.TypeHashIP, Family: ipset.IPv4}
		for i := range 20 {
			s.Entries = append(s.Entries, ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(first + i)})})
		}
		return &ipset.Plan{Sets: []ipset.Set{s}}
	}
	if err := f.Apply(ctx, mk(0)); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, mk(100)); err != nil {
		t.Fatal(err)
	}
	fakeSaved(t, f, mk(100))
	if st := f.Stats(); st.Swaps != 1 || st.LastOperations != 23 {
		t.Errorf("Apply replacing every member: Stats = %+v, want one swap in 23 writes", st)
	}
}
