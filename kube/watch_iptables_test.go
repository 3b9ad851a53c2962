package kube

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// iptablesSink is a Syncer that compiles each State in iptables mode and
// applies the plans to appliers, one per family, as a proxier would.
type iptablesSink struct {
	mu       sync.Mutex
	appliers map[iptables.Family]iptables.Applier
	syncs    int
	changed  chan struct{}
}

// Sync implements Syncer.
func (s *iptablesSink) Sync(ctx context.Context, st *proxy.State) error {
	plan, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range plan.IPTables {
		a := s.appliers[p.FamilyOrDefault()]
		if a == nil {
			return fmt.Errorf("no applier for %s", p.FamilyOrDefault())
		}
		if err := a.Apply(ctx, p); err != nil {
			return err
		}
	}
	s.syncs++
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

// dnatRE matches the DNAT rules of a KUBE-SEP chain in iptables-save text.
var dnatRE = regexp.MustCompile(`(?m)^-A (KUBE-SEP-\S+) .*-j DNAT --to-destination (\S+)$`)

// natView is what a test looks at in an iptables dump: the KUBE-SVC
// chains, and the DNAT destinations of each KUBE-SVC chain's endpoints.
func natView(dump string) map[string][]string {
	out := map[string][]string{}
	nat := dump[strings.Index(dump, "*nat\n"):]
	seps := map[string]string{}
	for _, m := range dnatRE.FindAllStringSubmatch(nat, -1) {
		seps[m[1]] = m[2]
	}
	for _, line := range strings.Split(nat, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.HasPrefix(f[1], "KUBE-SVC-") {
			continue
		}
		if _, ok := out[f[1]]; !ok {
			out[f[1]] = []string{}
		}
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) && seps[f[i+1]] != "" {
			out[f[1]] = append(out[f[1]], seps[f[i+1]])
		}
	}
	return out
}

// TestWatcherDrivesIPTablesFake runs the Watcher into iptables.Fake
// appliers and checks the rules after each change made through the API.
func TestWatcherDrivesIPTablesFake(t *testing.T) {
	client := fake.NewClientset()
	a := api{t, client}
	a.create(testNode("node-a", "10.0.0.10"), testService("web", "10.96.0.10"), testSlice("web", "web-1", "10.244.2.5"))
	fake4 := iptables.NewFake(iptables.IPv4)
	sink := &iptablesSink{appliers: map[iptables.Family]iptables.Applier{iptables.IPv4: fake4}, changed: make(chan struct{}, 1)}
	startWatcher(t, client, sink)

	web := translate.ServicePortChainName(translate.PrefixServiceCluster, "shop/web:http", "tcp")
	cart := translate.ServicePortChainName(translate.PrefixServiceCluster, "shop/cart:http", "tcp")
	steps := []struct {
		name   string
		change func()
		want   map[string][]string
	}{
		{"initial", func() {}, map[string][]string{web: {"10.244.2.5:8080"}}},
		{"endpoint replaced", func() { a.update(testSlice("web", "web-1", "10.244.2.6")) }, map[string][]string{web: {"10.244.2.6:8080"}}},
		{"endpoint added", func() { a.update(testSlice("web", "web-1", "10.244.2.6", "10.244.2.7")) },
			map[string][]string{web: {"10.244.2.6:8080", "10.244.2.7:8080"}}},
		{"service added", func() { a.create(testService("cart", "10.96.0.11"), testSlice("cart", "cart-1", "10.244.2.9")) },
			map[string][]string{web: {"10.244.2.6:8080", "10.244.2.7:8080"}, cart: {"10.244.2.9:8080"}}},
		{"slice deleted", func() { a.deleteSlice("web-1") }, map[string][]string{cart: {"10.244.2.9:8080"}}},
		{"service deleted", func() { a.deleteService("cart") }, map[string][]string{}},
	}
	for _, step := range steps {
		step.change()
		waitUntil(t, step.name, func() bool {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			return sink.syncs > 0 && cmp.Diff(step.want, natView(fake4.Dump())) == ""
		})
	}
	// Without endpoints, web's cluster IP is rejected in filter.
	if want := `"shop/web:http has no endpoints"`; !strings.Contains(fake4.Dump(), want) {
		t.Errorf("the dump lacks a rule with comment %s:\n%s", want, fake4.Dump())
	}
}
