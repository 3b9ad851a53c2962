// Package ipset is svcplan's ipset vocabulary: a [Plan] of owned sets and
// their complete member lists, its text form (exactly the input of
// "ipset restore"), parsing of "ipset save" output back into a Plan, and
// (on Linux) the applier that makes a kernel's sets match a plan.
//
// It sits between translate, which compiles the IPVS mode of a proxy model
// into a Plan (kube-proxy's KUBE-CLUSTER-IP, KUBE-LOOP-BACK, ... sets), and
// the kernel. It knows sets and members, not Kubernetes, and imports
// nothing else from svcplan but internal/netnsfd, which opens the network
// namespace of an apply the same way for every backend.
//
// Members print as ipset prints them: "10.0.0.1", "10.0.0.1,tcp:80",
// "10.0.0.1,tcp:80,10.0.0.2", "10.0.0.1,tcp:80,10.0.0.0/24" and "30080";
// IPv6 addresses are not bracketed ("fd00::1,udp:53"). [Entry.Compare]
// orders members so that a Plan, and so its text, is deterministic.
package ipset
