// Package election elects one leader among processes through etcd, and tells
// the leader, through a context, the moment its leadership ends.
//
// It is built on go.etcd.io/etcd/client/v3/concurrency: candidates write a
// key under a common prefix, attached to their session's lease, and the
// candidate whose key was created first leads. The keys and their values are
// those of [concurrency.Election], so [concurrency.Election.Observe] and
// etcdctl see the same leader.
//
// # Guarantees
//
//   - [Election.Campaign] returns a leadership context only after checking,
//     in one transaction, that its own key still exists with the create
//     revision it campaigned with and that no older key remains. (etcd's
//     Campaign can return after its lease has expired: etcd issue 19597.)
//   - The leadership context is cancelled as soon as the caller's context
//     ends, the session ends ([concurrency.Session.Done]), the leader key is
//     deleted or replaced (seen by a watch with [clientv3.WithRequireLeader],
//     and by a fresh read whenever that watch breaks, so neither compaction
//     nor an etcd leader change hides it), or [Election.Resign] is called.
//     [context.Cause] says which: the caller's cause, [ErrSessionDone],
//     [ErrLeaderKeyLost] or [ErrResigned].
//   - [Election.Guard] is a comparison to add to a Txn: it holds only while
//     this Election's leader key exists with the create revision it won with.
//     A leader that lost its key without noticing (paused, cut off) has its
//     guarded writes rejected by etcd itself.
//   - Every goroutine an Election starts ends when its leadership context is
//     cancelled; a failed Campaign leaves none behind.
//   - A Campaign that fails (its context ends, its session ends, Resign) deletes
//     the candidate key it wrote, so it never becomes leader unawares.
//
// # Failure model
//
// A leadership context is local knowledge and can be late: a process that is
// paused or cut off from etcd keeps its context until it notices the session
// ended, while etcd may already have expired its lease and elected someone
// else. Only writes guarded by [Election.Guard] are safe against such a
// stale leader. When the caller's context ends, the leader key stays until
// [Election.Resign] or the end of the session, so call Resign to let another
// candidate win promptly. If etcd cannot be reached when a failed Campaign
// cleans up (for at most a few seconds), the key is left to the lease; a
// later Campaign on the same session reuses it and Resign deletes it.
package election
