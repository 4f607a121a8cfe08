// Checkpoint shows a sync that survives the crash of its owner without
// losing or redoing more than one batch of work: it copies rows in batches
// and saves its position with Claim.SaveCheckpoint, which is fenced by the
// claim's token. When the owner crashes, the next owner resumes from the
// last checkpoint, and the crashed owner's late writes are refused, both
// by Baton (ErrNotOwner) and by a destination that checks fencing tokens.
//
//	go run ./examples/checkpoint                       # on an embedded etcd
//	go run ./examples/checkpoint -endpoints 127.0.0.1:2379
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
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
		fmt.Fprintln(os.Stderr, "checkpoint:", err)
		os.Exit(1)
	}
}

const (
	totalRows = 200
	batchRows = 10
	ttl       = 2 * time.Second
)

// destination stands for the system the sync writes to. It keeps each row
// once (writes are upserts by row number, so a batch copied again after a
// crash does no harm) and refuses writes carrying an older fencing token
// than one it has seen: that is what stops a zombie owner.
type destination struct {
	mu       sync.Mutex
	rows     map[int]int64 // row -> token of the write that stored it
	rewrites int           // rows written more than once
	maxToken int64
	refused  int
}

var errStaleToken = errors.New("destination: write with a stale fencing token refused")

func (d *destination) write(token int64, from, to int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if token < d.maxToken {
		d.refused++
		return errStaleToken
	}
	d.maxToken = token
	for r := from; r < to; r++ {
		if _, ok := d.rows[r]; ok {
			d.rewrites++
		}
		d.rows[r] = token
	}
	return nil
}

// begin is a new owner presenting its token before its first write, so
// writes with older tokens are refused from then on.
func (d *destination) begin(token int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if token < d.maxToken {
		d.refused++
		return errStaleToken
	}
	d.maxToken = token
	return nil
}

// copier is one member's handler: it copies the sync's rows from its
// checkpoint on, one batch at a time.
type copier struct {
	member string
	dest   *destination
	say    func(string, ...any)

	mu      sync.Mutex
	claim   *assignment.Claim // the claim it runs under, kept to show a zombie's write
	copied  int               // position reached, for the story
	started chan struct{}     // closed at the first run
	once    sync.Once
}

func (c *copier) run(ctx context.Context, cl *assignment.Claim) error {
	b, err := cl.LoadCheckpoint(ctx)
	if err != nil {
		return err
	}
	pos := 0
	if b != nil {
		if pos, err = strconv.Atoi(string(b)); err != nil {
			return fmt.Errorf("bad checkpoint %q: %w", b, err)
		}
	}
	if err := c.dest.begin(cl.Token()); err != nil {
		return err
	}
	c.mu.Lock()
	c.claim, c.copied = cl, pos
	c.mu.Unlock()
	c.say("%-5s owns %s (token %d), resumes at row %d", c.member, cl.ID(), cl.Token(), pos)
	c.once.Do(func() { close(c.started) })
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for pos < totalRows {
		select {
		case <-ctx.Done():
			return nil // ownership ended: stop between batches
		case <-tick.C:
		}
		next := min(pos+batchRows, totalRows)
		if err := c.dest.write(cl.Token(), pos, next); err != nil {
			return err
		}
		// The checkpoint is written after the batch: a crash in between
		// copies that one batch again (harmless: upserts). Had the
		// destination been etcd, cl.Guard() would put both in one Txn.
		if err := cl.SaveCheckpoint(ctx, []byte(strconv.Itoa(next))); err != nil {
			return err // assignment.ErrNotOwner: the sync has moved on
		}
		pos = next
		c.mu.Lock()
		c.copied = pos
		c.mu.Unlock()
	}
	c.say("%-5s finished %s: all %d rows copied", c.member, cl.ID(), totalRows)
	<-ctx.Done()
	return nil
}

func (c *copier) position() (*assignment.Claim, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.claim, c.copied
}

func run(endpoints string, out io.Writer) error {
	start := time.Now()
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	eps, isEmbedded, stop, err := demoenv.Etcd(endpoints)
	if err != nil {
		return err
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
		return err
	}
	defer admin.Close()
	group := demoenv.Group("checkpoint")
	if err := coordinator.NewSyncStore(admin, group).Put(ctx, assignment.Sync{ID: "orders-copy", Spec: []byte(`{"table":"orders"}`)}); err != nil {
		return err
	}
	say("group %s: sync orders-copy copies %d rows in batches of %d, checkpointing after each", group, totalRows, batchRows)

	dest := &destination{rows: map[int]int64{}}
	join := func(id string) (*coordinator.Coordinator, *clientv3.Client, *copier, error) {
		cli, err := newClient()
		if err != nil {
			return nil, nil, nil, err
		}
		cp := &copier{member: id, dest: dest, say: say, started: make(chan struct{})}
		co, err := coordinator.New(cli, group, coordinator.Runner(cp.run), coordinator.WithMemberID(id), coordinator.WithTTL(ttl))
		if err == nil {
			err = co.Join(ctx)
		}
		if err != nil {
			cli.Close()
			return nil, nil, nil, err
		}
		return co, cli, cp, nil
	}

	alpha, alphaCli, alphaCopier, err := join("alpha")
	if err != nil {
		return err
	}
	defer alphaCli.Close()
	if err := wait(ctx, alphaCopier.started); err != nil {
		return fmt.Errorf("alpha never started: %w", err)
	}
	beta, betaCli, betaCopier, err := join("beta")
	if err != nil {
		return err
	}
	defer betaCli.Close()
	say("beta joined as a standby (one sync: it stays where it runs)")

	// Let alpha copy a while, then crash it: its client is closed with no
	// goodbye, so its lease lives on in etcd until the TTL runs out.
	if err := poll(ctx, func() bool { _, n := alphaCopier.position(); return n >= 80 }); err != nil {
		return err
	}
	oldClaim, at := alphaCopier.position()
	say("alpha crashes at row %d (its lease expires within %v)", at, ttl)
	crashed := time.Now()
	alphaCli.Close()
	<-alpha.Done()

	if err := wait(ctx, betaCopier.started); err != nil {
		return fmt.Errorf("beta never took over: %w", err)
	}
	newClaim, resumed := betaCopier.position()
	say("failover took %.2fs; beta resumed at row %d, alpha's last checkpoint: nothing skipped", time.Since(crashed).Seconds(), resumed)

	// The crashed owner comes back as a zombie (say, after a long pause)
	// and tries to write with its old claim.
	err = oldClaim.SaveCheckpoint(ctx, []byte("0"))
	say("zombie alpha saves a checkpoint: %v (ErrNotOwner: %t)", err, errors.Is(err, assignment.ErrNotOwner))
	err = dest.write(oldClaim.Token(), 0, batchRows)
	say("zombie alpha writes rows with token %d < %d: %v", oldClaim.Token(), newClaim.Token(), err)

	if err := poll(ctx, func() bool { _, n := betaCopier.position(); return n == totalRows }); err != nil {
		return err
	}
	dest.mu.Lock()
	rows, rewrites, refused := len(dest.rows), dest.rewrites, dest.refused
	dest.mu.Unlock()
	say("destination: %d of %d rows, %d rows copied twice (at most one batch: %t), %d stale write refused",
		rows, totalRows, rewrites, rewrites <= batchRows, refused)
	if rows != totalRows || rewrites > batchRows || refused != 1 {
		return fmt.Errorf("unexpected result: %d rows, %d rewrites, %d refused", rows, rewrites, refused)
	}
	if err := beta.Leave(ctx); err != nil {
		return err
	}
	say("beta left; done")
	return nil
}

func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poll checks cond every 10ms until it holds or ctx ends.
func poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
