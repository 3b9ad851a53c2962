// Package examples holds the example cluster that the svcplan CLI uses when
// no input is given, and (in its subdirectories) complete programs that use
// svcplan's public API.
package examples

import _ "embed"

//go:embed cluster.yaml
var cluster []byte

// Cluster returns a copy of examples/cluster.yaml: a small cluster with a
// service of every kind, as kubectl prints it, for node "node-a".
func Cluster() []byte { return append([]byte(nil), cluster...) }
