package coordinator

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	const settle = 250 * time.Millisecond
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	newPacer := func(leading bool) *pacer {
		p := &pacer{settle: settle, maxWait: time.Second, leading: leading}
		// The term's first round.
		if got := p.after(at(0), settle); got != settle {
			t.Fatalf("first round of the term after %v, want %v", got, settle)
		}
		p.roundDone(at(settle))
		return p
	}

	t.Run("the first change after quiet is planned at once", func(t *testing.T) {
		p := newPacer(true)
		if got := p.change(at(10*time.Second), false); got != 0 {
			t.Fatalf("change after quiet waits %v, want 0", got)
		}
	})
	t.Run("changes within settle of a round are coalesced", func(t *testing.T) {
		p := newPacer(true)
		now := 10 * time.Second
		p.change(at(now), false)
		p.roundDone(at(now + 5*time.Millisecond))
		if got := p.change(at(now+20*time.Millisecond), false); got != settle {
			t.Fatalf("change 15ms after a round waits %v, want %v", got, settle)
		}
		if got := p.change(at(now+100*time.Millisecond), false); got != settle {
			t.Fatalf("second change of the burst waits %v, want %v (settle of quiet)", got, settle)
		}
	})
	t.Run("changes within settle of a change are coalesced", func(t *testing.T) {
		p := newPacer(true)
		now := 10 * time.Second
		p.change(at(now), false) // round not run yet
		if got := p.change(at(now+time.Millisecond), false); got != settle {
			t.Fatalf("change 1ms after a change waits %v, want %v", got, settle)
		}
	})
	t.Run("quiet is measured from the last change, not the last round", func(t *testing.T) {
		p := newPacer(true)
		// A change every 200ms keeps the group busy: none is leading.
		for i := range 4 {
			now := 10*time.Second + time.Duration(i)*200*time.Millisecond
			if got := p.change(at(now), false); i > 0 && got == 0 {
				t.Fatalf("change %d, 200ms after the last, planned at once", i)
			}
			if i == 0 {
				p.roundDone(at(now))
			}
		}
	})
	t.Run("an awaited departure is coalesced even after quiet", func(t *testing.T) {
		p := newPacer(true)
		if got := p.change(at(10*time.Second), true); got != settle {
			t.Fatalf("awaited departure waits %v, want %v", got, settle)
		}
	})
	t.Run("the term's first round waits settle even for a change", func(t *testing.T) {
		p := &pacer{settle: settle, maxWait: time.Second, leading: true}
		p.after(at(0), settle)
		if got := p.change(at(100*time.Millisecond), false); got != settle {
			t.Fatalf("a change before the term's first round waits %v, want %v", got, settle)
		}
	})
	t.Run("off, every change waits settle", func(t *testing.T) {
		p := newPacer(false)
		if got := p.change(at(10*time.Second), false); got != settle {
			t.Fatalf("change after quiet with the leading edge off waits %v, want %v", got, settle)
		}
	})
	t.Run("churn cannot starve the round", func(t *testing.T) {
		p := newPacer(true)
		start := 10 * time.Second
		p.change(at(start), false)
		p.roundDone(at(start))
		var got time.Duration
		for now := start + time.Millisecond; now < start+2*time.Second; now += 100 * time.Millisecond {
			got = p.change(at(now), false)
			if now-start+time.Millisecond > time.Second && got > time.Second {
				t.Fatalf("round %v away", got)
			}
		}
		if got != 0 {
			t.Fatalf("after 2s of churn the round is %v away; maxWait is 1s", got)
		}
	})
	t.Run("a failed round's backoff is capped by maxWait", func(t *testing.T) {
		p := newPacer(true)
		p.roundDone(at(10 * time.Second))
		if got := p.after(at(10*time.Second), 30*time.Second); got != time.Second {
			t.Fatalf("backoff of 30s gave %v, want maxWait 1s", got)
		}
	})
}
