package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/recorder"
)

// peerRun is one group of one variant in the peers scenario: ten members
// settle, the steady state is measured, an eleventh joins, then drains
// (Kafka and the ring leave their group), then a member is killed.
type peerRun struct {
	Variant variant    `json:"variant"`
	Rep     int        `json:"rep"`
	Steady  peerSteady `json:"steady"`
	Join    handoffRun `json:"join"`
	Drain   handoffRun `json:"drain"`
	// Kill is the crash of a non-leading member (SIGKILL): its "gaps" run
	// from the kill to each of its syncs running elsewhere, its completion
	// is the failover time.
	Kill       handoffRun `json:"kill"`
	KillVictim string     `json:"kill_victim"`
	// Error is why the run stopped early: a system that does not settle
	// is a result, not a reason to stop the comparison.
	Error string `json:"error,omitempty"`
}

// peerSteady is a settled group's traffic over a quiet window, as its store
// received it, per minute.
type peerSteady struct {
	WindowS float64 `json:"window_s"`
	Members int     `json:"members"`
	// RequestsPerMemberMin: etcd's gRPC messages received (unary requests
	// and stream messages), or the requests kfake received, per member.
	RequestsPerMemberMin float64 `json:"requests_per_member_per_min"`
	// CoordPerMemberMin leaves out Kafka's data path (Fetch, ListOffsets,
	// Metadata…): what it spends on group membership alone. The same as
	// RequestsPerMemberMin on etcd.
	CoordPerMemberMin float64 `json:"coordination_requests_per_member_per_min"`
	// WritesPerMin: etcd's raft proposals, or Kafka's group-state writes
	// (OffsetCommit, JoinGroup, SyncGroup, LeaveGroup, and 848 heartbeats
	// that changed an assignment cannot be told apart: not counted).
	WritesPerMin float64            `json:"writes_per_min"`
	ByKind       map[string]float64 `json:"by_kind,omitempty"` // what the store received in the window, by request kind
}

// kafkaDataPath are Kafka requests a consumer sends to read records, not to
// keep its membership.
var kafkaDataPath = map[string]bool{
	"Fetch": true, "ListOffsets": true, "Metadata": true, "ApiVersions": true,
	"OffsetForLeaderEpoch": true, "FindCoordinator": true, "OffsetFetch": true,
}

// kafkaWrites are Kafka requests that change a group's stored state.
var kafkaWrites = map[string]bool{
	"OffsetCommit": true, "JoinGroup": true, "SyncGroup": true, "LeaveGroup": true,
}

// variants lists the peers scenario's variants: every system at every
// session, and the peers at every heartbeat that fits in the session (a
// Kafka heartbeat at most a third of it, Kafka's own rule of thumb; a ring
// heartbeat at most a quarter, dskit's default ratio: the ring's timestamps
// are whole seconds, so a longer one flaps at a 2 s timeout).
func (b *bench) variants() []variant {
	var out []variant
	for _, sess := range b.cfg.PeerSessions {
		for _, kind := range b.cfg.PeerSystems {
			switch kind {
			case "baton", "baseline":
				out = append(out, variant{Kind: kind, Session: sess})
			case "kafka-classic", "kafka-848":
				for _, hb := range b.cfg.KafkaHeartbeats {
					if hb <= sess/3 {
						out = append(out, variant{Kind: kind, Session: sess, Heartbeat: hb})
					}
				}
			case "ring":
				for _, hb := range b.cfg.RingHeartbeats {
					if hb <= sess/4 {
						out = append(out, variant{Kind: kind, Session: sess, Heartbeat: hb})
					}
				}
			}
		}
	}
	return out
}

// peers runs every variant cfg.PeerReps times, interleaved: each repetition
// runs every variant once, in an order shuffled anew (seeded by the
// repetition, so a rerun keeps the order), so no system always runs first
// or after the same neighbour.
func (b *bench) peers(ctx context.Context) ([]peerRun, error) {
	if b.cfg.PeersBin == "" {
		bin, err := buildPeers()
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(filepath.Dir(bin))
		b.cfg.PeersBin = bin
	}
	vs := b.variants()
	var out []peerRun
	for rep := range b.cfg.PeerReps {
		order := slices.Clone(vs)
		rand.New(rand.NewPCG(uint64(rep), 12)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, v := range order {
			r, err := b.peerOnce(ctx, v)
			r.Rep = rep + 1
			if err != nil {
				if ctx.Err() != nil {
					return out, err
				}
				r.Error = err.Error()
				b.logf("peers %s rep %d/%d: FAILED: %v", v, rep+1, b.cfg.PeerReps, err)
				out = append(out, r)
				continue
			}
			b.logf("peers %s rep %d/%d: steady %.0f req/member/min (%.0f coordination), %.0f writes/min | join moved %d gap p50 %.1fms p99 %.1fms, last %.0fms, overlaps %d, interrupted %d | drain moved %d gap p50 %.1fms, last %.0fms, overlaps %d | kill: %d syncs running elsewhere after %.0fms, overlaps %d",
				v, rep+1, b.cfg.PeerReps, r.Steady.RequestsPerMemberMin, r.Steady.CoordPerMemberMin, r.Steady.WritesPerMin,
				r.Join.Moved, r.Join.GapP50, r.Join.GapP99, r.Join.CompletionMS, r.Join.Overlaps, r.Join.InterruptedUnmoved,
				r.Drain.Moved, r.Drain.GapP50, r.Drain.CompletionMS, r.Drain.Overlaps,
				r.Kill.Moved, r.Kill.CompletionMS, r.Kill.Overlaps)
			out = append(out, r)
		}
	}
	return out, nil
}

// buildPeers builds bench/peers (a module of its own) into a temporary
// directory; the bench runs from the repository's root.
func buildPeers() (string, error) {
	if _, err := os.Stat(filepath.Join("bench", "peers", "go.mod")); err != nil {
		return "", fmt.Errorf("peers: run from the repository's root, or give -peers-bin (%w)", err)
	}
	dir, err := os.MkdirTemp("", "baton-peers-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "peers")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("bench", "peers")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build bench/peers: %w", err)
	}
	return bin, nil
}

func (b *bench) peerOnce(ctx context.Context, v variant) (peerRun, error) {
	r := peerRun{Variant: v}
	sh := b.cfg.PeerShape
	sys := &procSystem{b: b, v: v, items: sh.Syncs}
	g, err := b.newGroup(ctx, sys, "peers", sh.Syncs)
	if err != nil {
		return r, err
	}
	defer g.close()
	if err := g.join(ctx, memberIDs("m", sh.Members)...); err != nil {
		return r, err
	}
	if _, err := g.settle(ctx, b.cfg.Timeout); err != nil {
		return r, err
	}
	if r.Steady, err = b.peerSteady(ctx, g, sys, sh.Members); err != nil {
		return r, fmt.Errorf("steady: %w", err)
	}
	const newcomer = "m-new"
	if r.Join, err = g.phase(ctx, func() error { return g.join(ctx, newcomer) }); err != nil {
		return r, fmt.Errorf("join: %w", err)
	}
	r.Drain, err = g.phase(ctx, func() error {
		delete(g.active, newcomer)
		dctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		defer cancel()
		return g.live[newcomer].drain(dctx)
	})
	if err != nil {
		return r, fmt.Errorf("drain: %w", err)
	}
	// The newcomer has left (or, Baton and the baseline, runs nothing):
	// stop it so the kill is the only change.
	lctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	err = g.live[newcomer].leave(lctx)
	cancel()
	if err != nil {
		return r, fmt.Errorf("leave after drain: %w", err)
	}
	// It has left: it must be gone before the kill, or it could still
	// act during it.
	select {
	case <-g.live[newcomer].stopped():
	case <-time.After(b.cfg.Timeout):
		g.live[newcomer].crash()
		<-g.live[newcomer].stopped()
	}
	delete(g.live, newcomer)
	if _, err := g.settle(ctx, b.cfg.Timeout); err != nil {
		return r, fmt.Errorf("after leave: %w", err)
	}
	victim := g.nonLeader()
	if victim == nil {
		return r, fmt.Errorf("no member to kill")
	}
	r.KillVictim = victim.id()
	r.Kill, err = g.phase(ctx, func() error {
		g.crash(victim, recorder.Now())
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("kill: %w", err)
	}
	return r, nil
}

// peerSteady measures what the store receives from a settled group over
// cfg.PeerSteady.
func (b *bench) peerSteady(ctx context.Context, g *groupRun, sys *procSystem, members int) (peerSteady, error) {
	etcd0, err := b.env.readServerCounters()
	if err != nil {
		return peerSteady{}, err
	}
	kafka0, err := sys.storeUsage(ctx, g.group)
	if err != nil {
		return peerSteady{}, err
	}
	start := time.Now()
	select {
	case <-time.After(b.cfg.PeerSteady):
	case <-ctx.Done():
		return peerSteady{}, ctx.Err()
	}
	win := time.Since(start)
	etcd1, err := b.env.readServerCounters()
	if err != nil {
		return peerSteady{}, err
	}
	etcd := etcd1.sub(etcd0)
	kafka1, err := sys.storeUsage(ctx, g.group)
	if err != nil {
		return peerSteady{}, err
	}
	perMin := func(x float64) float64 { return x * float64(time.Minute) / float64(win) }
	s := peerSteady{WindowS: win.Seconds(), Members: members}
	if kafka1 == nil {
		s.RequestsPerMemberMin = perMin(etcd.Requests) / float64(members)
		s.CoordPerMemberMin = s.RequestsPerMemberMin
		s.WritesPerMin = perMin(etcd.Proposals)
		s.ByKind = etcd.ByMethod
		return s, nil
	}
	s.ByKind = map[string]float64{}
	var all, coord, writes int64
	for k, n := range kafka1 {
		d := n - kafka0[k]
		if d == 0 {
			continue
		}
		s.ByKind[k] = float64(d)
		all += d
		if !kafkaDataPath[k] {
			coord += d
		}
		if kafkaWrites[k] {
			writes += d
		}
	}
	s.RequestsPerMemberMin = perMin(float64(all)) / float64(members)
	s.CoordPerMemberMin = perMin(float64(coord)) / float64(members)
	s.WritesPerMin = perMin(float64(writes))
	return s, nil
}

// parseDurations parses a comma-separated list of durations.
func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("duration %q: want a positive duration", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// writePeers prints the peers scenario: one table per session, a column per
// system and heartbeat, medians over the repetitions.
func writePeers(w io.Writer, runs []peerRun) {
	if len(runs) == 0 {
		return
	}
	bySession := map[time.Duration][]peerRun{}
	var sessions []time.Duration
	for _, r := range runs {
		if _, ok := bySession[r.Variant.Session]; !ok {
			sessions = append(sessions, r.Variant.Session)
		}
		bySession[r.Variant.Session] = append(bySession[r.Variant.Session], r)
	}
	slices.Sort(sessions)
	for _, sess := range sessions {
		rs := bySession[sess]
		byVariant := map[string][]peerRun{}
		var cols []variant
		for _, r := range rs {
			k := r.Variant.String()
			if _, ok := byVariant[k]; !ok {
				cols = append(cols, r.Variant)
			}
			byVariant[k] = append(byVariant[k], r)
		}
		slices.SortStableFunc(cols, func(a, b variant) int {
			return cmp.Or(cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)), cmp.Compare(b.Heartbeat, a.Heartbeat))
		})
		names := make([]string, len(cols))
		for i, v := range cols {
			names[i] = v.Kind
			if v.Heartbeat > 0 {
				names[i] += " hb " + v.Heartbeat.String()
			}
		}
		reps := 0
		for _, r := range byVariant[cols[0].String()] {
			if r.Error == "" {
				reps++
			}
		}
		fmt.Fprintf(w, "\n### Beside the peers: session %v (lease TTL = session timeout = heartbeat timeout), medians of the completed runs (%d each, unless the first row says fewer)\n\n| figure |", sess, reps)
		for _, n := range names {
			fmt.Fprintf(w, " %s |", n)
		}
		fmt.Fprint(w, "\n|---|")
		for range cols {
			fmt.Fprint(w, "---:|")
		}
		fmt.Fprintln(w)
		row := func(name string, f func(peerRun) float64) {
			fmt.Fprintf(w, "| %s |", name)
			for _, v := range cols {
				var ok []peerRun
				for _, r := range byVariant[v.String()] {
					if r.Error == "" {
						ok = append(ok, r)
					}
				}
				fmt.Fprintf(w, " %s |", num(median(field(ok, f))))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, "| runs that failed (see the log: did not start, or did not settle in time) |")
		for _, v := range cols {
			failed := 0
			for _, r := range byVariant[v.String()] {
				if r.Error != "" {
					failed++
				}
			}
			fmt.Fprintf(w, " %d of %d |", failed, len(byVariant[v.String()]))
		}
		fmt.Fprintln(w)
		row("steady: store requests / member / min", func(r peerRun) float64 { return r.Steady.RequestsPerMemberMin })
		row("steady: of them for membership", func(r peerRun) float64 { return r.Steady.CoordPerMemberMin })
		row("steady: store writes / min", func(r peerRun) float64 { return r.Steady.WritesPerMin })
		for _, ph := range []struct {
			name string
			f    func(peerRun) handoffRun
		}{
			{"join", func(r peerRun) handoffRun { return r.Join }},
			{"drain", func(r peerRun) handoffRun { return r.Drain }},
		} {
			row(ph.name+": syncs moved", func(r peerRun) float64 { return float64(ph.f(r).Moved) })
			row(ph.name+": gap p50 (ms; moves without overlap)", func(r peerRun) float64 { return ph.f(r).GapP50 })
			row(ph.name+": gap p99 (ms)", func(r peerRun) float64 { return ph.f(r).GapP99 })
			row(ph.name+": change → last moved running alone (ms)", func(r peerRun) float64 { return ph.f(r).CompletionMS })
			row(ph.name+": moved syncs that had two owners at once", func(r peerRun) float64 { return float64(ph.f(r).MovedOverlapped) })
			row(ph.name+": overlaps (two owners)", func(r peerRun) float64 { return float64(ph.f(r).Overlaps) })
			row(ph.name+": longest overlap (ms)", func(r peerRun) float64 { return ph.f(r).OverlapMaxMS })
			row(ph.name+": unmoved syncs interrupted", func(r peerRun) float64 { return float64(ph.f(r).InterruptedUnmoved) })
		}
		row("kill -9: victim's syncs", func(r peerRun) float64 { return float64(r.Kill.Moved) })
		row("kill -9: first running elsewhere (ms)", func(r peerRun) float64 { return minOf(r.Kill.Gaps) })
		row("kill -9: all running elsewhere (ms)", func(r peerRun) float64 { return r.Kill.CompletionMS })
		row("kill -9: overlaps", func(r peerRun) float64 { return float64(r.Kill.Overlaps) })
		row("kill -9: other syncs interrupted", func(r peerRun) float64 { return float64(r.Kill.InterruptedUnmoved) })
	}
}

func kindOrder(k string) int {
	return slices.Index([]string{"baton", "baseline", "kafka-classic", "kafka-848", "ring"}, k)
}

func minOf(xs []float64) float64 {
	out := math.NaN()
	for _, x := range xs {
		if math.IsNaN(out) || x < out {
			out = x
		}
	}
	return out
}
