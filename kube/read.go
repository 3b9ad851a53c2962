package kube

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The API versions and kinds that Read decodes.
const (
	apiVersionCore      = "v1"
	apiVersionDiscovery = "discovery.k8s.io/v1"
	apiVersionKubeProxy = "kubeproxy.config.k8s.io/v1alpha1"

	kindService           = "Service"
	kindEndpointSlice     = "EndpointSlice"
	kindNode              = "Node"
	kindKubeProxyConfig   = "KubeProxyConfiguration"
	kindList              = "List"
	kindServiceList       = "ServiceList"
	kindEndpointSliceList = "EndpointSliceList"
	kindNodeList          = "NodeList"
)

// Objects are the Kubernetes objects that a stream held, in stream order.
// The zero Objects holds nothing and is ready to use.
type Objects struct {
	// Services are the v1 Services.
	Services []corev1.Service
	// EndpointSlices are the discovery.k8s.io/v1 EndpointSlices.
	EndpointSlices []discoveryv1.EndpointSlice
	// Nodes are the v1 Nodes.
	Nodes []corev1.Node
	// ProxyConfig is the stream's KubeProxyConfiguration (the last one, if
	// there were several). Nil means the stream had none.
	ProxyConfig *ProxyConfig

	// origins says where Read found each object, keyed by objectKey, so
	// that StateFor's warnings can point at the document. Nil for Objects
	// built by hand.
	origins map[string]origin
}

// origin is where an object was read: its document number and first line.
type origin struct{ doc, line int }

func objectKey(kind, name string) string { return kind + " " + name }

// Warning is a problem that did not stop Read or StateFor: an object that
// was skipped, or a field that could not be converted and was left out.
type Warning struct {
	// Doc is the 1-based number of the document the object came from,
	// counting non-empty documents; 0 means unknown.
	Doc int
	// Line is the 1-based line of the stream on which that document starts;
	// 0 means unknown.
	Line int
	// Kind is the object's kind, such as "Service"; empty means the warning
	// is about no one object.
	Kind string
	// Name is the object's "namespace/name", or "name" for objects without
	// a namespace; empty means unknown.
	Name string
	// Msg says what happened, naming the field concerned.
	Msg string
}

// String returns the warning as one line, such as
// `document 3 (line 41): Pod default/web-0: skipped: kind Pod is not used`.
func (w Warning) String() string {
	var b strings.Builder
	if w.Doc > 0 {
		fmt.Fprintf(&b, "document %d (line %d): ", w.Doc, w.Line)
	}
	if w.Kind != "" || w.Name != "" {
		b.WriteString(strings.TrimSpace(w.Kind + " " + w.Name))
		b.WriteString(": ")
	}
	b.WriteString(w.Msg)
	return b.String()
}

// ReadOption changes how Read decodes a stream.
type ReadOption func(*readOptions)

type readOptions struct {
	strict bool
}

// WithStrict makes Read refuse what it would otherwise skip with a warning:
// objects of kinds or API versions it does not use, keys that appear twice
// in one mapping, and fields unknown to the Kubernetes types (a KubeProxyConfiguration may still hold fields that
// svcplan does not use). Without it, as in the API server, unknown fields
// are ignored.
func WithStrict() ReadOption {
	return func(o *readOptions) { o.strict = true }
}

// Read decodes the Services, EndpointSlices, Nodes and KubeProxyConfiguration
// in a YAML or JSON stream: YAML documents separated by "---" lines, or one
// or more concatenated JSON values. A document may be a List (or a
// ServiceList, EndpointSliceList or NodeList) whose items are such objects,
// as `kubectl get svc,endpointslices,nodes -A -o yaml` prints them. Objects
// of other kinds are skipped with a Warning. A document that cannot be
// decoded stops Read with an error naming the document's number and the line
// it starts on, such as `document 3 (line 44): yaml: line 47: ...` (YAML
// syntax errors name the line of the stream too).
//
// Objects are decoded as the API server decodes them: YAML is turned into
// JSON (sigs.k8s.io/yaml), whose keys must match the fields of the
// Kubernetes types exactly, case included; unknown fields are ignored
// unless WithStrict is given.
func Read(r io.Reader, opts ...ReadOption) (*Objects, []Warning, error) {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("reading objects: %w", err)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	rd := reader{opts: o, objs: &Objects{}}
	var docs []document
	if isJSON(data) {
		docs, err = splitJSON(data)
	} else {
		docs = splitYAML(data)
	}
	for _, d := range docs {
		if derr := rd.document(d); derr != nil {
			return nil, rd.warns, derr
		}
	}
	if err != nil {
		return nil, rd.warns, err
	}
	return rd.objs, rd.warns, nil
}

// document is one document of a stream.
type document struct {
	num  int    // 1-based, among non-empty documents
	line int    // 1-based line of the stream the document starts on
	yaml bool   // data is YAML, not JSON
	data []byte // the document's text
}

func (d document) errorf(format string, args ...any) error {
	return fmt.Errorf("document %d (line %d): %w", d.num, d.line, fmt.Errorf(format, args...))
}

// isJSON reports whether a stream is JSON: its first non-space byte opens
// an object or an array, and no line separates YAML documents (JSON text
// never has one).
func isJSON(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return false
	}
	for line := range bytes.Lines(t) {
		if isSeparator(strings.TrimRight(string(line), "\r\n")) {
			return false
		}
	}
	return true
}

// isSeparator reports whether a line starts a YAML document.
func isSeparator(line string) bool {
	return line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t")
}

// splitYAML cuts a YAML stream into its documents at "---" and "..."
// lines, dropping documents that hold only blank lines and comments.
func splitYAML(data []byte) []document {
	var (
		docs  []document
		cur   []string
		start int // line of the current document's first content line
	)
	flush := func() {
		if start > 0 {
			docs = append(docs, document{num: len(docs) + 1, line: start, yaml: true, data: []byte(strings.Join(cur, "\n"))})
		}
		cur, start = nil, 0
	}
	add := func(line string, n int) {
		if start == 0 && isBlankYAML(line) {
			return
		}
		if start == 0 {
			start = n
		}
		cur = append(cur, line)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case isSeparator(line):
			flush()
			add(strings.TrimSpace(line[3:]), n)
		case line == "..." || strings.HasPrefix(line, "... "):
			flush()
		case start == 0 && strings.HasPrefix(line, "%"):
			// A directive (%YAML, %TAG) before the document starts.
		default:
			add(line, n)
		}
	}
	flush()
	return docs
}

// isBlankYAML reports whether a line holds nothing but space or a comment.
func isBlankYAML(line string) bool {
	t := strings.TrimSpace(line)
	return t == "" || strings.HasPrefix(t, "#")
}

// splitJSON cuts a stream of concatenated JSON values into documents.
func splitJSON(data []byte) ([]document, error) {
	var docs []document
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		off := int(dec.InputOffset())
		for off < len(data) && strings.IndexByte(" \t\r\n", data[off]) >= 0 {
			off++
		}
		d := document{num: len(docs) + 1, line: 1 + bytes.Count(data[:off], []byte("\n"))}
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, d.errorf("%w", err)
		}
		d.data = raw
		docs = append(docs, d)
	}
}

// reader collects the objects of a stream.
type reader struct {
	opts  readOptions
	objs  *Objects
	warns []Warning
}

// header is what Read looks at first in every object.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func (h *header) name() string {
	if h.Metadata.Namespace == "" {
		return h.Metadata.Name
	}
	return h.Metadata.Namespace + "/" + h.Metadata.Name
}

// listItem is the kind and API version that items of a typed list have when
// they do not say.
type listItem struct{ apiVersion, kind string }

func (rd *reader) document(d document) error {
	if err := rd.parse(d); err != nil {
		return d.errorf("%w", err)
	}
	return nil
}

// parse decodes the objects of one document.
func (rd *reader) parse(d document) error {
	data := d.data
	if d.yaml {
		toJSON := yaml.YAMLToJSON
		if rd.opts.strict {
			toJSON = yaml.YAMLToJSONStrict
		}
		j, err := toJSON(data)
		if err != nil {
			// Parse again after blank lines standing for the lines before
			// the document, so that the error names the line of the
			// stream.
			padded := append(bytes.Repeat([]byte("\n"), d.line-1), data...)
			if _, perr := toJSON(padded); perr != nil {
				err = perr
			}
			return err
		}
		data = j
	}
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0 || bytes.Equal(data, []byte("null")):
		return nil
	case data[0] == '[':
		var items []json.RawMessage
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &items); err != nil {
			return err
		}
		return rd.items(d, items, listItem{})
	case data[0] != '{':
		return errors.New("not an object")
	}
	return rd.object(d, data, listItem{})
}

func (rd *reader) items(d document, items []json.RawMessage, def listItem) error {
	for i, item := range items {
		if err := rd.object(d, item, def); err != nil {
			return fmt.Errorf("items[%d]: %w", i, err)
		}
	}
	return nil
}

// object decodes one object, which may be a list.
func (rd *reader) object(d document, data []byte, def listItem) error {
	var h header
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &h); err != nil {
		return err
	}
	if h.Kind == "" && h.APIVersion == "" && def.kind != "" {
		h.Kind, h.APIVersion = def.kind, def.apiVersion
	}
	if h.Kind == "" {
		return fmt.Errorf("object %q has no kind", h.name())
	}
	want, item, known := kindAPIVersion(h.Kind)
	switch {
	case !known:
		return rd.skip(d, &h, fmt.Sprintf("skipped: kind %s is not used", h.Kind))
	case h.APIVersion != want && !(h.Kind == kindList && h.APIVersion == ""):
		return rd.skip(d, &h, fmt.Sprintf("skipped: apiVersion %q is not %s", h.APIVersion, want))
	case item.kind != "" || h.Kind == kindList:
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &l); err != nil {
			return fmt.Errorf("%s: %w", h.Kind, err)
		}
		return rd.items(d, l.Items, item)
	}
	if err := rd.decode(d, &h, data); err != nil {
		return fmt.Errorf("%s %s: %w", h.Kind, h.name(), err)
	}
	if rd.objs.origins == nil {
		rd.objs.origins = map[string]origin{}
	}
	name := h.name()
	if h.Kind == kindKubeProxyConfig {
		name = "" // there is one, whatever its name
	}
	rd.objs.origins[objectKey(h.Kind, name)] = origin{doc: d.num, line: d.line}
	return nil
}

// kindAPIVersion returns the API version Read accepts for kind, the kind of
// its items if it is a typed list, and whether Read uses kind at all.
func kindAPIVersion(kind string) (apiVersion string, item listItem, known bool) {
	switch kind {
	case kindService, kindNode, kindList:
		return apiVersionCore, listItem{}, true
	case kindEndpointSlice:
		return apiVersionDiscovery, listItem{}, true
	case kindKubeProxyConfig:
		return apiVersionKubeProxy, listItem{}, true
	case kindServiceList:
		return apiVersionCore, listItem{apiVersionCore, kindService}, true
	case kindNodeList:
		return apiVersionCore, listItem{apiVersionCore, kindNode}, true
	case kindEndpointSliceList:
		return apiVersionDiscovery, listItem{apiVersionDiscovery, kindEndpointSlice}, true
	}
	return "", listItem{}, false
}

func (rd *reader) skip(d document, h *header, msg string) error {
	w := Warning{Doc: d.num, Line: d.line, Kind: h.Kind, Name: h.name(), Msg: msg}
	if rd.opts.strict {
		return fmt.Errorf("%s %s: %s", h.Kind, h.name(), strings.TrimPrefix(msg, "skipped: "))
	}
	rd.warns = append(rd.warns, w)
	return nil
}

// decode decodes an object of a kind that Read uses and adds it to objs.
func (rd *reader) decode(d document, h *header, data []byte) error {
	switch h.Kind {
	case kindService:
		var s corev1.Service
		if err := rd.unmarshal(data, &s); err != nil {
			return err
		}
		rd.objs.Services = append(rd.objs.Services, s)
	case kindEndpointSlice:
		var s discoveryv1.EndpointSlice
		if err := rd.unmarshal(data, &s); err != nil {
			return err
		}
		rd.objs.EndpointSlices = append(rd.objs.EndpointSlices, s)
	case kindNode:
		var n corev1.Node
		if err := rd.unmarshal(data, &n); err != nil {
			return err
		}
		rd.objs.Nodes = append(rd.objs.Nodes, n)
	case kindKubeProxyConfig:
		var c ProxyConfig
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &c); err != nil {
			return err
		}
		if rd.objs.ProxyConfig != nil {
			rd.warns = append(rd.warns, Warning{Doc: d.num, Line: d.line, Kind: h.Kind, Name: h.name(),
				Msg: "the stream has more than one KubeProxyConfiguration; this later one is used"})
		}
		rd.objs.ProxyConfig = &c
	}
	return nil
}

// unmarshal decodes an object as the API server does: JSON keys match
// field names case-sensitively, and under WithStrict unknown and duplicate
// fields are errors.
func (rd *reader) unmarshal(data []byte, v any) error {
	if !rd.opts.strict {
		return kjson.UnmarshalCaseSensitivePreserveInts(data, v)
	}
	strictErrs, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}
