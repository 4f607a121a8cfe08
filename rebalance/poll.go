package rebalance

import (
	"context"
	"fmt"
)

// pollEvery is how many units of work (a sync looked at, a member of a
// group handled, a move made) a balancer does between two looks at its
// context: a few thousand units take well under a millisecond, so a
// deadline is noticed at once, while ctx.Err, which takes a lock in the
// standard contexts, stays off the profile.
const pollEvery = 4096

// poller looks at a context once per pollEvery units of work. The leader
// gives a Balancer a deadline and abandons it when the deadline passes, so
// every phase of a built-in balancer (preparing the input included, which
// with many constraint groups is much of the work) reports work here.
type poller struct {
	ctx  context.Context
	work int // units of work done since the last look
}

// add counts n units of work and, when a look is due, returns the
// context's error (wrapped) if it is done.
func (pl *poller) add(n int) error {
	if pl.work += n; pl.work < pollEvery {
		return nil
	}
	pl.work = 0
	if pl.ctx.Err() != nil {
		return stopped(pl.ctx)
	}
	return nil
}

// count counts n units of work without looking at the context, for code
// that cannot stop where it is; the next add looks if one is due.
func (pl *poller) count(n int) { pl.work += n }

// stopped is the error a built-in balancer returns once ctx is done.
func stopped(ctx context.Context) error {
	return fmt.Errorf("rebalance: stopped: %w", ctx.Err())
}
