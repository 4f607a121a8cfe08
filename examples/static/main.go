// Static shows static membership: members whose IDs are stable across
// restarts (a StatefulSet pod name, a host name) get their own syncs back
// when they restart within the TTL, and no other member's sync moves. The
// same restart with a random ID (the default) reshuffles the group.
//
//	go run ./examples/static                       # on an embedded etcd
//	go run ./examples/static -endpoints 127.0.0.1:2379
//
// A real service takes its ID from its environment:
//
//	id := os.Getenv("POD_NAME") // web-0, web-1, ... from a StatefulSet
//	co, err := coordinator.New(cli, "orders", h, coordinator.WithMemberID(id))
//
// and on a restart does NOT call Leave (that would hand its syncs away):
// it just exits. The new process's Join waits for the old lease to expire,
// takes the same ID, and the leader finds nothing to change.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/demoenv"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints; empty starts an embedded etcd")
	flag.Parse()
	if err := run(*endpoints, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "static:", err)
		os.Exit(1)
	}
}

const (
	ttl    = 2 * time.Second
	nsyncs = 9
)

// Result is what one restart did to the group.
type Result struct {
	Restarted   string // the restarted member's ID before and
	Rejoined    string // after the restart
	OthersMoved int    // syncs revoked (rebalanced) on members that did not restart
	BackHome    int    // of the restarted member's syncs, how many it owns again
	Had         int    // how many it owned before
}

// group is one demo group: members in this process, each with its own
// etcd client, as separate processes would have.
type group struct {
	name      string
	eps       []string
	mu        sync.Mutex
	running   map[string]string // sync -> member, as the handlers see it
	revokedOn map[string]int    // member -> Rebalanced revokes
	members   map[string]*member
}

type member struct {
	co  *coordinator.Coordinator
	cli *clientv3.Client
}

func (g *group) handler(id string) coordinator.Handler {
	return coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			g.mu.Lock()
			g.running[c.ID()] = id
			g.mu.Unlock()
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			g.mu.Lock()
			if g.running[c.ID()] == id {
				delete(g.running, c.ID())
			}
			if why == assignment.Rebalanced {
				g.revokedOn[id]++
			}
			g.mu.Unlock()
		},
	}
}

// start runs a member; id "" gives it a new random ID, as the library's
// default does (made here, because the handler needs to know it).
func (g *group) start(ctx context.Context, id string) (string, error) {
	cli, err := demoenv.Client(g.eps)
	if err != nil {
		return "", err
	}
	if id == "" {
		id = demoenv.Group("pod")
	}
	co, err := coordinator.New(cli, g.name, g.handler(id), coordinator.WithMemberID(id), coordinator.WithTTL(ttl))
	if err == nil {
		err = co.Join(ctx)
	}
	if err != nil {
		cli.Close()
		return "", err
	}
	g.mu.Lock()
	g.members[id] = &member{co: co, cli: cli}
	g.mu.Unlock()
	return id, nil
}

// kill stops a member the way a crash or a restarting pod does: no Leave,
// so its lease (and its member ID) lives until the TTL runs out.
func (g *group) kill(id string) {
	g.mu.Lock()
	m := g.members[id]
	delete(g.members, id)
	g.mu.Unlock()
	m.cli.Close()
	<-m.co.Done()
}

func (g *group) snapshot() (map[string]string, map[string]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.running), maps.Clone(g.revokedOn)
}

// settled waits until every sync runs, on exactly the given members, and
// Describe shows nothing pending.
func (g *group) settled(ctx context.Context, admin *clientv3.Client, members ...string) (map[string]string, error) {
	for {
		running, _ := g.snapshot()
		on := map[string]bool{}
		for _, m := range running {
			on[m] = true
		}
		if len(running) == nsyncs && len(on) == len(members) {
			st, err := coordinator.Describe(ctx, admin, g.name)
			if err == nil && st.Pending == 0 && len(st.Members) == len(members) {
				return running, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("group %s did not settle on %v: %w", g.name, members, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (g *group) close() {
	g.mu.Lock()
	ms := slices.Collect(maps.Values(g.members))
	g.mu.Unlock()
	for _, m := range ms {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = m.co.Leave(ctx)
		cancel()
		m.cli.Close()
	}
}

func run(endpoints string, out io.Writer) error {
	_, err := demo(endpoints, out)
	return err
}

// demo runs the restart twice, with stable and with random IDs, and
// returns both results.
func demo(endpoints string, out io.Writer) ([2]Result, error) {
	var res [2]Result
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
		return res, err
	}
	defer stop()
	if isEmbedded {
		say("embedded etcd at %s", strings.Join(eps, ","))
	} else {
		say("using etcd at %s", endpoints)
	}
	admin, err := demoenv.Client(eps)
	if err != nil {
		return res, err
	}
	defer admin.Close()

	for i, stable := range []bool{true, false} {
		kind := "stable IDs (web-0, web-1, web-2)"
		if !stable {
			kind = "random IDs (the default)"
		}
		say("--- %s", kind)
		r, err := restart(ctx, admin, eps, stable, say)
		if err != nil {
			return res, err
		}
		res[i] = r
		say("%s restarted as %s: it owns %d of its %d syncs again; %d syncs moved on the members that did not restart",
			r.Restarted, r.Rejoined, r.BackHome, r.Had, r.OthersMoved)
	}
	say("stable IDs: a restart within the TTL pauses only the restarted member's syncs; nothing else moves")
	return res, nil
}

func restart(ctx context.Context, admin *clientv3.Client, eps []string, stable bool, say func(string, ...any)) (Result, error) {
	g := &group{name: demoenv.Group("static"), eps: eps,
		running: map[string]string{}, revokedOn: map[string]int{}, members: map[string]*member{}}
	defer g.close()
	store := coordinator.NewSyncStore(admin, g.name)
	for i := range nsyncs {
		if err := store.Put(ctx, assignment.Sync{ID: fmt.Sprintf("sync-%d", i)}); err != nil {
			return Result{}, err
		}
	}
	var ids []string
	for i := range 3 {
		id := ""
		if stable {
			id = fmt.Sprintf("web-%d", i) // os.Getenv("POD_NAME") in a real pod
		}
		id, err := g.start(ctx, id)
		if err != nil {
			return Result{}, err
		}
		ids = append(ids, id)
	}
	before, err := g.settled(ctx, admin, ids...)
	if err != nil {
		return Result{}, err
	}
	st, err := coordinator.Describe(ctx, admin, g.name)
	if err != nil {
		return Result{}, err
	}
	// Restart a member that is not the leader, so the demo shows the
	// members alone (a leader's restart elects another leader first).
	victim := ids[1]
	if victim == st.Leader {
		victim = ids[2]
	}
	var had []string
	for s, m := range before {
		if m == victim {
			had = append(had, s)
		}
	}
	slices.Sort(had)
	say("%d syncs on %v; %s runs %v", nsyncs, ids, victim, had)
	_, revokedBefore := g.snapshot()

	say("%s restarts: killed without Leave, started again at once", victim)
	t0 := time.Now()
	g.kill(victim)
	newID := ""
	if stable {
		newID = victim
	}
	rejoined, err := g.start(ctx, newID) // with a stable ID, Join waits for the old lease to expire
	if err != nil {
		return Result{}, err
	}
	say("%s joined after %.2fs", rejoined, time.Since(t0).Seconds())
	members := slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == victim })
	members = append(members, rejoined)
	after, err := g.settled(ctx, admin, members...)
	if err != nil {
		return Result{}, err
	}
	say("all %d syncs running again %.2fs after the kill", nsyncs, time.Since(t0).Seconds())
	_, revokedAfter := g.snapshot()
	r := Result{Restarted: victim, Rejoined: rejoined, Had: len(had)}
	for _, id := range ids {
		if id != victim {
			r.OthersMoved += revokedAfter[id] - revokedBefore[id]
		}
	}
	for _, s := range had {
		if after[s] == rejoined {
			r.BackHome++
		}
	}
	return r, nil
}
