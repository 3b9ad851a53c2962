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
//     svcplan_proxier_drift_repairs_total and
//     svcplan_proxier_nftables_objects{ip_family,kind}. One sync covers
//     both families, so the per-family durations are the same sync's.
//
// [Proxier.Healthz] serves kube-proxy's /healthz and /livez for the
// proxier itself: they fail once a state has waited for a successful sync
// longer than the health timeout (twice the sync period by default).
//
// Everything works in another network namespace with [WithNetNS]: the
// appliers, the conntrack cleanup and the health check servers' sockets.
// Tests give appliers of their own ([WithIPTablesApplier],
// [WithNFTablesApplier], such as the backends' Fakes), a [Conntrack], a
// [Listener] and a [Clock]; nothing in the package is swapped.
//
// The IPVS mode is not supported yet: [New] returns an error wrapping
// [translate.ErrUnsupportedMode] for it.
package proxier
