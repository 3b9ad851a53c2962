// Package iptables is svcplan's iptables vocabulary: a [Plan] of owned
// chains and their rules for one address family, its text form (exactly the
// input of iptables-restore), parsing of iptables-save text, a packet
// [Tracer] over a plan, and (on Linux) the applier that writes a plan into a
// kernel.
//
// It sits between translate, which compiles a proxy model into a Plan, and
// the kernel. It knows chains and rules, not Kubernetes, and imports nothing
// else from svcplan.
//
// A rule is stored as the text iptables-save prints after "-A CHAIN ", so
// that a plan costs about as much memory as its text and renders by
// streaming. [ChainBuilder] builds rules from arguments and refuses
// arguments that would inject text into restore input.
package iptables
