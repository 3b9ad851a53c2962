package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// TestRefusesOwnNamespace checks that cni will not program the namespace
// it runs in, and says so before writing anything.
func TestRefusesOwnNamespace(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--netns", "/proc/self/ns/net"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "own network namespace") {
		t.Errorf("run(--netns /proc/self/ns/net) = %v, want a refusal", err)
	}
}

// manifest is a cluster, as kubectl prints it, with one ClusterIP service
// whose one endpoint is pod, on node-a at nodeIP.
func manifest(nodeIP, pod netip.Addr) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: %s
---
apiVersion: v1
kind: Service
metadata:
  namespace: shop
  name: web
spec:
  type: ClusterIP
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: shop
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  protocol: TCP
  port: 8080
endpoints:
- addresses: [%s]
  conditions: {ready: true}
  nodeName: node-b
`, nodeIP, pod)
}

// TestApplyAndCleanup runs cni into the node namespace of a fresh
// topology in each mode: a client reaches the pod through the cluster IP,
// and after --cleanup it does not and no rule is left.
func TestApplyAndCleanup(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		tools []string
		list  []string // lists the namespace's rules
		owned string   // what the list shows of cni's rules
	}{
		{"iptables", []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"}, []string{"iptables-save"}, "KUBE-"},
		{"nftables", []string{"ip", "nft"}, []string{"nft", "list", "tables"}, "kube-proxy"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			netnstest.Require(t, tc.tools...)
			topo := netnstest.New(t, netnstest.WithoutIPv6())
			pod := topo.AddPod(t, netnstest.Remote)
			backend := netip.AddrPortFrom(pod.Addr(netnstest.IPv4), 8080)
			pod.Serve(t, "tcp", backend)
			file := filepath.Join(t.TempDir(), "cluster.yaml")
			if err := os.WriteFile(file, []byte(manifest(topo.NodeIP(netnstest.IPv4), backend.Addr())), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			path := "/run/netns/" + topo.Node().Name()
			args := []string{"--netns", path, "--mode", tc.mode}

			var stdout, stderr bytes.Buffer
			if err := run(ctx, append(args, "-f", file, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16"), &stdout, &stderr); err != nil {
				t.Fatalf("run = %v\nstderr: %s", err, stderr.String())
			}
			if want := fmt.Sprintf("applied 1 services in %s mode to %s\n", tc.mode, path); stdout.String() != want {
				t.Errorf("run printed %q, want %q", stdout.String(), want)
			}
			vip := netip.MustParseAddrPort("10.96.0.10:80")
			for range 3 {
				if r := topo.Client().Dial(ctx, "tcp", vip, netnstest.Timeout(2*time.Second)); !r.OK() || r.Backend != backend {
					t.Errorf("Dial(%s) after apply = %v, want backend %s", vip, r, backend)
				}
			}
			if out := list(t, topo.Node(), tc.list); !strings.Contains(out, tc.owned) {
				t.Errorf("%s after apply shows no %s:\n%s", tc.list[0], tc.owned, out)
			}

			stdout.Reset()
			if err := run(ctx, append(args, "--cleanup"), &stdout, &stderr); err != nil {
				t.Fatalf("run --cleanup = %v", err)
			}
			if r := topo.Client().Dial(ctx, "tcp", vip, netnstest.Timeout(time.Second)); r.OK() {
				t.Errorf("Dial(%s) after cleanup reached %s, want no answer", vip, r.Backend)
			}
			if out := list(t, topo.Node(), tc.list); strings.Contains(out, tc.owned) {
				t.Errorf("%s after cleanup still shows %s:\n%s", tc.list[0], tc.owned, out)
			}
		})
	}
}

// list runs a listing command in ns and returns its output.
func list(t *testing.T, ns *netnstest.NS, cmd []string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), cmd[0], cmd[1:]...)
	if err != nil {
		t.Fatalf("%s in %s: %v", strings.Join(cmd, " "), ns, err)
	}
	return string(out)
}
