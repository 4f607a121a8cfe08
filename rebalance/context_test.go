package rebalance

import (
	"context"
	"errors"
	"math"
	"testing"
)

// expiringContext is a context whose end is deterministic: Err reports
// DeadlineExceeded from the call after the first `after` on (and Done is
// closed from then on). It counts the calls, so a test can tell how often a
// balancer looks at its context and how soon it gives up.
type expiringContext struct {
	context.Context
	after, calls int
	done         chan struct{}
}

func expiresAfter(n int) *expiringContext {
	return &expiringContext{Context: context.Background(), after: n, done: make(chan struct{})}
}

func (c *expiringContext) Err() error {
	c.calls++
	if c.calls > c.after {
		select {
		case <-c.done:
		default:
			close(c.done)
		}
		return context.DeadlineExceeded
	}
	return nil
}

func (c *expiringContext) Done() <-chan struct{} { return c.done }

// Every phase of every built-in balancer polls its context, so a deadline
// that passes while the input is prepared (IDs sorted, constraint groups
// found, fair shares computed) ends the call there, with the context's
// error. The input is the worst case for that: many constraint groups and,
// as Current, the balancer's own plan, so nothing is left to place or move
// after the preparation.
func TestBalancersPollContextWhileBuilding(t *testing.T) {
	in := constrainedInput(20_000, 200, 6, true)
	for name, b := range balancers() {
		t.Run(name, func(t *testing.T) {
			in := in
			in.Current = balance(t, b, in)
			full := expiresAfter(math.MaxInt)
			if _, err := b.Balance(full, in); err != nil {
				t.Fatal(err)
			}
			// At least one look per few thousand syncs.
			if min := len(in.Syncs) / 4096; full.calls < min {
				t.Fatalf("looked at its context %d times for %d syncs, want at least %d", full.calls, len(in.Syncs), min)
			}
			for _, after := range []int{1, full.calls / 2, full.calls - 1} {
				ctx := expiresAfter(after)
				plan, err := b.Balance(ctx, in)
				if !errors.Is(err, context.DeadlineExceeded) || plan != nil {
					t.Fatalf("context ended after %d of %d looks: got a plan of %d syncs and error %v, want the context's error", after, full.calls, len(plan), err)
				}
				// It stops at the first look that sees the end (and reads
				// Err once more to wrap it).
				if ctx.calls > after+2 {
					t.Fatalf("context ended after %d looks, balancer went on to %d", after, ctx.calls)
				}
			}
		})
	}
}
