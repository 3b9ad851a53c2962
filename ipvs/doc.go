// Package ipvs is svcplan's IPVS vocabulary: a [Plan] of virtual servers,
// their real servers and the addresses bound to the dummy interface
// (kube-ipvs0), its text forms — exactly the input of "ipvsadm -R" (the
// shape "ipvsadm -S -n" prints) and of "ip -batch" for the addresses —,
// parsing of "ipvsadm -S -n" output back into a Plan, a [Tracer] that says
// which real servers a connection may reach, and (on Linux) the applier
// that makes a kernel match a plan.
//
// It sits between translate, which compiles the IPVS mode of a proxy model
// into a Plan, and the kernel. It knows virtual and real servers, not
// Kubernetes, and imports nothing else from svcplan but internal/netnsfd,
// which opens the network namespace of an apply the same way for every
// backend.
package ipvs
