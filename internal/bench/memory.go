package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/coordinator"
)

// The memory of one member cannot be told apart from the others' (and
// etcd's) in one process, so the measured member runs alone in a child
// process: the bench binary re-executed with -member-mode. The parent
// talks to it over stdin/stdout, one line per request and one JSON line
// per answer.

// memStat is what the child reports.
type memStat struct {
	System     string  `json:"system"`
	Role       string  `json:"role"` // "leader", "non-leader", "idle"
	Syncs      int     `json:"group_syncs"`
	Members    int     `json:"group_members"`
	Owned      int     `json:"owned"`
	Leader     bool    `json:"is_leader"`
	HeapMB     float64 `json:"heap_inuse_mb"` // after two forced GCs: live heap and its fragmentation
	HeapLiveMB float64 `json:"heap_alloc_mb"` // live objects after GC
	StackMB    float64 `json:"stack_mb"`
	SysMB      float64 `json:"sys_mb"`
	Goroutines int     `json:"goroutines"`
	// NetMB is HeapLiveMB minus that of an idle child with only an etcd
	// client: what the member itself holds.
	NetMB float64 `json:"net_heap_alloc_mb"`
	// PeakHeapMB is the highest heap in use seen (sampled every 100ms)
	// since the child started; MaxRequest its largest etcd request.
	PeakHeapMB float64 `json:"peak_heap_inuse_mb,omitempty"`
	MaxRequest int64   `json:"max_request_bytes,omitempty"`
}

// memberMain is the child's main: it joins as one member of group and
// answers "status", "mem" and "exit" on stdin.
func memberMain(args []string) error {
	fs := flag.NewFlagSet("member-mode", flag.ContinueOnError)
	sysName := fs.String("system", "baton", "baton, baseline or idle")
	endpoints := fs.String("endpoints", "", "etcd endpoints")
	group := fs.String("group", "", "group")
	id := fs.String("id", "", "member ID")
	ttl := fs.Duration("ttl", 10*time.Second, "lease TTL")
	settle := fs.Duration("settle", coordinator.DefaultSettle, "Baton settle")
	inflight := fs.Int("inflight", 8, "baseline TryLocks in flight")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cnt := newCounter()
	cli, err := dialClient(strings.Split(*endpoints, ","), cnt)
	if err != nil {
		return err
	}
	peak := samplePeakHeap()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var owned func() int
	leader := func() bool { return false }
	switch *sysName {
	case "baton":
		co, err := newBatonCoordinator(cli, *group, *id, *ttl, *settle, nil, discard{}, nil)
		if err != nil {
			return err
		}
		if err := co.Join(ctx); err != nil {
			return err
		}
		owned = func() int { return len(co.Owned()) }
		leader = co.IsLeader
	case "baseline":
		m, err := startBaselineMember(ctx, cli, *group, *id, *ttl, *inflight, discard{})
		if err != nil {
			return err
		}
		owned = func() int {
			m.mu.Lock()
			defer m.mu.Unlock()
			return len(m.held)
		}
	case "idle":
		// A client that has talked to etcd once, and nothing else.
		if _, err := cli.Get(ctx, "idle"); err != nil {
			return err
		}
		owned = func() int { return 0 }
	default:
		return fmt.Errorf("unknown system %q", *sysName)
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]string{"ready": *id}); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var reply memStat
		switch in.Text() {
		case "status":
			reply = memStat{Owned: owned(), Leader: leader()}
		case "mem":
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			reply = memStat{
				Owned: owned(), Leader: leader(),
				HeapMB: mb(ms.HeapInuse), HeapLiveMB: mb(ms.HeapAlloc), StackMB: mb(ms.StackInuse),
				SysMB: mb(ms.Sys), Goroutines: runtime.NumGoroutine(), PeakHeapMB: mb(peak.Load()),
			}
			reply.MaxRequest, _ = cnt.snapshot().maxSent()
		case "exit":
			// A crash as far as etcd is concerned: the parent drops the
			// group's leases.
			return nil
		}
		if err := out.Encode(reply); err != nil {
			return err
		}
	}
	return nil
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// samplePeakHeap records the highest HeapInuse, every 100ms, for the life
// of the process (the child's; it exits with it).
func samplePeakHeap() *atomic.Uint64 {
	var peak atomic.Uint64
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return &peak
}

// child is a running member-mode process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (b *bench) startChild(sysName, group, id string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-member-mode", "-system", sysName,
		"-endpoints", strings.Join(b.env.endpoints, ","), "-group", group, "-id", id,
		"-ttl", b.cfg.TTL.String(), "-settle", b.cfg.Settle.String(),
		"-inflight", fmt.Sprint(b.cfg.Inflight))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(outR)}
	if !c.out.Scan() {
		c.stop()
		return nil, fmt.Errorf("member child %s did not start", id)
	}
	return c, nil
}

func (c *child) ask(req string) (memStat, error) {
	var r memStat
	if _, err := fmt.Fprintln(c.in, req); err != nil {
		return r, err
	}
	if !c.out.Scan() {
		return r, errors.New("member child exited")
	}
	return r, json.Unmarshal(c.out.Bytes(), &r)
}

func (c *child) stop() {
	fmt.Fprintln(c.in, "exit")
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// memory measures the heap of one member in a group of sh: Baton's leader
// and a Baton non-leader, a baseline member, and an idle child for the
// zero point.
func (b *bench) memory(ctx context.Context) ([]memStat, error) {
	idle, err := b.memoryOnce(ctx, "idle", "idle", shape{})
	if err != nil {
		return nil, err
	}
	b.logf("memory idle child: heap %.1f MB live, %d goroutines", idle.HeapLiveMB, idle.Goroutines)
	out := []memStat{idle}
	for _, sh := range b.cfg.Memory {
		for _, role := range []string{"leader", "non-leader"} {
			for _, sys := range b.cfg.Systems {
				if sys != "baton" && role == "leader" {
					continue
				}
				r, err := b.memoryOnce(ctx, sys, role, sh)
				if err != nil {
					return nil, fmt.Errorf("memory %s %s %v: %w", sys, role, sh, err)
				}
				r.NetMB = r.HeapLiveMB - idle.HeapLiveMB
				b.logf("memory %s %s %v: owns %d, heap %.1f MB live (%.1f MB over idle), peak heap in use %.1f MB, %d goroutines, largest request %d bytes",
					sys, role, sh, r.Owned, r.HeapLiveMB, r.NetMB, r.PeakHeapMB, r.Goroutines, r.MaxRequest)
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// memoryOnce runs one group of sh with the measured member in a child: it
// starts first when it should lead (the first campaigner wins), last
// otherwise.
func (b *bench) memoryOnce(ctx context.Context, sysName, role string, sh shape) (memStat, error) {
	if sysName == "idle" {
		c, err := b.startChild("idle", "idle", "idle")
		if err != nil {
			return memStat{}, err
		}
		defer c.stop()
		r, err := c.ask("mem")
		r.System, r.Role = "idle", "idle"
		return r, err
	}
	sys := b.system(sysName, b.cfg.TTL)
	g, err := b.newGroup(ctx, sys, "memory", sh.Syncs)
	if err != nil {
		return memStat{}, err
	}
	defer g.close()
	others := memberIDs("m", sh.Members-1)
	const measured = "measured"
	var c *child
	if role == "leader" {
		if c, err = b.startChild(sysName, g.group, measured); err != nil {
			return memStat{}, err
		}
		defer c.stop()
		if err := waitChild(c, 10*time.Second, func(s memStat) bool { return s.Leader }); err != nil {
			return memStat{}, fmt.Errorf("child did not lead: %w", err)
		}
	}
	if err := g.join(ctx, others...); err != nil {
		return memStat{}, err
	}
	if role != "leader" {
		// Let the in-process members elect their leader first.
		if _, err := g.tr.waitFor(ctx, b.cfg.Timeout, "owned", allOwned(sh.Syncs)); err != nil {
			return memStat{}, err
		}
		if c, err = b.startChild(sysName, g.group, measured); err != nil {
			return memStat{}, err
		}
		defer c.stop()
	}
	// Settled: every sync runs somewhere (here or in the child), the
	// child has its share, and nothing moved for a while.
	share := sh.Syncs / sh.Members
	err = waitChild(c, b.cfg.Timeout, func(s memStat) bool {
		return s.Owned >= share && len(g.tr.owners())+s.Owned == sh.Syncs &&
			g.tr.waitQuiet(ctx, b.quiet(), b.quiet()+time.Second) == nil
	})
	if err != nil {
		return memStat{}, err
	}
	r, err := c.ask("mem")
	r.System, r.Role, r.Syncs, r.Members = sysName, role, sh.Syncs, sh.Members
	return r, err
}

func waitChild(c *child, timeout time.Duration, cond func(memStat) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.ask("status")
		if err != nil {
			return err
		}
		if cond(s) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached in %v (last status %+v)", timeout, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
