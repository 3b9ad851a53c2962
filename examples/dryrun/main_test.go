package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDryRun runs the example, so that it cannot rot: its plan must send
// the NodePort packet to both endpoints, masqueraded.
func TestDryRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, exampleState()); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{
		"-A KUBE-NODEPORTS -m comment --comment shop/cart:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-",
		"50.00% accept 10.244.1.5:8080 dnat masquerade",
		"50.00% accept 10.244.2.5:8080 dnat masquerade",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
