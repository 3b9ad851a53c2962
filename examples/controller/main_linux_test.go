package main

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplan/svcplan/internal/netnstest"
)

// TestRunInNetNS runs the controller against the fake clientset into the
// node namespace of a fresh topology, with the real appliers, in each
// mode: a client reaches the pod through the cluster IP, and after the
// EndpointSlice changes through the API, the new pod.
func TestRunInNetNS(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		tools []string
	}{
		{"iptables", []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"}},
		{"nftables", []string{"ip", "nft"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			netnstest.Require(t, tc.tools...)
			topo := netnstest.New(t, netnstest.WithoutIPv6())
			var backends []netip.AddrPort
			for range 2 {
				pod := topo.AddPod(t, netnstest.Remote)
				b := netip.AddrPortFrom(pod.Addr(netnstest.IPv4), 8080)
				pod.Serve(t, "tcp", b)
				backends = append(backends, b)
			}
			node, svc, es := cluster(topo.NodeIP(netnstest.IPv4).String(), backends[0].Addr().String())
			client := fake.NewClientset(node, svc, es)
			e := env{newClient: func(string) (kubernetes.Interface, error) { return client, nil }}
			p := start(t, []string{
				"--node", "node-a", "--mode", tc.mode, "--netns", "/run/netns/" + topo.Node().Name(),
				"--cluster-cidr", "10.244.0.0/16", "--metrics-address", "", "--healthz-address", "127.0.0.1:0",
				"--min-sync-period", "10ms",
			}, e, "healthz")
			t.Cleanup(func() {
				// The rules stay after exit; remove them as an operator would.
				if err := p.exit(); err != nil {
					t.Errorf("run after cancel = %v", err)
				}
				var logs syncBuffer
				e.stderr = &logs
				if err := run(context.Background(), []string{"--cleanup", "--netns", "/run/netns/" + topo.Node().Name()}, e); err != nil {
					t.Errorf("run --cleanup = %v\nlog:\n%s", err, logs.String())
				}
			})

			vip := netip.MustParseAddrPort("10.96.0.10:80")
			reaches := func(want netip.AddrPort) func() bool {
				return func() bool {
					r := topo.Client().Dial(context.Background(), "tcp", vip, netnstest.Timeout(time.Second))
					return r.OK() && r.Backend == want
				}
			}
			waitUntil(t, "the client to reach "+backends[0].String(), reaches(backends[0]))
			if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(context.Background(), slice(backends[1].Addr().String()), metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the client to reach "+backends[1].String()+" after the slice changed", reaches(backends[1]))
			if code, body := p.get("healthz", "/healthz"); code != 200 {
				t.Errorf("GET /healthz = %d %q, want 200", code, body)
			}
		})
	}
}
