package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// table is a Markdown table with one row per figure and one column per
// system, plus Baton ÷ baseline when both ran.
type table struct {
	w       io.Writer
	systems []string
}

func (t table) header(title string) {
	fmt.Fprintf(t.w, "\n### %s\n\n| figure |", title)
	for _, s := range t.systems {
		fmt.Fprintf(t.w, " %s |", s)
	}
	if t.ratio() {
		fmt.Fprint(t.w, " Baton ÷ baseline |")
	}
	fmt.Fprint(t.w, "\n|---|")
	for range t.systems {
		fmt.Fprint(t.w, "---:|")
	}
	if t.ratio() {
		fmt.Fprint(t.w, "---:|")
	}
	fmt.Fprintln(t.w)
}

// ratio reports whether the table has Baton's and the baseline's columns.
func (t table) ratio() bool {
	return slices.Contains(t.systems, "baton") && slices.Contains(t.systems, "baseline")
}

// row prints one figure; vals has one value per system (NaN: not measured).
func (t table) row(name string, vals ...float64) {
	fmt.Fprintf(t.w, "| %s |", name)
	for _, v := range vals {
		fmt.Fprintf(t.w, " %s |", num(v))
	}
	if t.ratio() {
		fmt.Fprintf(t.w, " %s |", ratio(vals[slices.Index(t.systems, "baton")], vals[slices.Index(t.systems, "baseline")]))
	}
	fmt.Fprintln(t.w)
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(a, b float64) string {
	switch {
	case math.IsNaN(a) || math.IsNaN(b):
		return "—"
	case b == 0 && a == 0:
		return "="
	case b == 0:
		return "∞"
	}
	r := a / b
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// per applies f to each system's runs; a system without runs gives NaN.
func per[T any](systems []string, runs map[string][]T, f func([]T) float64) []float64 {
	out := make([]float64, len(systems))
	for i, s := range systems {
		if len(runs[s]) == 0 {
			out[i] = math.NaN()
			continue
		}
		out[i] = f(runs[s])
	}
	return out
}

func med[T any](f func(T) float64) func([]T) float64 {
	return func(rs []T) float64 { return median(field(rs, f)) }
}

func worst[T any](f func(T) float64) func([]T) float64 {
	return func(rs []T) float64 { return maxOf(field(rs, f)) }
}

func sum[T any](f func(T) float64) func([]T) float64 {
	return func(rs []T) float64 {
		var s float64
		for _, r := range rs {
			s += f(r)
		}
		return s
	}
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func writeTable(w io.Writer, res *results) {
	c := res.Config
	fsync := fmt.Sprintf("fsync %v", c.Fsync)
	if c.Endpoints != "" {
		fsync = "fsync as the cluster is set"
	}
	fmt.Fprintf(w, "## Baton benchmark\n\n%s, %d CPUs, %s, %s; etcd %s, %s; TTL %v, settle %v. Took %s.\n",
		res.Machine.CPU, res.Machine.CPUs, res.Machine.GoVersion, res.Machine.OS, etcdKind(c), fsync, c.TTL, c.Settle, res.Took)
	fmt.Fprintf(w, "\n`%s`\n", res.Command)
	t := table{w: w, systems: c.Systems}

	if len(res.Handoff) > 0 {
		for _, ev := range []string{"join", "drain"} {
			runs := map[string][]handoffRun{}
			for s, p := range res.Handoff {
				runs[s] = p.Join
				if ev == "drain" {
					runs[s] = p.Drain
				}
			}
			what := "a member joins"
			if ev == "drain" {
				what = "the newcomer drains"
			}
			t.header(fmt.Sprintf("Planned handoff: %s (%v syncs×members; medians of %d runs)", what, c.Handoff, c.Reps))
			t.row("syncs moved", per(t.systems, runs, med(func(r handoffRun) float64 { return float64(r.Moved) }))...)
			t.row("gap per moved sync, p50 (ms)", per(t.systems, runs, med(func(r handoffRun) float64 { return r.GapP50 }))...)
			t.row("gap per moved sync, p99 (ms)", per(t.systems, runs, med(func(r handoffRun) float64 { return r.GapP99 }))...)
			t.row("gap per moved sync, max of all runs (ms)", per(t.systems, runs, worst(func(r handoffRun) float64 { return r.GapMax }))...)
			t.row("unmoved syncs interrupted (all runs)", per(t.systems, runs, sum(func(r handoffRun) float64 { return float64(r.InterruptedUnmoved) }))...)
			t.row("extra moves (all runs)", per(t.systems, runs, sum(func(r handoffRun) float64 { return float64(r.ExtraMoves) }))...)
			t.row("change → last moved sync running (ms)", per(t.systems, runs, med(func(r handoffRun) float64 { return r.CompletionMS }))...)
			t.row("busiest member ÷ mean, after", per(t.systems, runs, med(func(r handoffRun) float64 { return r.Spread }))...)
			t.row("etcd requests (client side, all members)", per(t.systems, runs, med(func(r handoffRun) float64 { return float64(r.Cost.Requests) }))...)
			t.row("  of which writes", per(t.systems, runs, med(func(r handoffRun) float64 { return float64(r.Cost.Writes) }))...)
			t.row("etcd requests per moved sync", per(t.systems, runs, med(func(r handoffRun) float64 { return safeDiv(float64(r.Cost.Requests), float64(r.Moved)) }))...)
			t.row("bytes sent per moved sync", per(t.systems, runs, med(func(r handoffRun) float64 { return safeDiv(float64(r.Cost.BytesSent), float64(r.Moved)) }))...)
			t.row("bytes received (watch events, replies)", per(t.systems, runs, med(func(r handoffRun) float64 { return float64(r.Cost.BytesRecv) }))...)
			t.row("raft proposals (server)", per(t.systems, runs, med(func(r handoffRun) float64 { return r.Cost.Server.Proposals }))...)
			t.row("WAL bytes written (server)", per(t.systems, runs, med(func(r handoffRun) float64 { return r.Cost.Server.WALBytes }))...)
			if _, ok := runs["baton"]; ok {
				t.row("Baton plan rounds", per(t.systems, runs, med(func(r handoffRun) float64 { return orNaN(r.Cost.Rebalances) }))...)
			}
		}
	}

	if len(res.Failover) > 0 {
		t.header(fmt.Sprintf("Crash failover (%v syncs×members; crash → every sync of the victim running elsewhere; %d crashes per row)", c.Failover, c.FailoverReps))
		for _, ttl := range c.FailoverTTLs {
			for _, victim := range []string{"member", "leader"} {
				runs := map[string][]failoverRun{}
				for s, rs := range res.Failover {
					for _, r := range rs {
						if r.TTL == ttl.String() && r.Victim == victim {
							runs[s] = append(runs[s], r)
						}
					}
				}
				if len(runs) == 0 {
					continue
				}
				label := fmt.Sprintf("TTL %v, non-leader crash", ttl)
				if victim == "leader" {
					label = fmt.Sprintf("TTL %v, leader crash", ttl)
				}
				t.row(label+": median (ms)", per(t.systems, runs, med(func(r failoverRun) float64 { return r.AllMS }))...)
				t.row(label+": max (ms)", per(t.systems, runs, worst(func(r failoverRun) float64 { return r.AllMS }))...)
				t.row(label+": first sync running elsewhere, median (ms)", per(t.systems, runs, med(func(r failoverRun) float64 { return r.FirstMS }))...)
				t.row(fmt.Sprintf("%s: within TTL + settle + 1s = %v (runs)", label, ttl+c.Settle+1e9), per(t.systems, runs, sum(func(r failoverRun) float64 {
					if r.WithinOK {
						return 1
					}
					return 0
				}))...)
				t.row(fmt.Sprintf("%s: within TTL + 0.6s = %v (runs)", label, ttl+leadingSlack), per(t.systems, runs, sum(func(r failoverRun) float64 {
					if r.WithinLeading {
						return 1
					}
					return 0
				}))...)
			}
		}
	}

	if len(res.Rolling) > 0 {
		rt := table{w: w, systems: slices.DeleteFunc(slices.Clone(c.Systems), func(s string) bool { return !isBaton(s) })}
		for _, mode := range []string{"restart", "leave"} {
			runs := map[string][]rollingRun{}
			for s, rs := range res.Rolling {
				for _, r := range rs {
					if r.Mode == mode {
						runs[s] = append(runs[s], r)
					}
				}
			}
			what := "each member killed and started again at once with its ID (TTL %v)"
			if mode == "leave" {
				what = "each member calls Leave, then starts again with its ID (TTL %v)"
			}
			rt.header(fmt.Sprintf("Rolling restart, %v syncs×members: "+what, c.Rolling, c.RollingTTL))
			rt.row("syncs moved to another member", per(rt.systems, runs, med(func(r rollingRun) float64 { return float64(r.Moves) }))...)
			rt.row("syncs restarted on their member", per(rt.systems, runs, med(func(r rollingRun) float64 { return float64(r.Returns) }))...)
			rt.row("plan rounds written", per(rt.systems, runs, med(func(r rollingRun) float64 { return r.Rounds }))...)
			rt.row("member down → group balanced again, median (ms)", per(rt.systems, runs, med(func(r rollingRun) float64 { return percentile(r.PerMemberMS, 50) }))...)
			rt.row("whole rolling restart (ms)", per(rt.systems, runs, med(func(r rollingRun) float64 { return r.TookMS }))...)
			rt.row("etcd writes", per(rt.systems, runs, med(func(r rollingRun) float64 { return float64(r.Cost.Writes) }))...)
		}
	}

	if len(res.Cold) > 0 {
		for _, sh := range c.Cold {
			runs := map[string][]coldRun{}
			for s, rs := range res.Cold {
				for _, r := range rs {
					if r.Syncs == sh.Syncs && r.Members == sh.Members {
						runs[s] = append(runs[s], r)
					}
				}
			}
			t.header(fmt.Sprintf("Cold start: %d syncs on %d members, all starting at once (medians of %d runs)", sh.Syncs, sh.Members, c.ColdReps))
			t.row("first join → every sync running (ms)", per(t.systems, runs, med(func(r coldRun) float64 { return r.AllOwnedMS }))...)
			t.row("first join → balanced (ms)", per(t.systems, runs, med(func(r coldRun) float64 { return r.BalancedMS }))...)
			t.row("extra moves", per(t.systems, runs, med(func(r coldRun) float64 { return float64(r.ExtraMoves) }))...)
			t.row("busiest member ÷ mean", per(t.systems, runs, med(func(r coldRun) float64 { return r.Spread }))...)
			t.row("etcd requests", per(t.systems, runs, med(func(r coldRun) float64 { return float64(r.Cost.Requests) }))...)
			t.row("  of which writes", per(t.systems, runs, med(func(r coldRun) float64 { return float64(r.Cost.Writes) }))...)
			t.row("raft proposals (server)", per(t.systems, runs, med(func(r coldRun) float64 { return r.Cost.Server.Proposals }))...)
			t.row("WAL MB written (server)", per(t.systems, runs, med(func(r coldRun) float64 { return r.Cost.Server.WALBytes / (1 << 20) }))...)
			t.row("MB received by members (watch events, replies)", per(t.systems, runs, med(func(r coldRun) float64 { return float64(r.Cost.BytesRecv) / (1 << 20) }))...)
			t.row("largest etcd request sent (KiB)", per(t.systems, runs, med(func(r coldRun) float64 { return float64(r.MaxRequest) / (1 << 10) }))...)
		}
	}

	if len(res.Steady) > 0 {
		runs := map[string][]steadyRun{}
		var sh string
		for s, r := range res.Steady {
			if r != nil {
				runs[s] = []steadyRun{*r}
				sh = fmt.Sprintf("%d syncs on %d members, %.0fs window", r.Syncs, r.Members, r.WindowS)
			}
		}
		if len(runs) > 0 {
			t.header(fmt.Sprintf("Steady state: %s, per minute, all members (TTL %v)", sh, c.TTL))
			t.row("requests", per(t.systems, runs, med(func(r steadyRun) float64 { return r.RequestsPerMin }))...)
			t.row("  lease keep-alives", per(t.systems, runs, med(func(r steadyRun) float64 { return r.KeepAlivesPerMin }))...)
			t.row("  keep-alive streams opened", per(t.systems, runs, med(func(r steadyRun) float64 { return r.KeepAliveStreams }))...)
			t.row("  anything else", per(t.systems, runs, med(func(r steadyRun) float64 { return r.OtherPerMin }))...)
			t.row("writes", per(t.systems, runs, med(func(r steadyRun) float64 { return r.WritesPerMin }))...)
			t.row("raft proposals (server)", per(t.systems, runs, med(func(r steadyRun) float64 { return r.ProposalsPerMin }))...)
			t.row("bytes sent", per(t.systems, runs, med(func(r steadyRun) float64 { return r.BytesSentPerMin }))...)
			t.row("requests per member", per(t.systems, runs, med(func(r steadyRun) float64 { return r.PerMemberReqPerMn }))...)
		}
	}

	if len(res.Memory) > 0 {
		fmt.Fprintf(w, "\n### Memory of one member (its own process; after two forced GCs)\n\n")
		fmt.Fprintln(w, "| member | group (syncs×members) | syncs it runs | live heap (MB) | over an idle client (MB) | heap in use (MB) | goroutine stacks (MB) | goroutines |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
		for _, m := range res.Memory {
			grp := "—"
			if m.Syncs > 0 {
				grp = fmt.Sprintf("%d×%d", m.Syncs, m.Members)
			}
			name := m.System + " " + m.Role
			if m.System == "idle" {
				name = "idle child (etcd client only)"
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %d |\n", name, grp, m.Owned, num(m.HeapLiveMB), num(m.NetMB), num(m.HeapMB), num(m.StackMB), m.Goroutines)
		}
	}

	writePeers(w, res.Peers)

	bad := 0
	for _, v := range res.Checks {
		if v != "ok" {
			bad++
		}
	}
	fmt.Fprintf(w, "\nSingle-owner check (recorder) over %d groups: %s.\n", len(res.Checks), map[bool]string{true: "no violation", false: fmt.Sprintf("%d groups with violations (see JSON)", bad)}[bad == 0])
}

func orNaN(v float64) float64 {
	if v == 0 {
		return math.NaN()
	}
	return v
}

func etcdKind(c config) string {
	switch {
	case c.Endpoints != "":
		return strings.ReplaceAll(c.Endpoints, ",", " ")
	case c.EtcdProcess:
		return "embedded (own process)"
	}
	return "embedded (in the members' process)"
}
