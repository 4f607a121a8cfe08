package assignment

import "fmt"

// RevokeReason says why a member's ownership of a sync ended.
type RevokeReason int

const (
	// Rebalanced: the leader moved the sync to another member.
	Rebalanced RevokeReason = iota + 1
	// Removed: the sync was deleted, or its spec became invalid.
	Removed
	// SpecChanged: the spec changed and the handler does not implement
	// Updater; OnAssign follows at once on the same member, same token.
	SpecChanged
	// Draining: this member is draining and the sync was moved away.
	Draining
	// Leaving: this member is leaving the group.
	Leaving
	// LeaseLost: the membership lease could not be renewed in time; the
	// revoke has a hard budget that ends at the claim's deadline.
	LeaseLost
	// Failed: OnAssign returned an error or panicked, or a Runner's run
	// function failed; the sync is released and claimed again after a backoff.
	Failed
	// Shutdown: the coordinator stopped for good (its etcd client closed).
	Shutdown
)

var reasonNames = [...]string{
	Rebalanced:  "rebalanced",
	Removed:     "removed",
	SpecChanged: "spec-changed",
	Draining:    "draining",
	Leaving:     "leaving",
	LeaseLost:   "lease-lost",
	Failed:      "failed",
	Shutdown:    "shutdown",
}

// String returns the reason's stable name, such as "lease-lost", used in
// logs and metric labels.
func (r RevokeReason) String() string {
	if r > 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("RevokeReason(%d)", int(r))
}

// Planned reports whether the revoke was asked for while the claim is still
// safely held (no deadline pressure), so OnRevoke may take as long as it needs.
func (r RevokeReason) Planned() bool {
	switch r {
	case Rebalanced, Removed, SpecChanged, Draining, Leaving, Failed:
		return true
	}
	return false
}

// Reasons lists every RevokeReason, in order.
func Reasons() []RevokeReason {
	return []RevokeReason{Rebalanced, Removed, SpecChanged, Draining, Leaving, LeaseLost, Failed, Shutdown}
}
