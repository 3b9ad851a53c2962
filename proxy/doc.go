// Package proxy is svcplan's model: the services, ports and endpoints one
// node sees, and the node's own proxy settings.
//
// It is the first stage of model → plan → apply. A [State] is plain data;
// [State.Validate] reports every problem in it with its field path, and no
// invalid State is ever compiled. [SelectEndpoints] implements kube-proxy's
// endpoint choice (ready first, serving-terminating as fallback, traffic
// policies, topology hints), shared by every proxy mode, and [Resolve] is the
// reference answer to "where does this packet go", against which the
// tracers of each compiled plan are tested.
//
// The package does no I/O and imports nothing else from svcplan.
package proxy
