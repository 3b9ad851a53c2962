package proxier

import (
	"net/netip"
	"reflect"

	"github.com/svcplan/svcplan/proxy"
)

// countChanges returns how many services changed from prev to cur (added,
// removed, or changed other than in their endpoints) and how many
// services' endpoints changed, as kube-proxy counts its pending service
// and endpoint changes. A nil state has no services.
func countChanges(prev, cur *proxy.State) (services, endpoints int) {
	before := map[svcName]*proxy.Service{}
	if prev != nil {
		for i := range prev.Services {
			s := &prev.Services[i]
			before[svcName{s.Namespace, s.Name}] = s
		}
	}
	now := map[svcName]bool{}
	if cur != nil {
		for i := range cur.Services {
			s := &cur.Services[i]
			key := svcName{s.Namespace, s.Name}
			now[key] = true
			o, ok := before[key]
			if !ok {
				services++
				if len(s.Endpoints) > 0 {
					endpoints++
				}
				continue
			}
			if !reflect.DeepEqual(o.Endpoints, s.Endpoints) {
				endpoints++
			}
			a, b := *o, *s
			a.Endpoints, b.Endpoints = nil, nil
			if !reflect.DeepEqual(a, b) {
				services++
			}
		}
	}
	for key, o := range before {
		if !now[key] {
			services++
			if len(o.Endpoints) > 0 {
				endpoints++
			}
		}
	}
	return services, endpoints
}

// hasFamily reports whether addrs has an address of the family.
func hasFamily(addrs []netip.Addr, ipv6 bool) bool {
	for _, a := range addrs {
		if a.Unmap().Is6() == ipv6 {
			return true
		}
	}
	return false
}
