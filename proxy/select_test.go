package proxy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func targets(local bool, eps ...string) []Target {
	out := []Target{}
	for _, e := range eps {
		out = append(out, Target{AddrPort: ap(e), Local: local})
	}
	return out
}

func TestSelectEndpoints(t *testing.T) {
	term := func(e Endpoint, serving bool) Endpoint {
		e.Ready, e.Serving, e.Terminating = false, serving, true
		return e
	}
	hinted := func(e Endpoint, zones ...string) Endpoint { e.ZoneHints = zones; return e }
	tests := []struct {
		name string
		svc  Service
		zone string
		want PortEndpoints
	}{
		{
			name: "ready only",
			svc:  Service{Endpoints: []Endpoint{ep("10.1.0.2", "node-b", true), ep("10.1.0.10", "node-b", true), ep("10.1.0.3", "node-b", false)}},
			want: PortEndpoints{Cluster: targets(false, "10.1.0.10:8080", "10.1.0.2:8080"), All: targets(false, "10.1.0.10:8080", "10.1.0.2:8080"), HasAny: true},
		},
		{
			name: "serving terminating fallback",
			svc:  Service{Endpoints: []Endpoint{term(ep("10.1.0.2", "", false), true), term(ep("10.1.0.3", "", false), false)}},
			want: PortEndpoints{Cluster: targets(false, "10.1.0.2:8080"), All: targets(false, "10.1.0.2:8080"), HasAny: true},
		},
		{
			name: "not ready and not terminating means none",
			svc:  Service{Endpoints: []Endpoint{ep("10.1.0.2", "", false)}},
			want: PortEndpoints{Cluster: []Target{}},
		},
		{
			name: "external local policy",
			svc: Service{Type: ServiceTypeNodePort, ExternalTrafficPolicy: TrafficPolicyLocal,
				Ports:     []ServicePort{{Name: "http", Port: 80, NodePort: 30000}},
				Endpoints: []Endpoint{ep("10.1.0.2", "node-a", true), ep("10.1.0.3", "node-b", true)}},
			want: PortEndpoints{
				Cluster: []Target{{AddrPort: ap("10.1.0.2:8080"), Local: true}, {AddrPort: ap("10.1.0.3:8080")}},
				Local:   targets(true, "10.1.0.2:8080"),
				All:     []Target{{AddrPort: ap("10.1.0.2:8080"), Local: true}, {AddrPort: ap("10.1.0.3:8080")}},
				HasAny:  true,
			},
		},
		{
			name: "internal local policy without local endpoints",
			svc:  Service{InternalTrafficPolicy: TrafficPolicyLocal, Endpoints: []Endpoint{ep("10.1.0.3", "node-b", true)}},
			want: PortEndpoints{Local: []Target{}, All: []Target{}, HasAny: true},
		},
		{
			name: "zone hints narrow",
			zone: "z1",
			svc:  Service{Endpoints: []Endpoint{hinted(ep("10.1.0.2", "", true), "z1"), hinted(ep("10.1.0.3", "", true), "z2")}},
			want: PortEndpoints{Cluster: targets(false, "10.1.0.2:8080"), All: targets(false, "10.1.0.2:8080"), HasAny: true},
		},
		{
			name: "zone hints ignored when one endpoint lacks them",
			zone: "z1",
			svc:  Service{Endpoints: []Endpoint{hinted(ep("10.1.0.2", "", true), "z1"), ep("10.1.0.3", "", true)}},
			want: PortEndpoints{Cluster: targets(false, "10.1.0.2:8080", "10.1.0.3:8080"), All: targets(false, "10.1.0.2:8080", "10.1.0.3:8080"), HasAny: true},
		},
		{
			name: "zone hints ignored when none matches",
			zone: "z9",
			svc:  Service{Endpoints: []Endpoint{hinted(ep("10.1.0.2", "", true), "z1")}},
			want: PortEndpoints{Cluster: targets(false, "10.1.0.2:8080"), All: targets(false, "10.1.0.2:8080"), HasAny: true},
		},
		{
			name: "duplicate address counts once, local preferred",
			svc:  Service{Endpoints: []Endpoint{ep("10.1.0.2", "node-b", true), ep("10.1.0.2", "node-a", true)}},
			want: PortEndpoints{Cluster: targets(true, "10.1.0.2:8080"), All: targets(true, "10.1.0.2:8080"), HasAny: true},
		},
		{
			name: "endpoint without the port is left out",
			svc:  Service{Endpoints: []Endpoint{ep("10.1.0.2", "", true, EndpointPort{Name: "other", Port: 1})}},
			want: PortEndpoints{},
		},
		{
			name: "other family is left out",
			svc:  Service{Endpoints: []Endpoint{ep("fd00::2", "", true)}},
			want: PortEndpoints{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &State{Node: Node{Name: "node-a", Zone: tt.zone}}
			if tt.svc.Ports == nil {
				tt.svc.Ports = []ServicePort{{Name: "http", Port: 80}}
			}
			got := SelectEndpoints(st, &tt.svc, &tt.svc.Ports[0], false)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.AddrPort{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("SelectEndpoints mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
