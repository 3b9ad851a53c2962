package kube

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/iptables"
)

// TestWatcherDrivesKernel runs the Watcher from the fake API into real
// iptables rules in a fresh node namespace, and sends real TCP through a
// cluster IP: first to one pod, then, after the EndpointSlice is changed
// through the API, to another.
func TestWatcherDrivesKernel(t *testing.T) {
	netnstest.Require(t, "ip", "iptables-restore", "iptables-save")
	topo := netnstest.New(t, netnstest.WithoutIPv6())
	const port = 8080
	pods := []netnstest.Pod{topo.AddPod(t, netnstest.Remote), topo.AddPod(t, netnstest.Remote)}
	backends := make([]netip.AddrPort, len(pods))
	for i, p := range pods {
		backends[i] = netip.AddrPortFrom(p.Addr(netnstest.IPv4), port)
		p.Serve(t, "tcp", backends[i])
	}
	k, err := iptables.New(iptables.IPv4, iptables.WithNetNS("/run/netns/"+topo.Node().Name()))
	if err != nil {
		t.Fatalf("iptables.New = %v", err)
	}
	t.Cleanup(func() {
		if err := k.Cleanup(context.Background()); err != nil {
			t.Errorf("Kernel.Cleanup = %v", err)
		}
	})

	client := fake.NewClientset()
	a := api{t, client}
	a.create(testNode("node-a", topo.NodeIP(netnstest.IPv4).String()),
		testService("web", "10.96.0.10"), testSlice("web", "web-1", backends[0].Addr().String()))
	sink := &iptablesSink{appliers: map[iptables.Family]iptables.Applier{iptables.IPv4: k}, changed: make(chan struct{}, 1)}
	startWatcher(t, client, sink, WithStateOptions(WithClusterCIDRs(netip.MustParsePrefix("10.244.0.0/16"))),
		WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond))

	vip := netip.MustParseAddrPort("10.96.0.10:80")
	reaches := func(want netip.AddrPort) func() bool {
		return func() bool {
			r := topo.Client().Dial(context.Background(), "tcp", vip, netnstest.Timeout(time.Second))
			return r.OK() && r.Backend == want
		}
	}
	waitUntil(t, "the client to reach "+backends[0].String()+" through "+vip.String(), reaches(backends[0]))
	a.update(testSlice("web", "web-1", backends[1].Addr().String()))
	waitUntil(t, "the client to reach "+backends[1].String()+" after the slice changed", reaches(backends[1]))
	// Once moved, every connection goes to the new pod.
	for range 5 {
		if r := topo.Client().Dial(context.Background(), "tcp", vip, netnstest.Timeout(time.Second)); !r.OK() || r.Backend != backends[1] {
			t.Errorf("Dial(%s) after the change = %v, want backend %s", vip, r, backends[1])
		}
	}
}
