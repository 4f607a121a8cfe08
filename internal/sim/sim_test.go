package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

var (
	seedFlag = flag.Uint64("seed", 0, "run only this seed (with its event log)")
	seedsN   = flag.Int("sims", 0, "number of seeds TestSim runs (default: the CI set)")
)

// ciSeeds is how many seeds CI runs: about 35s with -race on 2 cores.
const ciSeeds = 100

// regressionSeeds are seeds outside 1..ciSeeds that found a bug, run in CI
// as well. Each bug also has a deterministic test next to its fix; a seed
// replays its schedule but not the goroutine interleaving, so it may need
// several runs to fail again without the fix.
var regressionSeeds = []uint64{
	5469274426159171264, // Leave during a rejoin waited a TTL for a lease give-back (TestLeaveWhileRejoiningReturnsWithinItsCtx); failed 1 run in 5 before the fix
}

// TestSim runs the CI seeds (or -seed, or -sims N seeds from 1).
func TestSim(t *testing.T) {
	seeds := make([]uint64, 0, ciSeeds)
	switch {
	case *seedFlag != 0:
		seeds = append(seeds, *seedFlag)
	default:
		n := ciSeeds
		if *seedsN > 0 {
			n = *seedsN
		}
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
		seeds = append(seeds, regressionSeeds...)
	}
	start := time.Now()
	var virtual, slowest time.Duration
	intervals := 0
	stats := map[string]int{}
	for _, seed := range seeds {
		res := runSeed(t, seed, DefaultConfig())
		for k, v := range res.Stats {
			stats[k] += v
		}
		virtual += res.Virtual
		intervals += res.Intervals
		slowest = max(slowest, res.Converged)
	}
	real := time.Since(start)
	t.Logf("%d schedules in %v (%.0f a minute); %v of virtual time, %.0f virtual seconds per real second; %d ownership intervals checked; slowest convergence after the faults %v",
		len(seeds), real.Round(time.Millisecond), float64(len(seeds))/real.Minutes(), virtual.Round(time.Second), virtual.Seconds()/real.Seconds(), intervals, slowest)
	t.Logf("injected: %v", stats)
}

// TestSimSoak runs random seeds for BATON_SIM_SOAK (a duration), and
// reports each failing seed with the command that replays it.
func TestSimSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("BATON_SIM_SOAK"))
	if err != nil {
		t.Skip("set BATON_SIM_SOAK to a duration to soak")
	}
	start := time.Now()
	n, failed := 0, 0
	for time.Since(start) < d {
		seed := rand.Uint64()
		n++
		if res := runSeed(t, seed, DefaultConfig()); len(res.Problems) > 0 {
			failed++
		}
	}
	t.Logf("soak: %d schedules in %v, %d failed", n, time.Since(start).Round(time.Second), failed)
}

// runSeed runs one seed in its own bubble, under a real-time watchdog, and
// reports its problems with the command that replays it.
func runSeed(t *testing.T, seed uint64, cfg Config) *Result {
	t.Helper()
	var res *Result
	var progress atomic.Int64
	stop := watchdog(&progress, seed, 60*time.Second)
	defer stop()
	ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			res = Run(t, seed, cfg, &progress)
		})
		if len(res.Problems) > 0 || *seedFlag != 0 {
			t.Logf("event log of seed %d:\n%s", seed, strings.Join(res.Log, "\n"))
		}
		if len(res.Problems) > 0 && os.Getenv("BATON_SIM_LOG") != "" {
			_ = os.WriteFile(os.Getenv("BATON_SIM_LOG"), []byte(res.CoordinatorLog), 0o644)
		}
		for _, p := range res.Problems {
			t.Error(p)
		}
		if t.Failed() {
			t.Logf("replay: go test ./internal/sim -run TestSim -seed=%d -v", seed)
		}
	})
	if !ok && res == nil {
		res = &Result{Seed: seed}
	}
	return res
}

// watchdog dumps every goroutine and panics if the run makes no progress
// for limit of real time: a goroutine blocked on a mutex is not durably
// blocked, so a lock-order deadlock stalls a bubble instead of failing it.
func watchdog(progress *atomic.Int64, seed uint64, limit time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		last, since := progress.Load(), time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if p := progress.Load(); p != last {
				last, since = p, time.Now()
				continue
			}
			if time.Since(since) > limit {
				fmt.Fprintf(os.Stderr, "sim: seed %d made no progress for %v of real time; goroutines:\n", seed, limit)
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				panic(fmt.Sprintf("sim: seed %d stalled (replay: go test ./internal/sim -run TestSim -seed=%d -v)", seed, seed))
			}
		}
	}()
	return func() { close(done) }
}
