package kube

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// summary lists what objs holds, one "Kind namespace/name" per object.
func summary(objs *Objects) []string {
	var out []string
	for _, s := range objs.Services {
		out = append(out, "Service "+s.Namespace+"/"+s.Name)
	}
	for _, s := range objs.EndpointSlices {
		out = append(out, "EndpointSlice "+s.Namespace+"/"+s.Name)
	}
	for _, n := range objs.Nodes {
		out = append(out, "Node "+n.Name)
	}
	if objs.ProxyConfig != nil {
		out = append(out, "KubeProxyConfiguration")
	}
	return out
}

func TestRead(t *testing.T) {
	tests := []struct {
		name      string
		stream    string
		want      []string
		wantWarns []string
	}{
		{
			name: "YAML documents with comments, empty documents and end markers",
			stream: `# leading comment
---
--- # an empty document
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 10.96.0.1}
...
---

# a comment before the object
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: ns}
addressType: IPv4
--- {apiVersion: v1, kind: Node, metadata: {name: n1}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
`,
			want:      []string{"Service ns/a", "EndpointSlice ns/a-1", "Node n1"},
			wantWarns: []string{"document 4 (line 18): Pod ns/p: skipped: kind Pod is not used"},
		},
		{
			name:   "CRLF line ends",
			stream: "apiVersion: v1\r\nkind: Node\r\nmetadata:\r\n  name: n1\r\n---\r\napiVersion: v1\r\nkind: Node\r\nmetadata:\r\n  name: n2\r\n",
			want:   []string{"Node n1", "Node n2"},
		},
		{
			name: "a YAML document written as JSON",
			stream: `apiVersion: v1
kind: Node
metadata: {name: n1}
---
{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}
`,
			want: []string{"Node n1", "Node n2"},
		},
		{
			name:   "a JSON document, then YAML",
			stream: "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n1\"}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n",
			want:   []string{"Node n1", "Node n2"},
		},
		{
			name:   "one JSON object",
			stream: `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "ns"}}`,
			want:   []string{"Service ns/a"},
		},
		{
			name: "concatenated JSON objects",
			stream: `{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
{"apiVersion": "v1", "kind": "ConfigMap",
 "metadata": {"name": "c", "namespace": "ns"}}{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}

  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}}`,
			want: []string{"Node n1", "Node n2"},
			wantWarns: []string{
				"document 2 (line 2): ConfigMap ns/c: skipped: kind ConfigMap is not used",
				"document 4 (line 5): Secret ns/s: skipped: kind Secret is not used",
			},
		},
		{
			name: "a JSON List as kubectl -o json prints it",
			stream: `{
    "apiVersion": "v1",
    "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.1"}},
        {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "a-1", "namespace": "ns"}}
    ],
    "kind": "List",
    "metadata": {"resourceVersion": ""}
}`,
			want: []string{"Service ns/a", "EndpointSlice ns/a-1"},
		},
		{
			name:   "a JSON array of objects",
			stream: `[{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}]`,
			want:   []string{"Node n1", "Node n2"},
		},
		{
			name: "typed lists whose items do not say their kind",
			stream: `apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a, namespace: ns}
- metadata: {name: b, namespace: ns}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: a-1, namespace: ns}
  addressType: IPv4
---
apiVersion: v1
kind: NodeList
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}}
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: ns}}
`,
			want:      []string{"Service ns/a", "Service ns/b", "EndpointSlice ns/a-1", "Node n1"},
			wantWarns: []string{"document 3 (line 13): Pod ns/p: skipped: kind Pod is not used"},
		},
		{
			name: "kinds and versions that are not used",
			stream: `apiVersion: v1
kind: Endpoints
metadata: {name: a, namespace: ns}
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: a-1, namespace: ns}
---
apiVersion: networking.k8s.io/v1
kind: Service
metadata: {name: b, namespace: ns}
---
kind: Node
metadata: {name: n1}
---
apiVersion: kubeproxy.config.k8s.io/v1beta1
kind: KubeProxyConfiguration
---
apiVersion: v1
kind: List
items: []
`,
			wantWarns: []string{
				"document 1 (line 1): Endpoints ns/a: skipped: kind Endpoints is not used",
				`document 2 (line 5): EndpointSlice ns/a-1: skipped: apiVersion "discovery.k8s.io/v1beta1" is not discovery.k8s.io/v1`,
				`document 3 (line 9): Service ns/b: skipped: apiVersion "networking.k8s.io/v1" is not v1`,
				`document 4 (line 13): Node n1: skipped: apiVersion "" is not v1`,
				`document 5 (line 16): KubeProxyConfiguration: skipped: apiVersion "kubeproxy.config.k8s.io/v1beta1" is not kubeproxy.config.k8s.io/v1alpha1`,
			},
		},
		{
			name: "two KubeProxyConfigurations: the last one is used",
			stream: kubeProxyConfig("mode: iptables") + kubeProxyConfig("mode: nftables") +
				"---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
			want:      []string{"Node n1", "KubeProxyConfiguration"},
			wantWarns: []string{"document 2 (line 6): KubeProxyConfiguration: the stream has more than one KubeProxyConfiguration; this later one is used"},
		},
		{
			name:   "nothing at all",
			stream: "# just a comment\n---\n---\n",
		},
		{
			name:   "null documents",
			stream: "~\n---\nnull\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, warns, err := Read(strings.NewReader(tt.stream))
			if err != nil {
				t.Fatalf("Read() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, summary(objs)); diff != "" {
				t.Errorf("Read() objects mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarns, warnStrings(warns)); diff != "" {
				t.Errorf("Read() warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadConfigMode(t *testing.T) {
	objs := mustRead(t, kubeProxyConfig("mode: iptables")+kubeProxyConfig("mode: nftables"))
	if got := objs.ProxyConfig.Mode; got != "nftables" {
		t.Errorf("Read().ProxyConfig.Mode = %q, want the last one, %q", got, "nftables")
	}
}

func TestReadKubectlList(t *testing.T) {
	f, err := os.Open("testdata/kubectl-list.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, warns, err := Read(f)
	if err != nil {
		t.Fatalf("Read() error = %v", err)
	}
	want := []string{"Service shop/cart", "Service shop/checkout", "EndpointSlice shop/cart-7lq4n", "EndpointSlice shop/checkout-bd92s", "Node node-1"}
	if diff := cmp.Diff(want, summary(objs)); diff != "" {
		t.Errorf("Read() objects mismatch (-want +got):\n%s", diff)
	}
	wantWarns := []string{"document 1 (line 1): Endpoints shop/cart: skipped: kind Endpoints is not used"}
	if diff := cmp.Diff(wantWarns, warnStrings(warns)); diff != "" {
		t.Errorf("Read() warnings mismatch (-want +got):\n%s", diff)
	}
	if got := objs.Nodes[0].Status.Capacity.Memory().String(); got != "16376320Ki" {
		t.Errorf("node capacity memory = %s, want 16376320Ki", got)
	}
	if got := len(objs.Services[0].ManagedFields); got != 1 {
		t.Errorf("cart has %d managedFields entries, want 1", got)
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		opts    []ReadOption
		wantErr string
	}{
		{
			name: "malformed YAML in the third document",
			stream: `apiVersion: v1
kind: Node
metadata: {name: n1}
---
# comment

apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Node
metadata:
  name: n3
 labels: {a: b}
`,
			wantErr: "document 3 (line 11): yaml: line 14: did not find expected key",
		},
		{
			name:    "a field of the wrong type",
			stream:  "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: http}]}\n",
			wantErr: "document 1 (line 1): Service ns/a: json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type int32",
		},
		{
			name:    "a list item of the wrong type",
			stream:  "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n1}}\n- {apiVersion: v1, kind: Node, metadata: {name: n2}, spec: {podCIDRs: 7}}\n",
			wantErr: "document 1 (line 1): items[1]: Node n2: json: cannot unmarshal number into Go struct field NodeSpec.spec.podCIDRs of type []string",
		},
		{
			name:    "no kind",
			stream:  "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\napiVersion: v1\nmetadata: {name: what}\n",
			wantErr: `document 2 (line 5): object "what" has no kind`,
		},
		{
			name:    "not an object",
			stream:  "just a string\n",
			wantErr: "document 1 (line 1): not an object",
		},
		{
			name:    "items that are not a list",
			stream:  "apiVersion: v1\nkind: List\nitems: {a: b}\n",
			wantErr: "document 1 (line 1): List: json: cannot unmarshal object into Go struct field .items of type []json.RawMessage",
		},
		{
			name:    "a JSON syntax error in the second object",
			stream:  "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n1\"}}\n\n{\"apiVersion\": \"v1\",\n \"kind\": }",
			wantErr: "document 2 (line 3): invalid character '}' looking for beginning of value",
		},
		{
			name:    "strict: an unknown kind",
			stream:  "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\n",
			opts:    []ReadOption{WithStrict()},
			wantErr: "document 1 (line 1): Pod ns/p: kind Pod is not used",
		},
		{
			name:    "strict: a key twice",
			stream:  "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nmetadata: {name: n2}\n",
			opts:    []ReadOption{WithStrict()},
			wantErr: "document 1 (line 1): yaml: unmarshal errors:\n  line 4: key \"metadata\" already set in map",
		},
		{
			name:    "strict: an unknown field",
			stream:  "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIp: 10.96.0.1}\n",
			opts:    []ReadOption{WithStrict()},
			wantErr: `document 1 (line 1): Service ns/a: unknown field "spec.clusterIp"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, _, err := Read(strings.NewReader(tt.stream), tt.opts...)
			if got := errString(err); got != tt.wantErr {
				t.Fatalf("Read() error = %q, want %q", got, tt.wantErr)
			}
			if objs != nil {
				t.Errorf("Read() objects = %v, want nil with an error", summary(objs))
			}
		})
	}
}

func TestReadMatchesFieldNamesByCase(t *testing.T) {
	objs := mustRead(t, "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIp: 10.96.0.1, clusterIP: 10.96.0.2}\n")
	if got := objs.Services[0].Spec.ClusterIP; got != "10.96.0.2" {
		t.Errorf("spec.clusterIP = %q, want 10.96.0.2 (clusterIp is not the field's name)", got)
	}
}

func TestReadStrictAcceptsKubeProxyFields(t *testing.T) {
	stream := kubeProxyConfig("mode: iptables\nmetricsBindAddress: 0.0.0.0:10249\nconntrack: {maxPerCore: 0}")
	if _, _, err := Read(strings.NewReader(stream), WithStrict()); err != nil {
		t.Errorf("Read(WithStrict()) error = %v, want none for fields svcplan does not use", err)
	}
}

func TestWarningString(t *testing.T) {
	tests := []struct {
		name string
		w    Warning
		want string
	}{
		{"everything", Warning{Doc: 3, Line: 41, Kind: "Pod", Name: "ns/p", Msg: "skipped"}, "document 3 (line 41): Pod ns/p: skipped"},
		{"no position", Warning{Kind: "Node", Name: "n", Msg: "no Node object"}, "Node n: no Node object"},
		{"no name", Warning{Doc: 1, Line: 1, Kind: "KubeProxyConfiguration", Msg: "m"}, "document 1 (line 1): KubeProxyConfiguration: m"},
		{"just a message", Warning{Msg: "m"}, "m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.w.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	for _, name := range []string{"testdata/kubectl-list.yaml", "../examples/cluster.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Node"}]}{}`))
	f.Add([]byte("---\n--- x\n...\n%YAML 1.2\n---\n[1, 2]\n"))
	f.Add([]byte(kubeProxyConfig("nodePortAddresses: [primary, localhost]\ndetectLocalMode: NodeCIDR") + nodeA))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, _, err := Read(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		if _, _, err := StateFor(objs, "node-a"); err != nil && objs.ProxyConfig == nil {
			t.Errorf("StateFor() error = %v without a KubeProxyConfiguration", err)
		}
	})
}
