package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestApplyAndCleanupInNetNS(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-save", "nft")
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx := context.Background()
	save := func() string {
		out, err := ns.Exec(ctx, "iptables-save")
		if err != nil {
			t.Fatalf("iptables-save: %v\n%s", err, out)
		}
		nft, err := ns.Exec(ctx, "nft", "list", "ruleset")
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, nft)
		}
		return string(out) + string(nft)
	}
	for _, tc := range []struct {
		mode, wantOut, wantRules string
	}{
		{"iptables", "applied ipv4: ", ":KUBE-SERVICES"},
		{"nftables", "applied ip table kube-proxy: ", "table ip kube-proxy"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(ctx, []string{"apply", "--mode", tc.mode, "--netns", path}, &stdout, &stderr); err != nil {
			t.Fatalf("apply --mode %s = %v\n%s", tc.mode, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.wantOut) {
			t.Errorf("apply --mode %s printed %q, want %q", tc.mode, stdout.String(), tc.wantOut)
		}
		if got := save(); !strings.Contains(got, tc.wantRules) {
			t.Errorf("after apply --mode %s the namespace lacks %q:\n%s", tc.mode, tc.wantRules, got)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"cleanup", "--netns", path}, &stdout, &stderr); err != nil {
		t.Fatalf("cleanup = %v\n%s", err, stderr.String())
	}
	if got := save(); strings.Contains(got, "KUBE-") || strings.Contains(got, "kube-proxy") {
		t.Errorf("after cleanup the namespace holds:\n%s", got)
	}
}

func TestApplyUserspaceRunsUntilStopped(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-save")
	ns := netnstest.NewNS(t)
	path := "/run/netns/" + ns.Name()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"apply", "--mode", "userspace", "--netns", path}, &stdout, &stderr) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "userspace proxy running") {
		select {
		case err := <-done:
			t.Fatalf("apply --mode userspace returned %v before running\n%s%s", err, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply --mode userspace did not start within 30s:\n%s%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, err := ns.Exec(context.Background(), "iptables-save", "-t", "nat")
	if err != nil || !strings.Contains(string(out), "KUBE-PORTALS-CONTAINER") {
		t.Fatalf("while running, nat lacks the portals (%v):\n%s", err, out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("apply --mode userspace = %v after the stop\n%s", err, stderr.String())
	}
	out, err = ns.Exec(context.Background(), "iptables-save")
	if err != nil || strings.Contains(string(out), "KUBE-") {
		t.Errorf("after the stop the portal rules are left (%v):\n%s", err, out)
	}
	if !strings.Contains(stdout.String(), "its rules are removed") {
		t.Errorf("stdout = %q", stdout.String())
	}
}
