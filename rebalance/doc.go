// Package rebalance decides which member of a Baton group runs which sync:
// the [Balancer] interface the leader calls, the [Input] it plans from,
// [Validate] for the plans it returns, and the built-in balancers [Sticky]
// (the default), [RoundRobin], [Rendezvous] and the [Throttle] wrapper.
//
// # Guarantees
//
// Every built-in balancer is deterministic (the plan depends only on the
// members, syncs and current owners, never on the order of the input slices,
// maps or time), returns promptly once its context is done, never modifies
// or keeps its input, and returns a plan that [Validate] accepts. [Sticky]
// also returns its own plan unchanged when given it as Current, so the
// leader's reruns do not move anything. [Throttle] over Sticky does so only
// once its rounds have reached Sticky's plan: until then each rerun, given
// the previous round's plan, makes the next at most maxMoves moves, which is
// what it is for.
//
// # Constraints
//
// A sync label whose key starts with [RequirePrefix] ("require:") is a
// placement constraint: "require:region": "eu" lets the sync run only on
// members labelled region=eu (the label must exist and match exactly).
// Constraints add up: every require: label must be met. [Eligible] tells
// whether a member meets a sync's constraints. A sync that no live member
// is eligible for stays unassigned, never placed on a wrong member;
// [Unassignable] lists those syncs.
//
// # Draining
//
// A draining member is a last resort: a sync goes to a draining member only
// if every member eligible for it is draining. Then a draining member may
// keep it, or take it, so that the work keeps running until a member that
// is not draining can take over. Draining is a request to move work away,
// not a loss of the member; a member that must stop leaves the group, and
// only then can its syncs go unassigned. The consequence for Drain: a member
// that is the only one eligible for some syncs keeps them, and its Drain
// waits until another eligible member joins (or its context ends).
//
// # Weights
//
// A member's weight is its capacity and a sync's weight its cost, both
// read with EffectiveWeight (0 or less counts as 1) and capped at 2²⁴ units.
// A member's fair share is its weight's part of the total sync weight;
// with constraints, each constrained set of syncs is first shared among the
// members that may run it, and the rest fills in around it.
package rebalance
