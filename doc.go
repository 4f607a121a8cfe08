// Package baton gives a group of worker processes single-owner execution of
// work items ("syncs"), coordinated through etcd.
//
// Each replica of a service makes a [coordinator.Coordinator] and calls
// Join; it then receives OnAssign and OnRevoke callbacks for the syncs it
// owns. One member, elected through etcd, balances the syncs across the live
// members with a pluggable [rebalance.Balancer] whenever a member joins,
// leaves or dies, or a sync is added or removed. Admins manage syncs with a
// [coordinator.SyncStore].
//
// # Guarantees
//
//   - At no instant do two members run the same sync (for processes that
//     are not paused; see below). Ownership is an etcd key created only when
//     absent, held by the owner's lease, released only after OnRevoke
//     returns; a member that cannot renew its lease revokes everything by a
//     local deadline that etcd cannot pass before expiring the lease.
//   - Every claim carries a fencing token ([assignment.Claim.Token]) that
//     strictly increases each time the sync changes owner.
//   - Only syncs that move are interrupted; the others run on through every
//     rebalance.
//   - Every valid sync is owned again soon after any fault: within about
//     TTL + 0.6 s after a crash (TTL + Settle + about a second when other
//     changes came just before).
//
// # Failure model
//
// A member that is paused (SIGSTOP, a long GC or VM pause) cannot act on its
// deadline while paused; on resuming, it may run briefly before it notices.
// Fenced writes ([assignment.Claim.Guard], [assignment.Claim.SaveCheckpoint])
// are what stop such a zombie from doing harm: they fail once the sync has
// moved. A deposed leader's late writes fail its election guard.
//
// # Quick start
//
//	h := coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
//		return runSync(ctx, c.Sync()) // until ctx is cancelled
//	})
//	co, err := coordinator.New(cli, "my-group", h)
//	if err != nil { ... }
//	if err := co.Join(ctx); err != nil { ... }
//	defer co.Leave(context.Background())
package baton
