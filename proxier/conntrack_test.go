package proxier_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func udpFlow(dst, replySrc string) proxier.Flow {
	return proxier.Flow{Protocol: proxy.ProtocolUDP, OrigDst: netip.MustParseAddrPort(dst), ReplySrc: netip.MustParseAddrPort(replySrc)}
}

func TestConntrackCleanup(t *testing.T) {
	nodePortState := func(eps ...netip.Addr) *proxy.State {
		st := state(eps...)
		st.Services[1].Type = proxy.ServiceTypeNodePort
		st.Services[1].Ports[0].NodePort = 30053
		st.Services[1].ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.7")}
		return st
	}
	tests := []struct {
		name     string
		old, cur *proxy.State
		flows    []proxier.Flow
		want     []proxier.Flow // the flows left
	}{{
		name: "endpoint removed",
		old:  state(epLocal), cur: state(epRemote),
		flows: []proxier.Flow{
			udpFlow("10.96.0.53:53", "10.244.1.2:5353"),   // to the removed endpoint: goes
			udpFlow("10.96.0.53:53", "10.244.2.2:5353"),   // to the live one: stays
			udpFlow("10.96.0.10:80", "10.244.1.2:8080"),   // not a UDP service port: stays
			udpFlow("10.96.0.99:53", "10.244.1.2:5353"),   // not a service: stays
			udpFlow("10.0.0.10:30053", "10.244.1.2:5353"), // not a NodePort here: stays
		},
		want: []proxier.Flow{
			udpFlow("10.96.0.53:53", "10.244.2.2:5353"),
			udpFlow("10.96.0.10:80", "10.244.1.2:8080"),
			udpFlow("10.96.0.99:53", "10.244.1.2:5353"),
			udpFlow("10.0.0.10:30053", "10.244.1.2:5353"),
		},
	}, {
		name: "endpoints come to a service that had none",
		old:  state(), cur: state(epLocal),
		flows: []proxier.Flow{
			udpFlow("10.96.0.53:53", "10.96.0.53:53"), // not DNATed: goes
			udpFlow("10.96.0.53:53", "10.244.1.2:5353"),
		},
		want: []proxier.Flow{udpFlow("10.96.0.53:53", "10.244.1.2:5353")},
	}, {
		name: "NodePort and external IP",
		old:  nodePortState(epLocal), cur: nodePortState(epRemote),
		flows: []proxier.Flow{
			udpFlow("10.0.0.10:30053", "10.244.1.2:5353"),
			udpFlow("127.0.0.1:30053", "10.244.1.2:5353"),
			udpFlow("192.0.2.7:53", "10.244.1.2:5353"),
			udpFlow("10.0.0.10:30053", "10.244.2.2:5353"),
			udpFlow("192.0.2.7:53", "10.244.2.2:5353"),
		},
		want: []proxier.Flow{
			udpFlow("10.0.0.10:30053", "10.244.2.2:5353"),
			udpFlow("192.0.2.7:53", "10.244.2.2:5353"),
		},
	}, {
		name: "service deleted",
		old:  nodePortState(epLocal), cur: &proxy.State{Node: state().Node},
		flows: []proxier.Flow{
			udpFlow("10.96.0.53:53", "10.244.1.2:5353"),
			udpFlow("10.0.0.10:30053", "10.244.1.2:5353"),
			udpFlow("10.96.0.10:80", "10.244.1.2:8080"),
		},
		want: []proxier.Flow{udpFlow("10.96.0.10:80", "10.244.1.2:8080")},
	}, {
		name: "terminating but serving endpoint keeps its flows",
		old:  state(epLocal),
		cur: func() *proxy.State {
			st := state(epLocal, epRemote)
			st.Services[1].Endpoints[0].Ready, st.Services[1].Endpoints[0].Serving, st.Services[1].Endpoints[0].Terminating = false, true, true
			return st
		}(),
		flows: []proxier.Flow{udpFlow("10.96.0.53:53", "10.244.1.2:5353")},
		want:  []proxier.Flow{udpFlow("10.96.0.53:53", "10.244.1.2:5353")},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := &recordingConntrack{}
			p, err := proxier.New(translate.ModeIPTables, proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
				proxier.WithConntrack(ct))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := p.Sync(ctx, tt.old); err != nil {
				t.Fatal(err)
			}
			ct.flows = append([]proxier.Flow(nil), tt.flows...)
			if err := p.Sync(ctx, tt.cur); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, ct.flows, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("flows left after the sync (-want +got):\n%s", diff)
			}
			deleted := len(tt.flows) - len(tt.want)
			if got := testutil.ToFloat64(p.MetricsForTest().ConntrackDeleted("IPv4")); int(got) != deleted {
				t.Errorf("conntrack_reconciler_deleted_entries_total = %v, want %d", got, deleted)
			}
		})
	}
}

func TestStaleFlowsMatchesUDPOnly(t *testing.T) {
	s := &proxier.StaleFlows{Rules: []proxier.StaleRule{{Dst: netip.MustParseAddrPort("10.96.0.53:53")}}}
	f := udpFlow("10.96.0.53:53", "10.96.0.53:53")
	if !s.Match(f) {
		t.Errorf("Match(%v) = false, want true", f)
	}
	f.Protocol = proxy.ProtocolTCP
	if s.Match(f) {
		t.Errorf("Match(TCP flow) = true, want false")
	}
	var zero *proxier.StaleFlows
	if !zero.Empty() || zero.Match(udpFlow("10.96.0.53:53", "10.96.0.53:53")) {
		t.Errorf("nil StaleFlows is not empty")
	}
}
