package iptables

import (
	"errors"
	"testing"
)

func TestErrorString(t *testing.T) {
	inner := errors.New("boom")
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"everything", &Error{Op: "parse", Table: TableNAT, Chain: "KUBE-X", Line: 12, Rule: 3, Err: inner},
			"iptables parse line 12 nat/KUBE-X rule 3: boom"},
		{"table only", &Error{Op: "validate", Table: TableFilter, Err: inner}, "iptables validate table filter: boom"},
		{"chain only", &Error{Op: "trace", Chain: "X", Err: inner}, "iptables trace chain X: boom"},
		{"no place", &Error{Op: "apply", Err: inner}, "iptables apply: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, inner) {
				t.Errorf("errors.Is(%v, inner) = false", tt.err)
			}
		})
	}
}
