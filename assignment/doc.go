// Package assignment is the data model shared by every part of Baton: the
// [Sync] (a unit of work), the [Member] (a worker process), the [Plan] (which
// member should run which sync), the [Claim] (proof of ownership, carrying a
// fencing token) and the [RevokeReason] given when ownership ends.
//
// # Guarantees
//
// A [Claim]'s [Claim.Token] is the etcd create revision of the sync's owner
// key. etcd revisions only grow, so each time a sync changes owner the token
// strictly increases. Downstream systems that remember the highest token they
// have seen can reject writes from an older owner (a "zombie" that was paused
// or cut off and does not yet know it lost the sync); [Claim.Guard] and
// [Claim.SaveCheckpoint] apply that rule to etcd itself.
//
// # Failure model
//
// [Claim.Deadline] is a local instant computed from the send time of the last
// successful lease renewal. etcd cannot expire the lease before it, so work
// that stops by the deadline never overlaps the next owner. A process that is
// paused (SIGSTOP, a long GC pause, a frozen VM) cannot look at its clock while
// paused, so it may still run for a moment after it resumes; only fenced writes
// ([Claim.Guard], [Claim.SaveCheckpoint]) protect against that window.
package assignment
