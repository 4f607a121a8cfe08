package rebalance

import (
	"context"

	"github.com/baton-go/baton/assignment"
)

// Balancer decides which member runs which sync. The Baton leader calls it
// after membership or the set of syncs changes and writes the plan it returns
// once [Validate] accepts it; a plan that fails validation, an error, a panic
// or an overrun of the leader's time budget leaves the previous targets in
// force.
//
// The leader calls Balance from one goroutine, never concurrently with
// itself, not even with a call it abandoned because it ignored its ctx past
// the budget (until that call returns, the leader plans with [Sticky]
// instead). It guarantees about its Input:
//
//   - Members holds only live members, sorted by ID, with unique IDs.
//   - Syncs holds only syncs with a valid spec, sorted by ID, with unique IDs.
//   - Current is what runs now (actual owners, else the last targets). It may
//     name members that have since gone and syncs that no longer exist; a
//     Balancer must ignore such entries. A sync absent from Current is
//     unassigned.
//
// What a Balancer must do in return:
//
//   - Read the Input but neither modify it nor keep any of its slices or
//     maps after returning, and not keep the returned plan either: the
//     leader owns all of them.
//   - Be deterministic: the same Input yields the same plan, whatever the
//     order of Members and Syncs (the built-in balancers sort defensively
//     rather than trust the order). A new leader that recomputes the plan
//     must not move syncs only because it is a different process.
//   - Return promptly, with ctx's error, once ctx is done.
//   - Return a plan that passes [Validate]: every sync that some live member
//     may run is assigned, to a live member that meets the sync's constraints
//     ([Eligible]) and is not draining unless every eligible member is. A sync
//     absent from the plan is unassigned.
//
// Balancers should also be stable: given its own plan as Current, a Balancer
// should return it unchanged, so the leader's reruns do not churn.
type Balancer interface {
	Balance(ctx context.Context, in Input) (assignment.Plan, error)
}

// BalancerFunc adapts a function to the [Balancer] interface.
type BalancerFunc func(ctx context.Context, in Input) (assignment.Plan, error)

// Balance calls f(ctx, in).
func (f BalancerFunc) Balance(ctx context.Context, in Input) (assignment.Plan, error) {
	return f(ctx, in)
}

// Input is what a [Balancer] plans from. See [Balancer] for what the leader
// guarantees about each field.
type Input struct {
	// Members are the live members, sorted by ID.
	Members []assignment.Member
	// Syncs are the valid syncs, sorted by ID.
	Syncs []assignment.Sync
	// Current maps each sync to the member running it now. It may hold stale
	// entries (departed members, deleted syncs), which balancers ignore.
	Current assignment.Plan
}
