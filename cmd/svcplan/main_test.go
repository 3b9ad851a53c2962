package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), err
}

func exitCode(err error) int {
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

func TestPlanEmbeddedExample(t *testing.T) {
	out, stderr, err := runCLI(t, "plan", "--mode", "iptables")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "embedded example") {
		t.Errorf("stderr does not say the embedded example is used: %q", stderr)
	}
	for _, want := range []string{
		"# ipv4: input for iptables-restore --noflush",
		"# ipv6: input for ip6tables-restore --noflush",
		"*nat", "*filter", ":KUBE-SERVICES - [0:0]", "COMMIT",
		"-A KUBE-SERVICES -m comment --comment \"default/kubernetes:https cluster IP\"",
		"KUBE-SVC-NPX46M4PTMTKRN6Y",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q", want)
		}
	}
}

func TestPlanFamily(t *testing.T) {
	out, _, err := runCLI(t, "plan", "--family", "ipv6")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "10.96.0.1 ") || strings.HasPrefix(out, "#") {
		t.Errorf("--family ipv6 printed IPv4 rules or a label:\n%.400s", out)
	}
}

func TestTrace(t *testing.T) {
	out, stderr, err := runCLI(t, "trace", "--src", "10.244.1.5", "--dst", "10.96.0.1:443")
	if err != nil {
		t.Fatalf("trace: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "10.0.0.10:6443") {
		t.Errorf("trace to the kubernetes service does not reach 10.0.0.10:6443:\n%s", out)
	}
}

func TestStatsAndDiff(t *testing.T) {
	out, _, err := runCLI(t, "stats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "nat") || !strings.Contains(out, "filter") {
		t.Errorf("stats lacks tables:\n%s", out)
	}
	dir := t.TempDir()
	old := filepath.Join(dir, "old.yaml")
	cur := filepath.Join(dir, "new.yaml")
	data, err := os.ReadFile("../../examples/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(old, data, 0o644)
	os.WriteFile(cur, bytes.ReplaceAll(data, []byte("10.96.0.1]"), []byte("10.96.0.2]")), 0o644)
	out, stderr, err := runCLI(t, "diff", "-f", old, "-f", old, "--node", "node-a")
	if err != nil || !strings.Contains(out, "no changes") {
		t.Errorf("diff of a file with itself = %q, %v (%s)", out, err, stderr)
	}
	out, stderr, err = runCLI(t, "diff", "-f", old, "-f", cur, "--node", "node-a")
	if err != nil || !strings.Contains(out, "~ ipv4 nat KUBE-SERVICES") {
		t.Errorf("diff after changing a cluster IP = %q, %v (%s)", out, err, stderr)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: v1
kind: Service
metadata: {name: "Bad Name", namespace: default}
spec:
  clusterIP: 10.96.0.9
  ports: [{name: http, port: 99999}]
`), 0o644)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantMsg  string
	}{
		{"no command", nil, 2, "usage"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"plan", "--no-such-flag"}, 2, "no-such-flag"},
		{"missing file", []string{"plan", "-f", filepath.Join(dir, "nope.yaml")}, 1, "no such file"},
		{"invalid state", []string{"plan", "-f", bad, "--node", "n"}, 1, "99999"},
		{"unknown mode", []string{"plan", "--mode", "ebpf"}, 1, "unknown"},
		{"bad dst", []string{"trace", "--src", "10.0.0.1", "--dst", "10.96.0.1"}, 1, "--dst"},
		{"bad protocol", []string{"trace", "--src", "10.0.0.1", "--dst", "10.96.0.1:80/icmp"}, 1, "icmp"},
		{"mixed families", []string{"trace", "--src", "fd00::1", "--dst", "10.96.0.1:80"}, 1, "families"},
		{"diff needs two", []string{"diff"}, 1, "two"},
		{"stray argument", []string{"plan", "extra"}, 2, "unexpected argument"},
		{"bad cidr", []string{"plan", "--cluster-cidr", "10.0.0.0/99"}, 1, "--cluster-cidr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runCLI(t, tt.args...)
			if got := exitCode(err); got != tt.wantCode {
				t.Errorf("exit code = %d, want %d (err %v)", got, tt.wantCode, err)
			}
			msg := stderr
			if err != nil {
				msg += err.Error()
			}
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q does not mention %q", msg, tt.wantMsg)
			}
		})
	}
}

func TestModes(t *testing.T) {
	tests := []struct {
		mode      string
		planWants []string
		traceWant string
	}{
		{"nftables", []string{"# ip: input for nft -f", "add table ip kube-proxy", "add map ip kube-proxy service-ips", "table ip6 kube-proxy"}, "10.0.0.10:6443"},
		{"userspace", []string{"# userspace proxy listeners", "KUBE-PORTALS-CONTAINER", "default/kubernetes:https"}, `listener "default/kubernetes:https"`},
		{"ipvs", []string{"# ipset: input for ipset restore", "-A -t 10.96.0.1:443 -s rr", "KUBE-IPVS-FILTER"}, "forward 10.0.0.10:6443"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			out, stderr, err := runCLI(t, "plan", "--mode", tt.mode)
			if err != nil {
				t.Fatalf("plan --mode %s: %v\n%s", tt.mode, err, stderr)
			}
			for _, want := range tt.planWants {
				if !strings.Contains(out, want) {
					t.Errorf("plan --mode %s lacks %q", tt.mode, want)
				}
			}
			out, stderr, err = runCLI(t, "trace", "--mode", tt.mode, "--src", "10.0.0.2", "--dst", "10.96.0.1:443")
			if err != nil || !strings.Contains(out, tt.traceWant) {
				t.Errorf("trace --mode %s = %q, %v (%s); want it to mention %q", tt.mode, out, err, stderr, tt.traceWant)
			}
			if _, stderr, err := runCLI(t, "stats", "--mode", tt.mode); err != nil {
				t.Errorf("stats --mode %s: %v (%s)", tt.mode, err, stderr)
			}
		})
	}
}
