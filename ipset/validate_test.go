package ipset

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	a := netip.MustParseAddr
	hash := func(name string, typ Type, fam Family, es ...Entry) Set {
		return Set{Name: name, Type: typ, Family: fam, Entries: es}
	}
	tests := []struct {
		name    string
		sets    []Set
		wantErr string // substring; empty means valid
	}{
		{name: "sample", sets: samplePlan().Sets},
		{name: "empty plan"},
		{name: "long name", sets: []Set{hash(strings.Repeat("K", 32), TypeHashIP, IPv4)}, wantErr: "must be 1..31 bytes"},
		{name: "name with space", sets: []Set{hash("A B", TypeHashIP, IPv4)}, wantErr: "not allowed"},
		{name: "duplicate name", sets: []Set{hash("A", TypeHashIP, IPv4), hash("A", TypeHashIP, IPv4)}, wantErr: "name appears twice"},
		{name: "unknown type", sets: []Set{hash("A", "list:set", "")}, wantErr: "unknown type"},
		{name: "hash without family", sets: []Set{hash("A", TypeHashIP, "")}, wantErr: "must be inet or inet6"},
		{name: "bitmap with family", sets: []Set{{Name: "A", Type: TypeBitmapPort, Family: IPv4, PortRange: PortRange{1, 2}}}, wantErr: "family on a bitmap"},
		{name: "reversed range", sets: []Set{{Name: "A", Type: TypeBitmapPort, PortRange: PortRange{20, 10}}}, wantErr: "reversed"},
		{name: "port outside range", sets: []Set{{Name: "A", Type: TypeBitmapPort, PortRange: PortRange{30000, 32767}, Entries: []Entry{{Port: 80}}}}, wantErr: "outside the range"},
		{name: "wrong family", sets: []Set{hash("A", TypeHashIP, IPv4, Entry{IP: a("fd00::1")})}, wantErr: "not of family inet"},
		{name: "second address of other family", sets: []Set{hash("A", TypeHashIPPortIP, IPv6, Entry{IP: a("fd00::1"), Protocol: TCP, Port: 1, IP2: a("10.0.0.1")})}, wantErr: "not of family inet6"},
		{name: "missing protocol", sets: []Set{hash("A", TypeHashIPPort, IPv4, Entry{IP: a("10.0.0.1"), Port: 80})}, wantErr: "must be tcp, udp or sctp"},
		{name: "missing IP2", sets: []Set{hash("A", TypeHashIPPortIP, IPv4, Entry{IP: a("10.0.0.1"), Protocol: TCP, Port: 80})}, wantErr: "second address missing"},
		{name: "unmasked net", sets: []Set{hash("A", TypeHashIPPortNet, IPv4, Entry{IP: a("10.0.0.1"), Protocol: TCP, Port: 80, Net: netip.MustParsePrefix("10.0.0.1/24")})}, wantErr: "not masked"},
		{name: "port on hash:ip", sets: []Set{hash("A", TypeHashIP, IPv4, Entry{IP: a("10.0.0.1"), Port: 80})}, wantErr: "hash:ip member with a protocol"},
		{name: "unsorted", sets: []Set{hash("A", TypeHashIP, IPv4, Entry{IP: a("10.0.0.2")}, Entry{IP: a("10.0.0.1")})}, wantErr: "not sorted"},
		{name: "duplicate entry", sets: []Set{hash("A", TypeHashIP, IPv4, Entry{IP: a("10.0.0.1")}, Entry{IP: a("10.0.0.1")})}, wantErr: "listed twice"},
		{name: "comment with newline", sets: []Set{{Name: "A", Type: TypeHashIP, Family: IPv4, Comment: "x\ncreate B hash:ip"}}, wantErr: "not printable ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Plan{Sets: tc.sets}).Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidPlan) {
				t.Errorf("Validate() = %v, want an ErrInvalidPlan error containing %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseSave(f *testing.F) {
	f.Add(sampleText)
	f.Add(kernelSave)
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParseSave(text)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			return
		}
		again, err := ParseSave(p.String())
		if err != nil {
			t.Fatalf("ParseSave(String()) = %v for a valid plan parsed from %q", err, text)
		}
		for i := range p.Sets {
			if !p.Sets[i].Equal(&again.Sets[i]) {
				t.Fatalf("round trip changed set %s", p.Sets[i].Name)
			}
		}
	})
}
