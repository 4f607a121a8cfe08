// Command worker is one Baton member as its own OS process, for the
// multi-process chaos suite (internal/chaos/process_test.go). It records its
// ownership intervals (recorder.WithSink, JSON lines) and a fenced log: every
// owned sync writes a checkpoint every -every, and each attempt is logged
// with its outcome (chaos.Write).
//
// The work loop of a sync never looks at its context between "working" and
// writing: like real code caught in the middle of its work, a process that
// was paused (SIGSTOP) and resumes writes once more before it notices that
// it lost the sync. That write must fail: it is the zombie write the suite
// looks for.
//
// SIGTERM makes it Leave and exit 0; SIGKILL is what the suite uses for a
// crash.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/chaos"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/internal/recorder"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	endpoints := flag.String("endpoints", "", "etcd client URLs, comma-separated")
	group := flag.String("group", "chaos", "Baton group")
	id := flag.String("id", "", "member ID")
	ttl := flag.Duration("ttl", 2*time.Second, "membership lease TTL")
	settle := flag.Duration("settle", 100*time.Millisecond, "leader settle time")
	intervals := flag.String("intervals", "", "file to append ownership intervals to (JSON lines)")
	fenced := flag.String("fenced", "", "file to append fenced write attempts to (JSON lines)")
	logPath := flag.String("log", "", "file to append the coordinator's log to")
	every := flag.Duration("every", 50*time.Millisecond, "work time between two checkpoints of a sync")
	flag.Parse()
	if *endpoints == "" || *id == "" || *intervals == "" || *fenced == "" {
		return errors.New("need -endpoints, -id, -intervals and -fenced")
	}

	openAppend := func(p string) (*os.File, error) {
		return os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	ivf, err := openAppend(*intervals)
	if err != nil {
		return err
	}
	defer ivf.Close()
	ff, err := openAppend(*fenced)
	if err != nil {
		return err
	}
	defer ff.Close()
	logger := slog.New(slog.DiscardHandler)
	if *logPath != "" {
		lf, err := openAppend(*logPath)
		if err != nil {
			return err
		}
		defer lf.Close()
		logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            strings.Split(*endpoints, ","),
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()

	layout, err := keys.New(coordinator.DefaultPrefix, *group)
	if err != nil {
		return err
	}
	h := &handler{
		member: *id,
		rec:    recorder.New(recorder.WithSink(ivf)),
		log:    chaos.NewLog(ff),
		kv:     cli,
		keys:   layout,
		every:  *every,
		loops:  map[*assignment.Claim]*loop{},
	}
	co, err := coordinator.New(cli, *group, h,
		coordinator.WithMemberID(*id), coordinator.WithTTL(*ttl), coordinator.WithSettle(*settle), coordinator.WithLogger(logger))
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	jctx, cancel := context.WithTimeout(context.Background(), 3**ttl+10*time.Second)
	err = co.Join(jctx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("joined", *id)
	select {
	case <-sigs:
		lctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := co.Leave(lctx); err != nil {
			logger.Warn("leave", "error", err)
		}
		h.wait()
		return h.rec.Check()
	case <-co.Done():
		return fmt.Errorf("coordinator stopped: %w", co.Err())
	}
}

type handler struct {
	member string
	rec    *recorder.Recorder
	log    *chaos.Log
	kv     clientv3.KV
	keys   keys.Layout
	every  time.Duration

	mu    sync.Mutex
	loops map[*assignment.Claim]*loop
	seq   map[string]int64
	wg    sync.WaitGroup
}

type loop struct {
	stop chan struct{}
	done chan struct{}
}

func (h *handler) OnAssign(_ context.Context, c *assignment.Claim) error {
	h.rec.Start(h.member, c.ID(), c.Token())
	l := &loop{stop: make(chan struct{}), done: make(chan struct{})}
	h.mu.Lock()
	h.loops[c] = l
	h.mu.Unlock()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(l.done)
		h.work(c, l.stop)
	}()
	return nil
}

func (h *handler) OnRevoke(ctx context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
	h.mu.Lock()
	l := h.loops[c]
	delete(h.loops, c)
	h.mu.Unlock()
	if l != nil {
		close(l.stop)
		select {
		case <-l.done:
		case <-ctx.Done():
			// Given up at the deadline: a write still in flight is the
			// fencing token's business now.
		}
	}
	h.rec.End(h.member, c.ID(), c.Token())
}

// wait waits for every work loop, so the last fenced writes are logged.
func (h *handler) wait() { h.wg.Wait() }

func (h *handler) nextSeq(sync string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seq == nil {
		h.seq = map[string]int64{}
	}
	h.seq[sync]++
	return h.seq[sync]
}

// work "works" for h.every, then writes a checkpoint, until stopped. It looks
// at stop only after a write, so a pause in the middle of the work ends in
// one more write.
func (h *handler) work(c *assignment.Claim, stop <-chan struct{}) {
	for {
		time.Sleep(h.every)
		if err := h.checkpoint(c); errors.Is(err, assignment.ErrNotOwner) {
			h.guarded(c)
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// checkpoint writes through Claim.SaveCheckpoint and logs the attempt.
func (h *handler) checkpoint(c *assignment.Claim) error {
	seq := h.nextSeq(c.ID())
	val, _ := json.Marshal(chaos.Value{Member: h.member, Token: c.Token(), Seq: seq, Kind: chaos.KindCheckpoint})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := recorder.Now()
	err := c.SaveCheckpoint(ctx, val)
	w := chaos.Write{Member: h.member, Sync: c.ID(), Token: c.Token(), Seq: seq, Kind: chaos.KindCheckpoint,
		Start: start, End: recorder.Now(), OK: err == nil}
	if err != nil {
		w.Err = errString(err)
	}
	_ = h.log.Append(w)
	return err
}

// guarded follows a SaveCheckpoint that said ErrNotOwner (by the member's
// own deadline, or by etcd) with a write guarded by etcd alone
// (Claim.Guard). It fails too unless the lease is still alive on the
// server, in which case nobody else can hold the sync yet.
func (h *handler) guarded(c *assignment.Claim) {
	seq := h.nextSeq(c.ID())
	val, _ := json.Marshal(chaos.Value{Member: h.member, Token: c.Token(), Seq: seq, Kind: chaos.KindGuard})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := recorder.Now()
	resp, err := h.kv.Txn(ctx).If(c.Guard()).Then(clientv3.OpPut(h.keys.Checkpoint(c.ID()), string(val))).Commit()
	w := chaos.Write{Member: h.member, Sync: c.ID(), Token: c.Token(), Seq: seq, Kind: chaos.KindGuard, Start: start, End: recorder.Now()}
	switch {
	case err != nil:
		w.Err = errString(err)
	case resp.Succeeded:
		w.OK = true
	default:
		w.Err = "not-owner"
	}
	_ = h.log.Append(w)
}

func errString(err error) string {
	if errors.Is(err, assignment.ErrNotOwner) {
		return "not-owner"
	}
	return err.Error()
}
