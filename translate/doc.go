// Package translate compiles a validated [proxy.State] into the plan of one
// proxy mode: the second stage of model → plan → apply. It owns object
// naming (kube-proxy's chain-name hashes) and does no I/O.
package translate
