package coordinator

import "time"

// pacer decides when the leader's next round runs, from the changes the
// leader's watches deliver and the rounds it runs. Its rules:
//
//   - Leading edge: a change after a quiet period (nothing changed and no
//     round ran for settle) is planned at once, so a lone join, drain,
//     crash or new sync costs no debounce.
//   - Coalescing: a change within settle of the last change or round waits
//     for settle of quiet, so a burst (a rolling restart, a deploy that adds
//     many syncs) costs one more round, not one round per change.
//   - A change the caller marks as expected to be followed at once (a member
//     key deleted while a successor with its ID waits to register) is
//     coalesced too, even after quiet: planned at once, the departure would
//     move the member's syncs away and back again.
//   - The term's first round waits settle: a new leader often meets a group
//     that is starting up, one member after another (Kafka's initial
//     rebalance delay plays the same part).
//   - No round waits more than maxWait after the first change not yet
//     planned, so churn cannot starve the plan.
//
// Only the leader loop's goroutine uses it; now is passed in, so that the
// rules are tested without a clock.
type pacer struct {
	settle  time.Duration
	maxWait time.Duration
	leading bool // leading edge on (WithLeadingEdge)

	dirtySince time.Time // first change not yet planned; zero: none
	lastBusy   time.Time // last change or round
	ran        bool      // a round ran this term
}

// change records a change at now and returns how long to wait before the
// round that plans it. coalesce marks a change expected to be followed at
// once by another.
func (p *pacer) change(now time.Time, coalesce bool) time.Duration {
	quiet := p.leading && p.ran && !coalesce && p.dirtySince.IsZero() && now.Sub(p.lastBusy) >= p.settle
	p.lastBusy = now
	if quiet {
		p.dirtySince = now
		return 0
	}
	return p.after(now, p.settle)
}

// after asks for a round d after now (settle after a change, a backoff
// after a failed round), capped by maxWait after the first change not yet
// planned.
func (p *pacer) after(now time.Time, d time.Duration) time.Duration {
	if p.dirtySince.IsZero() {
		p.dirtySince = now
	}
	return max(0, min(d, p.dirtySince.Add(p.maxWait).Sub(now)))
}

// roundDone records a round that ended at now: every change so far is
// planned (or, after a failure, scheduled again by after).
func (p *pacer) roundDone(now time.Time) {
	p.dirtySince = time.Time{}
	p.lastBusy = now
	p.ran = true
}
