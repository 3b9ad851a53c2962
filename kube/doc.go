// Package kube is svcplan's Kubernetes adapter: it turns Kubernetes objects
// into the [proxy.State] that one node's proxy sees.
//
// It stands before model → plan → apply. [Read] decodes Services,
// EndpointSlices, Nodes and a kube-proxy KubeProxyConfiguration from a YAML
// or JSON stream, such as the output of
//
//	kubectl get svc,endpointslices,nodes -A -o yaml
//
// into [Objects], skipping objects of other kinds with a [Warning].
// [StateFor] then builds the State of one node from them the way kube-proxy
// reads the same objects: the node's addresses and zone from its Node, the
// proxy settings from the [ProxyConfig] (overridden by options such as
// [WithClusterCIDRs]), the services that have proxy rules, and their
// endpoints merged from all their EndpointSlices. The State goes on to
// [proxy.State.Validate] and to translate.Compile.
//
// Conversion never drops anything silently: an address that does not parse
// or an EndpointSlice without its Service is left out with a Warning naming
// the object and the field. Deciding whether the State makes sense is
// [proxy.State.Validate]'s job, not this package's.
//
// For a live cluster, a [Watcher] ([NewWatcher]) runs client-go informers
// on Services, EndpointSlices and the node's own Node, and feeds the
// node's State, built by StateFor with the options given through
// [WithStateOptions], to a [Syncer] such as proxier.Proxier. Like
// kube-proxy it sends nothing until its caches have synced, leaves out
// Services and EndpointSlices labelled [LabelServiceProxyName] or
// service.kubernetes.io/headless, and headless services; it coalesces
// changes into the newest State, never runs two Syncs at once, retries a
// failed Sync with backoff ([WithRetryBackoff]), and leaves out, with a
// log line, a service that would make the State invalid.
package kube
