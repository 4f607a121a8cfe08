// Package benchproc is the line protocol between a benchmark and a member
// (or a store) it runs in an OS process of its own, so that a member can be
// killed with SIGKILL and every system of a comparison has the same process
// layout: internal/bench runs Baton's and the baseline's members this way,
// and bench/peers (a module of its own) runs Kafka's and dskit's.
//
// The child writes JSON lines to its stdout, each one [Line]: the
// recorder's ownership events ("start", "end": [recorder.WithSink] writes
// them, so the parent reads intervals by the recorder's own definition),
// "ready" once it has joined, and one "reply" per command, in order. The
// parent writes commands to the child's stdin, one per line; the child
// exits when its stdin ends. Timestamps are [recorder.Now]: one clock for
// every process of the machine.
package benchproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/recorder"
)

// Ops of a [Line].
const (
	OpStart = "start" // the recorder's: member began to own sync
	OpEnd   = "end"   // the recorder's: member stopped owning sync
	OpReady = "ready" // the child is up (a member has joined its group)
	OpReply = "reply" // the answer to one command
	OpLog   = "log"   // something the child wants the parent to print
)

// Commands the parent sends. A child answers each with one reply; one it
// does not know gets an error reply.
const (
	CmdDrain  = "drain"  // give every sync away (a member may leave the group to do so); reply once it runs none
	CmdLeave  = "leave"  // leave the group cleanly; reply, then exit
	CmdStatus = "status" // reply with a Status
	CmdUsage  = "usage"  // reply with the requests it sent, by kind (map[string]int64)
)

// Line is one line of a child's stdout.
type Line struct {
	Op     string          `json:"op"`
	Member string          `json:"member,omitempty"`
	Sync   string          `json:"sync,omitempty"`
	Token  int64           `json:"token,omitempty"`
	T      int64           `json:"t,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Err    string          `json:"error,omitempty"`
}

// Status is a member's answer to [CmdStatus].
type Status struct {
	Owned  int  `json:"owned"`
	Leader bool `json:"leader"`
}

// SyncID names the i-th sync (or partition, or item) of a benchmark group,
// the same in every system.
func SyncID(i int) string { return fmt.Sprintf("sync-%05d", i) }

// Child is the child's side: its recorder writes ownership events to
// stdout, and Send writes the other lines, one Write per line under one
// lock so no two lines mix.
type Child struct {
	Rec *recorder.Recorder

	mu sync.Mutex // guards w; a leaf
	w  io.Writer
}

// NewChild returns a Child writing to w (os.Stdout in a real child).
func NewChild(w io.Writer) *Child {
	c := &Child{w: w}
	c.Rec = recorder.New(recorder.WithSink(lineWriter{c}))
	return c
}

type lineWriter struct{ c *Child }

func (lw lineWriter) Write(p []byte) (int, error) {
	lw.c.mu.Lock()
	defer lw.c.mu.Unlock()
	return lw.c.w.Write(p)
}

// Send writes one line with op and, when body is not nil, body as JSON.
func (c *Child) Send(op string, body any, err error) error {
	l := Line{Op: op}
	if body != nil {
		b, merr := json.Marshal(body)
		if merr != nil {
			return fmt.Errorf("benchproc: encode %s: %w", op, merr)
		}
		l.Body = b
	}
	if err != nil {
		l.Err = err.Error()
	}
	b, merr := json.Marshal(l)
	if merr != nil {
		return fmt.Errorf("benchproc: encode %s: %w", op, merr)
	}
	_, werr := lineWriter{c}.Write(append(b, '\n'))
	return werr
}

// Logf sends a line for the parent to print.
func (c *Child) Logf(format string, args ...any) {
	_ = c.Send(OpLog, fmt.Sprintf(format, args...), nil)
}

// Serve reads commands from r until it ends or handle returns stop, and
// answers each with handle's result. It returns nil at the end of r.
func (c *Child) Serve(r io.Reader, handle func(cmd string) (body any, stop bool, err error)) error {
	in := bufio.NewScanner(r)
	for in.Scan() {
		body, stop, err := handle(in.Text())
		if serr := c.Send(OpReply, body, err); serr != nil {
			return serr
		}
		if stop {
			return nil
		}
	}
	return in.Err()
}

// Proc is the parent's side: one child process.
type Proc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan Line
	done    chan struct{} // closed once the child exited and its output is read
	err     error         // why it exited; set before done is closed

	askMu sync.Mutex // one command at a time; a leaf
	// lost is set (under askMu) when an Ask gave up before its reply
	// came: replies are matched to commands by order only, so every later
	// Ask fails rather than read an earlier command's answer.
	lost bool

	// Ready is the body of the child's ready line (a store's address,
	// say), or nil.
	Ready json.RawMessage
}

// Start starts cmd and waits until it sends "ready" (or exits first, or
// ctx ends: then it is killed). Every ownership line goes to onEvent, every
// log line to onLog, both from one goroutine in the order written.
func Start(ctx context.Context, cmd *exec.Cmd, onEvent func(Line), onLog func(string)) (*Proc, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, stdin: stdin, replies: make(chan Line, 16), done: make(chan struct{})}
	ready := make(chan Line, 1)
	go p.read(stdout, ready, onEvent, onLog)
	select {
	case l := <-ready:
		if l.Err != "" {
			p.Kill()
			<-p.done
			return nil, fmt.Errorf("benchproc: %s: %s", cmd.Path, l.Err)
		}
		p.Ready = l.Body
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("benchproc: %s exited before it was ready: %v", cmd.Path, p.err)
	case <-ctx.Done():
		p.Kill()
		<-p.done
		return nil, ctx.Err()
	}
}

func (p *Proc) read(stdout io.Reader, ready chan<- Line, onEvent func(Line), onLog func(string)) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var bad error
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			bad = fmt.Errorf("benchproc: bad line %q: %w", sc.Text(), err)
			continue
		}
		switch l.Op {
		case OpStart, OpEnd:
			onEvent(l)
		case OpReady:
			select {
			case ready <- l:
			default: // a second ready line: ignored
			}
		case OpReply:
			select {
			case p.replies <- l:
			default: // answers to Asks that gave up: never block the events
			}
		case OpLog:
			var s string
			_ = json.Unmarshal(l.Body, &s)
			if onLog != nil {
				onLog(s)
			}
		default:
			bad = fmt.Errorf("benchproc: unknown op %q", l.Op)
		}
	}
	scanErr := sc.Err()
	if scanErr != nil {
		// The child may be blocked writing to a pipe nobody reads:
		// Wait would never return.
		p.Kill()
		_, _ = io.Copy(io.Discard, stdout)
	}
	err := p.cmd.Wait()
	p.err = errors.Join(err, bad, scanErr)
	close(p.done)
}

// Ask sends cmd and decodes the reply's body into out (if not nil). It
// fails if the child exits first or ctx ends; the child then goes on, and
// every later Ask of p fails.
func (p *Proc) Ask(ctx context.Context, cmd string, out any) error {
	p.askMu.Lock()
	defer p.askMu.Unlock()
	select {
	case <-p.done:
		return fmt.Errorf("benchproc: %s: the child exited: %v", cmd, p.err)
	default:
	}
	if p.lost {
		return fmt.Errorf("benchproc: %s: an earlier command was never answered", cmd)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		return fmt.Errorf("benchproc: send %s: %w", cmd, err)
	}
	select {
	case l := <-p.replies:
		return decodeReply(cmd, l, out)
	case <-p.done:
		return fmt.Errorf("benchproc: %s: the child exited: %v", cmd, p.err)
	case <-ctx.Done():
		select {
		case l := <-p.replies: // it came after all
			return decodeReply(cmd, l, out)
		default:
		}
		p.lost = true
		return ctx.Err()
	}
}

func decodeReply(cmd string, l Line, out any) error {
	if l.Err != "" {
		return fmt.Errorf("%s: %s", cmd, l.Err)
	}
	if out != nil && len(l.Body) > 0 {
		return json.Unmarshal(l.Body, out)
	}
	return nil
}

// Kill sends SIGKILL (the process cannot say goodbye) and returns at once.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

// Close ends the child's stdin (a child leaves and exits when it ends).
func (p *Proc) Close() error { return p.stdin.Close() }

// Done is closed once the child has exited and its output is read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is why the child exited, once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Member is a joined member as the protocol drives it.
type Member interface {
	Status() Status
	// Usage is what the member sent to its store (any JSON), or nil.
	Usage() any
	Drain(ctx context.Context) error
	Leave(ctx context.Context) error
}

// commandTimeout bounds a drain or a leave the parent asked for, and the
// leave at the end of stdin.
const commandTimeout = 2 * time.Minute

// RunMember is a member process's main loop: it joins (join's error is sent
// as the ready line's), sends ready, answers commands from r, and leaves:
// when asked, or when r ends. It returns join's error, or what serving and
// leaving returned.
func (c *Child) RunMember(r io.Reader, join func() (Member, error)) error {
	m, err := join()
	if err != nil {
		_ = c.Send(OpReady, nil, err)
		return err
	}
	if err := c.Send(OpReady, nil, nil); err != nil {
		return errors.Join(err, leave(m))
	}
	left := false
	err = c.Serve(r, func(cmd string) (any, bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		switch cmd {
		case CmdStatus:
			return m.Status(), false, nil
		case CmdUsage:
			return m.Usage(), false, nil
		case CmdDrain:
			return nil, false, m.Drain(ctx)
		case CmdLeave:
			left = true
			return nil, true, m.Leave(ctx)
		default:
			return nil, false, fmt.Errorf("unknown command %q", cmd)
		}
	})
	if !left {
		err = errors.Join(err, leave(m))
	}
	return err
}

func leave(m Member) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return m.Leave(ctx)
}
