// Package coordinator runs a member of a Baton group: it joins through an
// etcd lease, runs the syncs the leader assigns to it through a [Handler],
// and takes its turn as the leader that balances syncs across members.
//
// A service makes a [Coordinator] with [New], calls [Coordinator.Join], and
// gets [Handler.OnAssign] / [Handler.OnRevoke] for the syncs it owns. Admins
// add and remove syncs with a [SyncStore] and inspect the group with
// [Describe].
//
// # Guarantees
//
//   - Single owner: a sync's owner key (owners/<sync>) is created only when
//     absent, with the owner's lease; OnRevoke runs before the key is
//     released, and a member whose lease is at risk revokes everything by
//     its local deadline, which etcd cannot pass before the lease expires.
//     So at no instant do two members run one sync, provided processes are
//     not paused (see the failure model).
//   - Fencing: every [assignment.Claim] carries a token (the owner key's
//     create revision) that strictly increases each time the sync changes
//     owner; [assignment.Claim.Guard] and [assignment.Claim.SaveCheckpoint]
//     make etcd writes fail once the claim is gone.
//   - Incremental moves: only syncs whose owner changes are revoked; all
//     others run on through every rebalance.
//   - Callbacks for one sync are serial (OnAssign, any Updater.OnUpdate,
//     exactly one OnRevoke); different syncs run concurrently.
//   - Warm handoff: a Handler that implements [Preparer] prepares a sync
//     that moves to it while the current owner still runs it; the owner
//     lets go once it is ready, or after the prepare timeout. Preparing is
//     never owning: no claim, no token.
//
// # Failure model
//
//   - A member that crashes loses its lease after the TTL; the leader then
//     moves its syncs at once (leading-edge rebalancing: the first change
//     after Settle of quiet is planned without waiting), so a new owner
//     runs them within about TTL + 0.6s; TTL + Settle + about a second when
//     other changes came just before.
//   - A member cut off from etcd revokes everything with
//     [assignment.LeaseLost] at deadline - RevokeTimeout, then joins again
//     under the same ID when etcd is back.
//   - A paused process (SIGSTOP, a long GC or VM pause) cannot act on its
//     deadline while paused: on resuming it may run briefly before noticing.
//     Nothing in a library can prevent that; fenced writes (the token) are
//     what stop a zombie from doing harm downstream.
//   - A leader that is deposed cannot overwrite its successor's plan: every
//     target write is guarded by its election key.
//   - Clock rate: deadlines are measured on the local monotonic clock from
//     the send time of each renewal, with a 5% margin of the TTL for clock
//     rate differences between the member and etcd's leader.
//   - A Balancer that errors, panics, overruns its budget (the TTL) or
//     returns an invalid plan is logged and counted; the previous targets
//     stand, and the next change calls it again.
//   - Target writes stay within etcd's default request limits (128 ops,
//     1.5 MiB): they are split by ops and by bytes, and a member's target
//     too large for one request is stored in parts that the member applies
//     only once all are of one generation. A plan that cannot be written is
//     logged, counted (baton_etcd_request_errors_total{op="write-targets"})
//     and shown by [Describe] in [GroupStatus].PlanError until a round
//     succeeds; the previous targets stand, and the next round repairs a
//     write that failed half way.
//   - A Balancer call that ignores its ctx past its budget, or that is
//     still running when leadership ends, is abandoned: the leader goes on
//     without it, and neither the leader loop nor [Coordinator.Leave] waits
//     for it to return (it is the one goroutine Leave does not wait for).
//     The Balancer is never called concurrently with itself: until the
//     abandoned call returns, the member plans with the built-in
//     rebalance.Sticky instead, logged and counted (kind "fallback"), so a
//     hung Balancer wedges nothing. A Balancer should honour its ctx.
package coordinator
