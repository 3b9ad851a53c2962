package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestUsage checks the command lines run refuses before it touches any
// namespace.
func TestUsage(t *testing.T) {
	t.Setenv("CNI_NETNS", "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no namespace", nil, "--netns (or $CNI_NETNS) is required"},
		{"bad mode", []string{"--netns", "/run/netns/x", "--mode", "ipvs"}, `--mode "ipvs": want iptables or nftables`},
		{"bad cidr", []string{"--netns", "/run/netns/x", "--cluster-cidr", "10.244.0.0"}, "--cluster-cidr"},
		{"stray argument", []string{"--netns", "/run/netns/x", "apply"}, "unexpected arguments: apply"},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Errorf("run(%q) = %v, want errUsage", tc.args, err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("run(%q) printed %q, want it to say %q", tc.args, stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("run(%q) wrote %q to stdout, want nothing", tc.args, stdout.String())
			}
		})
	}
}

// TestCompileExampleCluster checks that without -f the embedded example
// cluster is compiled for node-a.
func TestCompileExampleCluster(t *testing.T) {
	var stderr bytes.Buffer
	for _, mode := range []string{"iptables", "nftables"} {
		o, err := parseArgs([]string{"--netns", "/run/netns/x", "--mode", mode, "--cluster-cidr", "10.244.0.0/16"}, &stderr)
		if err != nil {
			t.Fatalf("parseArgs = %v", err)
		}
		plan, services, err := compile(o, &stderr)
		if err != nil {
			t.Fatalf("compile(%s) = %v", mode, err)
		}
		if services == 0 || string(plan.Mode) != mode || len(plan.IPTables)+len(plan.NFTables) == 0 {
			t.Errorf("compile(%s) = mode %s, %d services, %d+%d plans; want the example's services", mode, plan.Mode, services, len(plan.IPTables), len(plan.NFTables))
		}
	}
}
