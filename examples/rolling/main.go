// Rolling shows a rolling restart with no interrupted sync: each member, on
// SIGTERM, calls Leave, which first drains it (the leader moves its syncs to
// the others, each handed over only after its OnRevoke has finished the work
// in hand), and only then stops. Every sync finishes each batch of work it
// starts, and is handed over with a gap of milliseconds, never the TTL.
//
//	go run ./examples/rolling                       # three members in this process, on an embedded etcd
//	go run ./examples/rolling -endpoints 127.0.0.1:2379
//	go run ./examples/rolling -endpoints 127.0.0.1:2379 -member web-0   # one real member; stop it with SIGTERM
//
// The demo delivers SIGTERM to each member in turn on the member's own
// signal channel: the same serve function handles a real signal in the
// -member mode. For comparison it finally stops one member without
// draining, the way kill -9 would.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/demoenv"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints; empty starts an embedded etcd")
	memberID := flag.String("member", "", "run one member with this ID until SIGTERM (needs -endpoints and -group)")
	group := flag.String("group", "rolling", "group of the -member mode")
	flag.Parse()
	var err error
	if *memberID != "" {
		err = serveOne(*endpoints, *group, *memberID)
	} else {
		_, err = demo(*endpoints, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rolling:", err)
		os.Exit(1)
	}
}

const (
	ttl    = 2 * time.Second
	nsyncs = 12
	batch  = 20 * time.Millisecond // one unit of a sync's work
)

// ledger records, for every sync, the batches started and finished and
// the gaps between two owners, as the handlers see them.
type ledger struct {
	mu           sync.Mutex
	running      map[string]string    // sync -> member
	releasedAt   map[string]time.Time // sync -> when its last owner stopped
	gaps         []time.Duration
	interrupted  []string // syncs revoked for a reason other than a planned handoff
	twiceRunning int      // a sync started while another member ran it: must stay 0
}

func newLedger() *ledger {
	return &ledger{running: map[string]string{}, releasedAt: map[string]time.Time{}}
}

// worker is a sync's work: batches until ownership ends; a batch in hand
// is always finished, which is what OnRevoke (through Runner) waits for.
func (l *ledger) worker(member string) coordinator.Handler {
	return coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
		l.mu.Lock()
		if other, ok := l.running[c.ID()]; ok && other != member {
			l.twiceRunning++
		}
		l.running[c.ID()] = member
		if at, ok := l.releasedAt[c.ID()]; ok {
			l.gaps = append(l.gaps, time.Since(at))
		}
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			if l.running[c.ID()] == member {
				delete(l.running, c.ID())
			}
			l.releasedAt[c.ID()] = time.Now()
			l.mu.Unlock()
		}()
		for ctx.Err() == nil {
			time.Sleep(batch) // a batch in hand is finished, never abandoned half way
		}
		return nil
	})
}

// revoked wraps a handler to record revokes that were not planned
// handoffs: those interrupt a sync for up to the TTL.
func (l *ledger) revoked(member string, h coordinator.Handler) coordinator.Handler {
	return coordinator.HandlerFuncs{
		Assign: h.OnAssign,
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			h.OnRevoke(ctx, c, why)
			switch why {
			case assignment.Rebalanced, assignment.Draining, assignment.Leaving, assignment.Removed:
			default:
				l.mu.Lock()
				l.interrupted = append(l.interrupted, fmt.Sprintf("%s on %s (%s)", c.ID(), member, why))
				l.mu.Unlock()
			}
		},
	}
}

func (l *ledger) runningCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.running)
}

// serve runs one member until a signal arrives on sigs, then leaves
// gracefully: Leave drains first, so every sync is handed over while this
// member still holds it.
func serve(ctx context.Context, cli *clientv3.Client, group, id string, h coordinator.Handler, sigs <-chan os.Signal, joined chan<- struct{}, say func(string, ...any)) error {
	co, err := coordinator.New(cli, group, h, coordinator.WithMemberID(id), coordinator.WithTTL(ttl))
	if err != nil {
		return err
	}
	if err := co.Join(ctx); err != nil {
		return err
	}
	if joined != nil {
		close(joined)
	}
	select {
	case sig := <-sigs:
		say("%s got %v: draining, then leaving", id, sig)
	case <-co.Done():
		return co.Err()
	}
	t0 := time.Now()
	lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := co.Leave(lctx); err != nil {
		return err
	}
	say("%s left after %.0fms", id, float64(time.Since(t0).Microseconds())/1000)
	return nil
}

// serveOne is the -member mode: one member, real signals.
func serveOne(endpoints, group, id string) error {
	if endpoints == "" {
		return fmt.Errorf("-member needs -endpoints")
	}
	cli, err := demoenv.Client(strings.Split(endpoints, ","))
	if err != nil {
		return err
	}
	defer cli.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	say("%s running in group %s; send SIGTERM to stop it gracefully", id, group)
	return serve(ctx, cli, group, id, l.revoked(id, l.worker(id)), sigs, nil, say)
}

// Summary is what the demo measured.
type Summary struct {
	Restarts         int
	Interrupted      []string // during the rolling restart: must be empty
	MaxGap           time.Duration
	Handoffs         int
	TwiceRunning     int
	KillInterrupted  int           // syncs interrupted by the final kill, for comparison
	KillFailoverTime time.Duration // how long they were stopped
}

func demo(endpoints string, out io.Writer) (Summary, error) {
	var sum Summary
	start := time.Now()
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	eps, isEmbedded, stop, err := demoenv.Etcd(endpoints)
	if err != nil {
		return sum, err
	}
	defer stop()
	if isEmbedded {
		say("embedded etcd at %s", strings.Join(eps, ","))
	} else {
		say("using etcd at %s", endpoints)
	}
	newClient := func() (*clientv3.Client, error) { return demoenv.Client(eps) }
	admin, err := newClient()
	if err != nil {
		return sum, err
	}
	defer admin.Close()
	group := demoenv.Group("rolling")
	store := coordinator.NewSyncStore(admin, group)
	for i := range nsyncs {
		if err := store.Put(ctx, assignment.Sync{ID: fmt.Sprintf("sync-%02d", i)}); err != nil {
			return sum, err
		}
	}
	say("group %s: %d syncs, each working in %v batches", group, nsyncs, batch)

	l := newLedger()
	type proc struct {
		cli  *clientv3.Client
		sigs chan os.Signal
		done chan error
	}
	procs := map[string]*proc{}
	var wg sync.WaitGroup
	defer wg.Wait()
	// On an early return, members still running stop as if killed.
	defer func() {
		for _, p := range procs {
			p.cli.Close()
		}
	}()
	launch := func(id string) error {
		cli, err := newClient()
		if err != nil {
			return err
		}
		p := &proc{cli: cli, sigs: make(chan os.Signal, 1), done: make(chan error, 1)}
		procs[id] = p
		joined := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cli.Close()
			p.done <- serve(ctx, cli, group, id, l.revoked(id, l.worker(id)), p.sigs, joined, say)
		}()
		select {
		case <-joined:
			return nil
		case err := <-p.done:
			return err
		}
	}
	ids := []string{"web-0", "web-1", "web-2"}
	for _, id := range ids {
		if err := launch(id); err != nil {
			return sum, err
		}
	}
	if err := settled(ctx, admin, group, l, len(ids)); err != nil {
		return sum, err
	}
	say("all %d syncs running on %v", nsyncs, ids)

	// The rolling restart: SIGTERM, wait for the exit, start the new
	// version under the same ID, wait until the group is settled, next.
	for _, id := range ids {
		p := procs[id]
		p.sigs <- syscall.SIGTERM
		if err := <-p.done; err != nil {
			return sum, fmt.Errorf("%s: %w", id, err)
		}
		if err := settled(ctx, admin, group, l, len(ids)-1); err != nil {
			return sum, err
		}
		say("%s is down; its syncs run on the other two", id)
		if err := launch(id); err != nil {
			return sum, err
		}
		if err := settled(ctx, admin, group, l, len(ids)); err != nil {
			return sum, err
		}
		say("%s is back (new version); the group rebalanced onto it", id)
		sum.Restarts++
	}

	l.mu.Lock()
	sum.Interrupted = slices.Clone(l.interrupted)
	sum.Handoffs = len(l.gaps)
	for _, g := range l.gaps {
		sum.MaxGap = max(sum.MaxGap, g)
	}
	sum.TwiceRunning = l.twiceRunning
	l.mu.Unlock()
	say("rolling restart of %d members: %d handoffs, longest gap %.0fms, %d interrupted syncs, %d syncs ever run twice at once",
		sum.Restarts, sum.Handoffs, float64(sum.MaxGap.Microseconds())/1000, len(sum.Interrupted), sum.TwiceRunning)

	// For comparison: web-1 stops without draining (kill -9): its syncs
	// are stopped locally at once, and restart elsewhere only when its
	// lease has expired.
	killed := "web-1"
	on := 0
	l.mu.Lock()
	for _, m := range l.running {
		if m == killed {
			on++
		}
	}
	l.mu.Unlock()
	say("for comparison, %s is killed without draining while it runs %d syncs", killed, on)
	t0 := time.Now()
	procs[killed].cli.Close()
	if err := <-procs[killed].done; err == nil {
		return sum, fmt.Errorf("%s stopped cleanly after its client closed", killed)
	}
	if err := settled(ctx, admin, group, l, len(ids)-1); err != nil {
		return sum, err
	}
	sum.KillFailoverTime = time.Since(t0)
	l.mu.Lock()
	sum.KillInterrupted = len(l.interrupted) - len(sum.Interrupted)
	l.mu.Unlock()
	say("%d syncs interrupted for %.2fs (the lease TTL is %v): drain before you stop", sum.KillInterrupted, sum.KillFailoverTime.Seconds(), ttl)

	for id, p := range procs {
		if id != killed {
			p.sigs <- syscall.SIGTERM
			if err := <-p.done; err != nil {
				return sum, err
			}
		}
	}
	if len(sum.Interrupted) > 0 || sum.TwiceRunning > 0 {
		return sum, fmt.Errorf("rolling restart interrupted syncs: %v (run twice: %d)", sum.Interrupted, sum.TwiceRunning)
	}
	say("done")
	return sum, nil
}

// settled waits until every sync runs, on n members, with nothing pending.
func settled(ctx context.Context, admin *clientv3.Client, group string, l *ledger, n int) error {
	for {
		if l.runningCount() == nsyncs {
			st, err := coordinator.Describe(ctx, admin, group)
			if err == nil && st.Pending == 0 && len(st.Members) == n {
				owners := map[string]bool{}
				for _, s := range st.Syncs {
					owners[s.Owner] = true
				}
				if len(owners) == n {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group did not settle on %d members: %w", n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
