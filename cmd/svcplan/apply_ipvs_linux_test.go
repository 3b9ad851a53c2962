package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/vmtest"
	"github.com/svcplan/svcplan/ipvs"
)

// TestVM boots the VM tier's kernel, which has IPVS, and runs this
// package's TestGuest tests there. It skips without root, qemu or the VM
// assets (fails under SVCPLAN_REQUIRE_VM=1).
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Config{Run: "^TestGuest", Timeout: 5 * time.Minute})
}

// nsOutput runs a tool in ns, failing t on an error.
func nsOutput(t *testing.T, ns *netnstest.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestGuestApplyIPVS runs "svcplan apply --mode ipvs" and then "svcplan
// cleanup" into a namespace: the sets, virtual servers, kube-ipvs0
// addresses and rules appear, and the cleanup removes them all.
func TestGuestApplyIPVS(t *testing.T) {
	vmtest.RequireGuest(t, "TestVM")
	netnstest.Require(t, "ip", "ipvsadm", "ipset", "iptables-save")
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"apply", "--mode", "ipvs", "--netns", path}, &stdout, &stderr); err != nil {
		t.Fatalf("apply --mode ipvs = %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"applied ipsets: ", "applied ipvs: ", " addresses on kube-ipvs0\n", "applied ipv4: "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("apply --mode ipvs printed %q, want %q in it", stdout.String(), want)
		}
	}
	if out := nsOutput(t, ns, "ipvsadm", "-S", "-n"); !strings.Contains(out, "-A -t 10.96.0.1:443 -s rr") {
		t.Errorf("after apply ipvsadm -S -n lacks the kubernetes service:\n%s", out)
	}
	if out := nsOutput(t, ns, "ip", "-o", "addr", "show", "dev", "kube-ipvs0"); !strings.Contains(out, "10.96.0.1/32") {
		t.Errorf("after apply kube-ipvs0 lacks 10.96.0.1:\n%s", out)
	}
	if out := nsOutput(t, ns, "ipset", "list", "-n"); !strings.Contains(out, "KUBE-CLUSTER-IP") {
		t.Errorf("after apply ipset list -n lacks KUBE-CLUSTER-IP:\n%s", out)
	}
	if out := nsOutput(t, ns, "iptables-save"); !strings.Contains(out, "--match-set KUBE-CLUSTER-IP") {
		t.Errorf("after apply iptables-save lacks the set match:\n%s", out)
	}
	stdout.Reset()
	if err := run(ctx, []string{"cleanup", "--mode", "ipvs", "--netns", path}, &stdout, &stderr); err != nil {
		t.Fatalf("cleanup = %v\n%s", err, stderr.String())
	}
	if out := nsOutput(t, ns, "ipvsadm", "-S", "-n"); strings.TrimSpace(out) != "" {
		t.Errorf("after cleanup ipvsadm -S -n shows:\n%s", out)
	}
	if out, err := ns.Exec(ctx, "ip", "link", "show", "kube-ipvs0"); err == nil {
		t.Errorf("after cleanup kube-ipvs0 exists:\n%s", out)
	}
	if out := nsOutput(t, ns, "ipset", "list", "-n"); strings.Contains(out, "KUBE-") {
		t.Errorf("after cleanup ipset list -n shows:\n%s", out)
	}
	if out := nsOutput(t, ns, "iptables-save"); strings.Contains(out, "KUBE-") {
		t.Errorf("after cleanup iptables-save shows:\n%s", out)
	}
}

// TestApplyIPVSWithoutIPVS runs "svcplan apply --mode ipvs" where the
// kernel has no IPVS (this machine; the VM's kernel has it): the error
// says so and how to fix it, and cleanup still works.
func TestApplyIPVSWithoutIPVS(t *testing.T) {
	netnstest.Require(t, "ipset", "iptables", "iptables-save")
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS: TestGuestApplyIPVS covers apply --mode ipvs")
	}
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"apply", "--mode", "ipvs", "--netns", path}, &stdout, &stderr)
	if !errors.Is(err, ipvs.ErrNoIPVS) || !strings.Contains(err.Error(), "modprobe ip_vs") {
		t.Fatalf("apply --mode ipvs without IPVS = %v, want ip_vs module not loaded with a hint", err)
	}
	if err := run(ctx, []string{"cleanup", "--mode", "ipvs", "--netns", path}, &stdout, &stderr); err != nil {
		t.Fatalf("cleanup without IPVS = %v\n%s", err, stderr.String())
	}
	if out := nsOutput(t, ns, "ipset", "list", "-n"); strings.Contains(out, "KUBE-") {
		t.Errorf("after cleanup ipset list -n shows:\n%s", out)
	}
}
