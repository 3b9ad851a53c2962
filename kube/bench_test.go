package kube

import (
	"bytes"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// bigCluster returns n services, each with one slice of three endpoints,
// and node-a.
func bigCluster(n int) *Objects {
	objs := &Objects{Nodes: []corev1.Node{{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.10"}}},
	}}}
	port, node := int32(8080), "node-a"
	name := "http"
	for i := range n {
		svcName := fmt.Sprintf("svc-%d", i)
		objs.Services = append(objs.Services, corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: "ns"},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", i/256, i%256),
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
			},
		})
		var eps []discoveryv1.Endpoint
		for j := range 3 {
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 100+j, i/256, i%256)}, NodeName: &node})
		}
		objs.EndpointSlices = append(objs.EndpointSlices, discoveryv1.EndpointSlice{
			TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
			ObjectMeta:  metav1.ObjectMeta{Name: svcName + "-1", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   eps,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		})
	}
	return objs
}

func BenchmarkStateFor10000Services(b *testing.B) {
	objs := bigCluster(10000)
	for b.Loop() {
		if _, _, err := StateFor(objs, "node-a"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead10000Services(b *testing.B) {
	objs := bigCluster(10000)
	var buf bytes.Buffer
	for i := range objs.Services {
		for _, v := range []any{&objs.Services[i], &objs.EndpointSlices[i]} {
			y, err := yaml.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			buf.WriteString("---\n")
			buf.Write(y)
		}
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, _, err := Read(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
