// Package proxier keeps the kernel of one network namespace in step with
// a [proxy.State] in one proxy mode: the last stage of model → plan →
// apply, and the part of kube-proxy that runs.
//
//	proxy.State ──Sync / Update+Run──▶ translate.Compile(mode) ──▶ translate.Plan
//	      │                                                            │
//	      │            ┌───────────────────────────────────────────────┘
//	      │            ▼
//	      │   iptables.Applier per family   (iptables mode; userspace portals)
//	      │   nftables.Applier              (nftables mode, one table per family)
//	      │   ipset → ipvs → iptables       (ipvs mode: sets, virtual servers and
//	      │                                  kube-ipvs0, then the fixed rules)
//	      │   userspace.Proxy               (userspace mode listeners)
//	      ▼
//	UDP conntrack cleanup (netlink) · health check servers · metrics · /healthz
//
// A [Proxier] is made for one mode with [New]. [Proxier.Sync] compiles a
// state (incrementally, with a [translate.Compiler], in the iptables and
// nftables modes) and applies it at once; [Proxier.Update] queues a state for the
// [Proxier.Run] loop, which syncs with kube-proxy's timing (a minimum
// interval after a small burst, a periodic resync, retries with backoff,
// a full sync after drift). Callers such as the kube package's watcher
// hand states to either. [Proxier.Cleanup] removes what every mode
// creates, as kube-proxy --cleanup does, so that switching modes leaves
// nothing behind.
//
// After each successful sync the proxier
//
//   - deletes stale UDP conntrack entries, as kube-proxy's conntrack
//     reconciler does (see [StaleFlows]): without that, a UDP client
//     that keeps its source port (a DNS resolver) keeps reaching a removed
//     endpoint through the flow's NAT binding;
//   - runs one HTTP server per service with externalTrafficPolicy Local
//     on its health check NodePort, answering as kube-proxy's does: 200
//     with the number of local endpoints, 503 when there are none;
//   - sets its metrics, on the registerer given with [WithRegistry],
//     under kube-proxy's names: kubeproxy_sync_proxy_rules_duration_seconds
//     and its _full_ and _partial_ variants,
//     kubeproxy_sync_proxy_rules_last_timestamp_seconds,
//     kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds,
//     kubeproxy_sync_proxy_rules_iptables_total{ip_family,table},
//     kubeproxy_sync_proxy_rules_iptables_restore_failures_total,
//     kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total,
//     kubeproxy_sync_proxy_rules_nftables_sync_failures_total,
//     kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total,
//     kubeproxy_sync_proxy_rules_{service,endpoint}_changes_{pending,total},
//     kubeproxy_sync_proxy_rules_no_local_endpoints_total,
//     kubeproxy_conntrack_reconciler_deleted_entries_total,
//     kubeproxy_conntrack_reconciler_sync_duration_seconds and
//     kubeproxy_proxy_{healthz,livez}_total; and, without a kube-proxy
//     equivalent, svcplan_proxier_sync_failures_total{stage},
//     svcplan_proxier_drift_repairs_total,
//     svcplan_proxier_nftables_objects{ip_family,kind},
//     svcplan_proxier_ipset_entries{set},
//     svcplan_proxier_ipvs_objects{ip_family,kind} (virtual_servers,
//     real_servers, addresses), svcplan_proxier_ipvs_draining_real_servers
//     and kubeproxy_sync_proxy_rules_ipvs_sync_failures_total{backend}.
//     One sync covers both families, so the per-family durations are the
//     same sync's.
//
// [Proxier.Healthz] serves kube-proxy's /healthz and /livez for the
// proxier itself: they fail once a state has waited for a successful sync
// longer than the health timeout (twice the sync period by default).
//
// Everything works in another network namespace with [WithNetNS]: the
// appliers, the conntrack cleanup and the health check servers' sockets.
// Tests give appliers of their own ([WithIPTablesApplier],
// [WithNFTablesApplier], [WithIPSetApplier], [WithIPVSApplier], such as
// the backends' Fakes), a [Conntrack], a [Listener] and a [Clock];
// nothing in the package is swapped. A proxier given any applier by an
// option makes no kernel applier at all: a sync that needs a backend
// nobody gave fails, and [Proxier.Cleanup] (which uses every mode's
// appliers) skips the backends not given, so a test with Fakes never
// reaches the kernel of its own namespace by a forgotten option.
//
// In IPVS mode each sync applies the ipsets first, then the IPVS virtual
// servers with the kube-ipvs0 addresses and the sysctls, then the fixed
// iptables rules, so that no rule matches a set that does not exist yet.
// The IPVS applier is called on every sync, the periodic ones included:
// it reads the table back, which is how real servers left draining with
// weight 0 (TCP, with connections) are deleted once idle. A kernel
// without IPVS fails the sync with an error wrapping [ipvs.ErrNoIPVS]
// ("ip_vs module not loaded"); Cleanup skips IPVS there.
//
// In nftables mode, a family that leaves the state has its table
// deleted: the applier deletes the owned tables only together, so that
// sync deletes both and writes the remaining family's table again.
package proxier
