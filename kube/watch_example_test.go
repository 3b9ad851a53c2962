package kube_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/proxy"
)

// printer is a Syncer that prints each State and stops the Watcher after
// the first.
type printer struct{ stop context.CancelFunc }

func (p printer) Sync(_ context.Context, st *proxy.State) error {
	fmt.Println("node", st.Node.Name, st.Node.IPs)
	for _, s := range st.Services {
		fmt.Println("service", s.Namespace+"/"+s.Name, s.ClusterIPs)
		for _, e := range s.Endpoints {
			fmt.Println("  endpoint", e.Addr, "ready:", e.Ready)
		}
	}
	p.stop()
	return nil
}

// A Watcher feeds a Syncer (a proxier.Proxier, usually) with the State of
// one node. Here the cluster is client-go's fake clientset.
func ExampleWatcher() {
	ready := true
	port := int32(8080)
	client := fake.NewClientset(
		&corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.10"}}},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: corev1.ServiceSpec{
				ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
				Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		},
	)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kube.NewWatcher(client, "node-a", printer{stop: cancel})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := w.Run(ctx); err != nil { // returns once printer cancels ctx
		fmt.Println(err)
	}
	// Output:
	// node node-a [10.0.0.10]
	// service shop/web [10.96.0.10]
	//   endpoint 10.244.1.5 ready: true
}
