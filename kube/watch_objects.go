package kube

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/svcplan/svcplan/proxy"
)

// caches are a Watcher's three informers and what selects the objects it
// uses from them. The API server applies the same selection, but a
// server (or a fake) that ignores selectors on watches must not change
// the result.
type caches struct {
	services coreinformers.ServiceInformer
	slices   discoveryinformers.EndpointSliceInformer
	nodes    coreinformers.NodeInformer
	// proxied selects the Services and EndpointSlices to proxy.
	proxied labels.Selector
	node    string
}

// register adds a handler calling changed to each informer (for the
// objects the Watcher uses) and errs to each informer's list and watch
// failures, and returns the functions that say whether each handler has
// seen its informer's initial objects.
func (c *caches) register(changed func(), errs func(what string, err error)) ([]cache.InformerSynced, error) {
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
		DeleteFunc: func(any) { changed() },
	}
	proxied := func(obj any) bool {
		m, ok := objectMeta(obj)
		return !ok || c.proxied.Matches(labels.Set(m.GetLabels()))
	}
	ours := func(obj any) bool {
		m, ok := objectMeta(obj)
		return !ok || m.GetName() == c.node
	}
	var synced []cache.InformerSynced
	for _, in := range []struct {
		what     string
		informer cache.SharedIndexInformer
		filter   func(any) bool
	}{
		{"services", c.services.Informer(), proxied},
		{"endpointslices", c.slices.Informer(), proxied},
		{"nodes", c.nodes.Informer(), ours},
	} {
		what := in.what
		if err := in.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { errs(what, err) }); err != nil {
			return nil, fmt.Errorf("setting the %s watch error handler: %w", what, err)
		}
		reg, err := in.informer.AddEventHandler(cache.FilteringResourceEventHandler{FilterFunc: in.filter, Handler: handler})
		if err != nil {
			return nil, fmt.Errorf("adding the %s event handler: %w", what, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	return synced, nil
}

// objectMeta returns obj's metadata; false means obj has none, as for a
// tombstone of an object deleted while a watch was down.
func objectMeta(obj any) (metav1Object, bool) {
	if _, tomb := obj.(cache.DeletedFinalStateUnknown); tomb {
		return nil, false
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, false
	}
	return m, true
}

// metav1Object is the metadata the filters read.
type metav1Object interface {
	GetName() string
	GetLabels() map[string]string
}

// objects returns the cached objects the node's State is built from: the
// proxied Services, the proxied EndpointSlices except those of a Service
// that is not proxied (they carry its labels, but may lag behind it), and
// the node's Node if it exists. The objects are shallow copies that share
// their fields with the cache, which StateFor only reads.
func (c *caches) objects() (*Objects, error) {
	svcs, err := c.services.Lister().List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing services: %w", err)
	}
	objs := &Objects{Services: make([]corev1.Service, 0, len(svcs))}
	other := map[string]bool{}
	for _, s := range svcs {
		if !c.proxied.Matches(labels.Set(s.Labels)) {
			other[serviceKey(s)] = true
			continue
		}
		objs.Services = append(objs.Services, *s)
	}
	eps, err := c.slices.Lister().List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing endpointslices: %w", err)
	}
	objs.EndpointSlices = make([]discoveryv1.EndpointSlice, 0, len(eps))
	for _, es := range eps {
		if !c.proxied.Matches(labels.Set(es.Labels)) || other[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]] {
			continue
		}
		objs.EndpointSlices = append(objs.EndpointSlices, *es)
	}
	n, err := c.nodes.Lister().Get(c.node)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("getting node %s: %w", c.node, err)
	default:
		objs.Nodes = []corev1.Node{*n}
	}
	return objs, nil
}

// droppedService is a service that dropInvalid left out, and why.
type droppedService struct {
	service string
	err     error
}

// dropInvalid removes from st the services that make it fail validation,
// and returns them. The error is what is still wrong once they are gone:
// problems of the node or the config, which no service causes.
func dropInvalid(st *proxy.State) ([]droppedService, error) {
	var dropped []droppedService
	for {
		err := st.Validate()
		if err == nil {
			return dropped, nil
		}
		bad := map[int][]error{}
		var rest []error
		for _, e := range flatten(err) {
			var fe *proxy.FieldError
			i := -1
			if errors.As(e, &fe) {
				i = serviceIndex(st, fe.Path)
			}
			if i < 0 {
				rest = append(rest, e)
				continue
			}
			bad[i] = append(bad[i], e)
		}
		if len(rest) > 0 || len(bad) == 0 {
			return dropped, errors.Join(rest...)
		}
		kept := st.Services[:0:0]
		for i, s := range st.Services {
			if errs, ok := bad[i]; ok {
				dropped = append(dropped, droppedService{service: s.Namespace + "/" + s.Name, err: errors.Join(errs...)})
				continue
			}
			kept = append(kept, s)
		}
		st.Services = kept
	}
}

// flatten returns the errors that err joins, or err alone.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// serviceIndex returns the index in st.Services of the service that a
// validation path such as "services[ns/web].ports[0]" or "services[3]"
// names, or -1.
func serviceIndex(st *proxy.State, path string) int {
	rest, ok := strings.CutPrefix(path, "services[")
	if !ok {
		return -1
	}
	id, _, ok := strings.Cut(rest, "]")
	if !ok {
		return -1
	}
	if i, err := strconv.Atoi(id); err == nil {
		if i >= 0 && i < len(st.Services) {
			return i
		}
		return -1
	}
	return slices.IndexFunc(st.Services, func(s proxy.Service) bool { return s.Namespace+"/"+s.Name == id })
}
