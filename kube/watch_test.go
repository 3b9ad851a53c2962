package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svcplan/svcplan/proxy"
)

// waitTimeout bounds every wait for the Watcher to deliver a State.
const waitTimeout = 20 * time.Second

// recordingSink is a Syncer that keeps every State it is given. It holds
// each call while hold is set, then fails it if it is one of the first
// failures calls, and it
// records an error if two calls ever overlap.
type recordingSink struct {
	mu       sync.Mutex
	states   []*proxy.State
	takenAt  []int // the call number of each State taken
	calls    int
	failures int
	active   int
	overlap  bool
	hold     chan struct{} // when not nil, Sync waits for it to close
	changed  chan struct{} // gets a token after each call
}

func newRecordingSink() *recordingSink { return &recordingSink{changed: make(chan struct{}, 1)} }

// Sync implements Syncer.
func (s *recordingSink) Sync(ctx context.Context, st *proxy.State) error {
	s.mu.Lock()
	s.calls++
	s.active++
	if s.active > 1 {
		s.overlap = true
	}
	hold, call := s.hold, s.calls
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	fail := call <= s.failures
	s.mu.Unlock()
	if fail {
		return fmt.Errorf("sync %d refused by the test", s.calls)
	}
	s.mu.Lock()
	s.states = append(s.states, st)
	s.takenAt = append(s.takenAt, call)
	s.mu.Unlock()
	return nil
}

// last returns the newest State received, or nil.
func (s *recordingSink) last() *proxy.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		return nil
	}
	return s.states[len(s.states)-1]
}

// waitFor waits until the newest State received satisfies ok, and returns
// it; it fails t after waitTimeout, showing the newest State's summary.
func (s *recordingSink) waitFor(t *testing.T, what string, ok func(*proxy.State) bool) *proxy.State {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := s.last(); st != nil && ok(st) {
			return st
		}
		select {
		case <-s.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("no State with %s within %v; the last one: %v", what, waitTimeout, stateSummary(s.last()))
		}
	}
}

// stateSummary maps each service of st to its endpoint addresses, and the
// node to its addresses, for comparisons.
func stateSummary(st *proxy.State) map[string][]string {
	if st == nil {
		return nil
	}
	out := map[string][]string{}
	for _, a := range st.Node.IPs {
		out["node "+st.Node.Name] = append(out["node "+st.Node.Name], a.String())
	}
	for _, s := range st.Services {
		key := s.Namespace + "/" + s.Name
		out[key] = []string{}
		for _, e := range s.Endpoints {
			out[key] = append(out[key], e.Addr.String())
		}
	}
	return out
}

// hasSummary returns a check that a State's summary is want.
func hasSummary(want map[string][]string) func(*proxy.State) bool {
	return func(st *proxy.State) bool { return cmp.Diff(want, stateSummary(st)) == "" }
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
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

// startWatcher runs a Watcher of node-a on client until the test ends, and
// checks then that Run returned nil.
func startWatcher(t *testing.T, client *fake.Clientset, sink Syncer, opts ...WatcherOption) *Watcher {
	t.Helper()
	w, err := NewWatcher(client, "node-a", sink, opts...)
	if err != nil {
		t.Fatalf("NewWatcher = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	})
	return w
}

// The objects of the tests.

func testService(name, ip string, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func testSlice(service, name string, addrs ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080))}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			NodeName:   ptr("node-b"),
		})
	}
	return es
}

func testNode(name, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

func ptr[T any](v T) *T { return &v }

func withLabel(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
}

// api wraps the fake clientset's typed calls for the tests, failing t on
// any error.
type api struct {
	t *testing.T
	c *fake.Clientset
}

func (a api) create(objs ...runtime.Object) {
	a.t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = a.c.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = a.c.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Node:
			_, err = a.c.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
		default:
			a.t.Fatalf("create: unexpected %T", o)
		}
		if err != nil {
			a.t.Fatalf("creating %T: %v", o, err)
		}
	}
}

func (a api) update(objs ...runtime.Object) {
	a.t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = a.c.CoreV1().Services(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = a.c.DiscoveryV1().EndpointSlices(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		case *corev1.Node:
			_, err = a.c.CoreV1().Nodes().Update(ctx, o, metav1.UpdateOptions{})
		default:
			a.t.Fatalf("update: unexpected %T", o)
		}
		if err != nil {
			a.t.Fatalf("updating %T: %v", o, err)
		}
	}
}

func (a api) deleteService(name string) {
	a.t.Helper()
	if err := a.c.CoreV1().Services("shop").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		a.t.Fatalf("deleting service %s: %v", name, err)
	}
}

func (a api) deleteSlice(name string) {
	a.t.Helper()
	if err := a.c.DiscoveryV1().EndpointSlices("shop").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		a.t.Fatalf("deleting endpointslice %s: %v", name, err)
	}
}

// TestWatcherFollowsAPI creates, updates and deletes objects through the
// fake API and checks that the States sent follow.
func TestWatcherFollowsAPI(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	a.create(testNode("node-a", "10.0.0.10"), testNode("node-b", "10.0.0.11"),
		testService("web", "10.96.0.10"), testSlice("web", "web-1", "10.244.2.5", "10.244.2.6"))
	sink := newRecordingSink()
	w := startWatcher(t, client, sink, WithStateOptions(WithClusterCIDRs(netip.MustParsePrefix("10.244.0.0/16"))))

	st := sink.waitFor(t, "web's two endpoints", hasSummary(map[string][]string{
		"node node-a": {"10.0.0.10"},
		"shop/web":    {"10.244.2.5", "10.244.2.6"},
	}))
	if diff := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, st.Config.ClusterCIDRs, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("State.Config.ClusterCIDRs (-want +got):\n%s", diff)
	}
	if !w.HasSynced() {
		t.Errorf("HasSynced() = false after a State was sent")
	}

	steps := []struct {
		name   string
		change func()
		want   map[string][]string
	}{{
		name:   "endpoint replaced",
		change: func() { a.update(testSlice("web", "web-1", "10.244.2.5", "10.244.2.7")) },
		want:   map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5", "10.244.2.7"}},
	}, {
		name: "service and second slice added",
		change: func() {
			a.create(testService("cart", "10.96.0.11"), testSlice("cart", "cart-1", "10.244.2.9"), testSlice("web", "web-2", "10.244.2.8"))
		},
		want: map[string][]string{
			"node node-a": {"10.0.0.10"},
			"shop/cart":   {"10.244.2.9"},
			"shop/web":    {"10.244.2.5", "10.244.2.7", "10.244.2.8"},
		},
	}, {
		name:   "slice deleted",
		change: func() { a.deleteSlice("web-1") },
		want:   map[string][]string{"node node-a": {"10.0.0.10"}, "shop/cart": {"10.244.2.9"}, "shop/web": {"10.244.2.8"}},
	}, {
		name:   "service deleted",
		change: func() { a.deleteService("cart") },
		want:   map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.8"}},
	}, {
		name:   "node address changed",
		change: func() { a.update(testNode("node-a", "10.0.0.20")) },
		want:   map[string][]string{"node node-a": {"10.0.0.20"}, "shop/web": {"10.244.2.8"}},
	}}
	for _, step := range steps {
		step.change()
		sink.waitFor(t, step.name, hasSummary(step.want))
	}
	if sink.overlap {
		t.Errorf("two Syncs ran at once")
	}
}

// TestWatcherSkipsOtherProxiesAndHeadless checks that services labelled
// for another proxy, with their slices, and headless services are left
// out, and that a service that loses the label comes in.
func TestWatcherSkipsOtherProxiesAndHeadless(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	headlessSlice := testSlice("db", "db-1", "10.244.2.3")
	headlessSlice.Labels[corev1.IsHeadlessService] = ""
	other := testService("other", "10.96.0.12", withLabel(LabelServiceProxyName, "someone-else"))
	otherSlice := testSlice("other", "other-1", "10.244.2.4")
	otherSlice.Labels[LabelServiceProxyName] = "someone-else"
	a.create(testNode("node-a", "10.0.0.10"),
		testService("web", "10.96.0.10"), testSlice("web", "web-1", "10.244.2.5"),
		testService("db", corev1.ClusterIPNone), headlessSlice,
		other, otherSlice)
	var logs syncBuffer
	sink := newRecordingSink()
	startWatcher(t, client, sink, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))

	sink.waitFor(t, "web alone", hasSummary(map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}}))

	// The service loses its label before its slice does, as when the
	// EndpointSlice controller copies the change a moment later: the
	// service comes in at once, its slice with the second update.
	other = other.DeepCopy()
	delete(other.Labels, LabelServiceProxyName)
	a.update(other)
	sink.waitFor(t, "other without endpoints", hasSummary(map[string][]string{
		"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}, "shop/other": {},
	}))
	otherSlice = otherSlice.DeepCopy()
	delete(otherSlice.Labels, LabelServiceProxyName)
	a.update(otherSlice)
	sink.waitFor(t, "other with its endpoint", hasSummary(map[string][]string{
		"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}, "shop/other": {"10.244.2.4"},
	}))
	// And back to the other proxy: the service and its slice go.
	a.update(testService("other", "10.96.0.12", withLabel(LabelServiceProxyName, "someone-else")))
	sink.waitFor(t, "web alone again", hasSummary(map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}}))
	if strings.Contains(logs.String(), "not found") {
		t.Errorf("the slices of services left out gave warnings:\n%s", logs.String())
	}
}

// TestWatcherWaitsForCaches holds the EndpointSlice list and checks that
// nothing is sent meanwhile, although the other caches have synced.
func TestWatcherWaitsForCaches(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	a.create(testNode("node-a", "10.0.0.10"), testService("web", "10.96.0.10"), testSlice("web", "web-1", "10.244.2.5"))
	// The fake runs reactors under its lock, so the list is refused, not
	// blocked, until released; the informer retries it.
	release := make(chan struct{})
	listed := make(chan string, 100)
	client.PrependReactor("list", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		r := action.GetResource().Resource
		select {
		case listed <- r:
		default:
		}
		if r != "endpointslices" {
			return false, nil, nil // on to the tracker
		}
		select {
		case <-release:
			return false, nil, nil
		default:
			return true, nil, errors.New("the test holds the EndpointSlice list")
		}
	})
	sink := newRecordingSink()
	w := startWatcher(t, client, sink)
	seen := map[string]bool{}
	deadline := time.After(waitTimeout)
	for len(seen) < 3 {
		select {
		case r := <-listed:
			seen[r] = true
		case <-deadline:
			t.Fatalf("lists made: %v, want services, endpointslices and nodes", seen)
		}
	}
	// The service and node caches are filled by now or soon; give a
	// Watcher that did not wait the time to send a State without
	// endpoints. This sleep asserts nothing by itself: the checks below
	// pass after any wait for a Watcher that waits for its caches.
	time.Sleep(200 * time.Millisecond)
	if w.HasSynced() {
		t.Errorf("HasSynced() = true while the EndpointSlice list is held")
	}
	sink.mu.Lock()
	calls := sink.calls
	sink.mu.Unlock()
	if calls != 0 {
		t.Fatalf("Sync called %d times before the caches synced; first State: %v", calls, stateSummary(sink.states[0]))
	}
	close(release)
	sink.waitFor(t, "web's endpoint", func(*proxy.State) bool { return true })
	sink.mu.Lock()
	first := sink.states[0]
	sink.mu.Unlock()
	if diff := cmp.Diff(map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}}, stateSummary(first)); diff != "" {
		t.Errorf("first State (-want +got):\n%s", diff)
	}
}

// TestWatcherCoalescesAndRetries holds the first Sync while changes
// arrive, and checks that they come as one State; then fails Syncs and
// checks that the newest State is retried until it is taken.
func TestWatcherCoalescesAndRetries(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	a.create(testNode("node-a", "10.0.0.10"))
	sink := newRecordingSink()
	hold := make(chan struct{})
	sink.hold = hold
	w := startWatcher(t, client, sink, WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond))

	waitUntil(t, "the first Sync", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls == 1 })
	want := map[string][]string{"node node-a": {"10.0.0.10"}}
	for i := range 5 {
		name := fmt.Sprintf("svc-%d", i)
		a.create(testService(name, fmt.Sprintf("10.96.0.%d", 20+i)))
		want["shop/"+name] = []string{}
	}
	waitUntil(t, "the Watcher's cache to hold 5 services", func() bool {
		svcs, err := w.caches.Load().services.Lister().List(labels.Everything())
		return err == nil && len(svcs) == 5
	})
	sink.mu.Lock()
	sink.hold = nil
	sink.failures = 3 // the first call (held) and the next two fail
	sink.mu.Unlock()
	close(hold)
	sink.waitFor(t, "the five services", hasSummary(want))
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// Call 1 held the empty State and failed; calls 2 and 3, retries,
	// failed; call 4, the first taken, carried all five services,
	// however many events they came as.
	if sink.takenAt[0] != 4 {
		t.Errorf("the first State taken came with call %d, want 4 (after 3 failures)", sink.takenAt[0])
	}
	if diff := cmp.Diff(want, stateSummary(sink.states[0])); diff != "" {
		t.Errorf("the first State taken (-want +got):\n%s", diff)
	}
	if sink.overlap {
		t.Errorf("two Syncs ran at once")
	}
}

// TestWatcherLeavesOutInvalidServices checks that a service the State
// cannot hold is left out, and the others sent.
func TestWatcherLeavesOutInvalidServices(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	bad := testService("bad", "10.96.0.13", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = "ICMP" })
	clash := testService("web-copy", "10.96.0.10") // the same cluster IP as web
	a.create(testNode("node-a", "10.0.0.10"), testService("web", "10.96.0.10"), bad, clash, testSlice("web", "web-1", "10.244.2.5"))
	var logs syncBuffer
	sink := newRecordingSink()
	startWatcher(t, client, sink, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))

	st := sink.waitFor(t, "web alone", func(st *proxy.State) bool { return len(st.Services) > 0 })
	if diff := cmp.Diff(map[string][]string{"node node-a": {"10.0.0.10"}, "shop/web": {"10.244.2.5"}}, stateSummary(st)); diff != "" {
		t.Errorf("State (-want +got):\n%s", diff)
	}
	if err := st.Validate(); err != nil {
		t.Errorf("the State sent is invalid: %v", err)
	}
	for _, want := range []string{"service=shop/bad", "service=shop/web-copy"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not name %s:\n%s", want, logs.String())
		}
	}
}

// TestNewWatcherErrors checks the arguments NewWatcher refuses.
func TestNewWatcherErrors(t *testing.T) {
	client := fake.NewClientset()
	sink := newRecordingSink()
	for _, tc := range []struct {
		name   string
		client *fake.Clientset
		node   string
		sink   Syncer
		want   string
	}{
		{"nil client", nil, "node-a", sink, "nil client"},
		{"nil sink", client, "node-a", nil, "nil sink"},
		{"no node", client, "", sink, "no node name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c kubernetes.Interface
			if tc.client != nil {
				c = tc.client
			}
			_, err := NewWatcher(c, tc.node, tc.sink)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewWatcher(%s) = %v, want an error saying %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestWatcherRunOnceAndCancel checks that Run refuses a second run and
// that a Run cancelled before its caches synced says so.
func TestWatcherRunOnceAndCancel(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("the test refuses to list services")
	})
	w, err := NewWatcher(client, "node-a", newRecordingSink())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run with services unlistable = %v, want an error wrapping DeadlineExceeded", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrWatcherRunning) {
		t.Errorf("second Run = %v, want ErrWatcherRunning", err)
	}
	if w.HasSynced() {
		t.Errorf("HasSynced() = true, want false")
	}
}

// waitUntil polls cond until it holds, failing t after waitTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
