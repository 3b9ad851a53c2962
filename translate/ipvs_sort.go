package translate

import (
	"slices"

	"github.com/svcplan/svcplan/ipvs"
)

// sortServersStable sorts vs in place and returns it, sorted by [ipvs.VirtualServer.Compare],
// equal ones in their order. It sorts indexes rather than the large
// structs, which a stable sort would move O(n log² n) times.
func sortServersStable(vs []ipvs.VirtualServer) []ipvs.VirtualServer {
	byKey := func(a, b ipvs.VirtualServer) int { return a.Compare(&b) }
	if slices.IsSortedFunc(vs, byKey) {
		return vs
	}
	idx := make([]int32, len(vs))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := vs[a].Compare(&vs[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	// Move vs[idx[i]] to i in place, one cycle of the permutation at a
	// time.
	for i := range idx {
		if int(idx[i]) == i {
			continue
		}
		tmp, j := vs[i], i
		for {
			k := int(idx[j])
			idx[j] = int32(j)
			if k == i {
				vs[j] = tmp
				break
			}
			vs[j], j = vs[k], k
		}
	}
	return vs
}
