package proxy

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestValidateParallelMatchesSerial checks that Validate, which checks a
// large State on several goroutines, reports exactly what the serial
// validation reports, including problems that only show across chunks.
func TestValidateParallelMatchesSerial(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	last := 4*minValidateChunk - 1
	tests := []struct {
		name   string
		change func(st *State)
		valid  bool
	}{
		{name: "valid", change: func(*State) {}, valid: true},
		{name: "cluster IP in the first and last chunks", change: func(st *State) {
			st.Services[last].ClusterIPs = st.Services[0].ClusterIPs
		}},
		{name: "service name in two chunks", change: func(st *State) {
			st.Services[last].Name = st.Services[1].Name
		}},
		{name: "node port in two chunks", change: func(st *State) {
			for _, i := range []int{2, last - 1} {
				st.Services[i].Type = ServiceTypeNodePort
				st.Services[i].Ports[0].NodePort = 30007
			}
		}},
		{name: "health check node port equal to a node port elsewhere", change: func(st *State) {
			st.Services[3].Type = ServiceTypeNodePort
			st.Services[3].Ports[0].NodePort = 30008
			lb := &st.Services[last]
			lb.Type, lb.ExternalTrafficPolicy, lb.HealthCheckNodePort = ServiceTypeLoadBalancer, TrafficPolicyLocal, 30008
		}},
		{name: "bad endpoint port in the last service", change: func(st *State) {
			st.Services[last].Endpoints[3].Ports[0].Port = 0
		}},
		{name: "bad node name", change: func(st *State) { st.Node.Name = "Node_A" }},
		{name: "bad config", change: func(st *State) { st.Config.NodePortRange = PortRange{Min: 9, Max: 3} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := benchState(last + 1)
			tt.change(st)
			got, want := st.Validate(), st.validate()
			if (want == nil) != tt.valid {
				t.Fatalf("serial validate() = %v, want valid %v", want, tt.valid)
			}
			if diff := cmp.Diff(fmt.Sprint(want), fmt.Sprint(got)); diff != "" {
				t.Errorf("Validate() differs from the serial validation (-want +got):\n%s", diff)
			}
		})
	}
}
