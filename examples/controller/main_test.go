package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxier"
)

// waitTimeout bounds every wait for the running program.
const waitTimeout = 20 * time.Second

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func ptr[T any](v T) *T { return &v }

// cluster returns a node and a ClusterIP service shop/web on 10.96.0.10:80
// whose slice holds one endpoint, pod, on port 8080.
func cluster(nodeIP, pod string) (*corev1.Node, *corev1.Service, *discoveryv1.EndpointSlice) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	return node, svc, slice(pod)
}

// slice returns web's EndpointSlice with the one endpoint pod.
func slice(pod string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{pod}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, NodeName: ptr("node-b"),
		}},
	}
}

// program is one run of the controller in the background.
type program struct {
	t     *testing.T
	logs  *syncBuffer
	addrs map[string]string
	done  chan error
	stop  context.CancelFunc
}

// start runs the controller with args and e until the test ends; it
// waits until the servers named in servers listen.
func start(t *testing.T, args []string, e env, servers ...string) *program {
	t.Helper()
	logs := &syncBuffer{}
	e.stderr = logs
	listening := make(chan [2]string, 4)
	e.listening = func(name string, a net.Addr) { listening <- [2]string{name, a.String()} }
	ctx, cancel := context.WithCancel(context.Background())
	p := &program{t: t, logs: logs, addrs: map[string]string{}, done: make(chan error, 1), stop: cancel}
	go func() { p.done <- run(ctx, args, e) }()
	t.Cleanup(func() {
		if err := p.exit(); err != nil {
			t.Errorf("run after cancel = %v, want nil\nlog:\n%s", err, logs)
		}
	})
	deadline := time.After(waitTimeout)
	for len(p.addrs) < len(servers) {
		select {
		case l := <-listening:
			p.addrs[l[0]] = l[1]
		case err := <-p.done:
			p.done <- err
			t.Fatalf("run returned %v before serving\nlog:\n%s", err, logs)
		case <-deadline:
			t.Fatalf("servers listening: %v, want %v\nlog:\n%s", p.addrs, servers, logs)
		}
	}
	return p
}

// exit stops the program and returns run's result; it may be called
// more than once.
func (p *program) exit() error {
	p.stop()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(waitTimeout):
		return errors.New("run did not return after cancel")
	}
}

// get fetches path from the named server and returns the status and body.
func (p *program) get(server, path string) (int, string) {
	p.t.Helper()
	resp, err := http.Get("http://" + p.addrs[server] + path)
	if err != nil {
		p.t.Fatalf("GET %s%s: %v", server, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("reading %s%s: %v", server, path, err)
	}
	return resp.StatusCode, string(body)
}

// waitUntil polls cond until it holds, failing t after waitTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeEnv returns an env whose client is client (for the kubeconfig path
// "test-kubeconfig" only) and whose proxier applies to fakes.
func fakeEnv(client kubernetes.Interface, fake4, fake6 *iptables.Fake) env {
	return env{
		newClient: func(kubeconfig string) (kubernetes.Interface, error) {
			if kubeconfig != "test-kubeconfig" {
				return nil, fmt.Errorf("kubeconfig %q, want test-kubeconfig", kubeconfig)
			}
			return client, nil
		},
		proxierOpts: []proxier.Option{
			proxier.WithIPTablesApplier(iptables.IPv4, fake4),
			proxier.WithIPTablesApplier(iptables.IPv6, fake6),
			// --cleanup removes every mode's rules: without this Fake
			// it would look for nftables tables in the test's own
			// namespace.
			proxier.WithNFTablesApplier(nftables.NewFake()),
			proxier.WithIPSetApplier(ipset.NewFake()),
			proxier.WithIPVSApplier(ipvs.NewFake()),
			proxier.WithoutConntrackCleanup(),
		},
	}
}

// TestRunWithFakes runs the controller against the fake clientset and
// iptables Fakes: the rules follow the API, and metrics and health
// answer.
func TestRunWithFakes(t *testing.T) {
	node, svc, es := cluster("10.0.0.10", "10.244.2.5")
	client := fake.NewClientset(node, svc, es)
	fake4, fake6 := iptables.NewFake(iptables.IPv4), iptables.NewFake(iptables.IPv6)
	p := start(t, []string{
		"--kubeconfig", "test-kubeconfig", "--node", "node-a", "--mode", "iptables", "--cluster-cidr", "10.244.0.0/16",
		"--metrics-address", "127.0.0.1:0", "--healthz-address", "127.0.0.1:0", "--min-sync-period", "10ms",
	}, fakeEnv(client, fake4, fake6), "metrics", "healthz")

	waitUntil(t, "the DNAT to 10.244.2.5:8080", func() bool {
		return strings.Contains(fake4.Dump(), "-j DNAT --to-destination 10.244.2.5:8080")
	})
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(context.Background(), slice("10.244.2.6"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the DNAT to move to 10.244.2.6:8080", func() bool {
		d := fake4.Dump()
		return strings.Contains(d, "-j DNAT --to-destination 10.244.2.6:8080") && !strings.Contains(d, "10.244.2.5")
	})

	if code, body := p.get("healthz", "/healthz"); code != http.StatusOK || !strings.Contains(body, `"lastUpdated"`) {
		t.Errorf("GET /healthz = %d %q, want 200 with lastUpdated", code, body)
	}
	code, body := p.get("metrics", "/metrics")
	if code != http.StatusOK {
		t.Errorf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		"kubeproxy_sync_proxy_rules_last_timestamp_seconds ",
		`kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"}`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if err := p.exit(); err != nil {
		t.Errorf("run after cancel = %v", err)
	}
	// The rules stay when the controller stops, as kube-proxy's do.
	if !strings.Contains(fake4.Dump(), "10.244.2.6:8080") {
		t.Errorf("the rules are gone after exit:\n%s", fake4.Dump())
	}
}

// TestCleanupWithFakes checks that --cleanup removes the rules of a
// previous run and returns.
func TestCleanupWithFakes(t *testing.T) {
	node, svc, es := cluster("10.0.0.10", "10.244.2.5")
	client := fake.NewClientset(node, svc, es)
	fake4, fake6 := iptables.NewFake(iptables.IPv4), iptables.NewFake(iptables.IPv6)
	e := fakeEnv(client, fake4, fake6)
	p := start(t, []string{"--kubeconfig", "test-kubeconfig", "--node", "node-a", "--metrics-address", "", "--healthz-address", "", "--min-sync-period", "10ms"}, e)
	waitUntil(t, "the rules", func() bool { return strings.Contains(fake4.Dump(), "KUBE-SVC-") })
	if err := p.exit(); err != nil {
		t.Fatalf("run = %v", err)
	}
	var logs syncBuffer
	e.stderr = &logs
	if err := run(context.Background(), []string{"--cleanup", "--node", "node-a"}, e); err != nil {
		t.Fatalf("run --cleanup = %v\nlog:\n%s", err, logs.String())
	}
	if d := fake4.Dump() + fake6.Dump(); strings.Contains(d, "KUBE-") {
		t.Errorf("rules left after --cleanup:\n%s", d)
	}
}

// TestUsage checks the command lines run refuses.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"now"}, "unexpected arguments: now"},
		{"bad cidr", []string{"--cluster-cidr", "10.0.0.0"}, "--cluster-cidr"},
		{"no node", []string{"--node", ""}, "--node is required"},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, env{stderr: &stderr})
			if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("run(%q) = %v, printing %q; want errUsage and %q", tc.args, err, stderr.String(), tc.want)
			}
		})
	}
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"--mode", "bogus"}, env{stderr: &stderr}); err == nil || errors.Is(err, errUsage) {
		t.Errorf("run(--mode bogus) = %v, want the proxier's refusal", err)
	}
}
