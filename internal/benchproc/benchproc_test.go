package benchproc_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/benchproc"
	"github.com/baton-go/baton/internal/recorder"
)

// The test binary is its own child: with BENCHPROC_CHILD set it plays a
// member that owns sync-00000 and answers commands.
func TestMain(m *testing.M) {
	switch os.Getenv("BENCHPROC_CHILD") {
	case "member":
		os.Exit(childMember())
	case "slow":
		os.Exit(childSlow())
	case "fail":
		c := benchproc.NewChild(os.Stdout)
		err := c.RunMember(os.Stdin, func() (benchproc.Member, error) { return nil, errors.New("cannot join") })
		if err == nil {
			os.Exit(2)
		}
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// fakeMember owns sync-00000 until it drains.
type fakeMember struct {
	c     *benchproc.Child
	owned int
}

func (m *fakeMember) Status() benchproc.Status { return benchproc.Status{Owned: m.owned, Leader: true} }
func (m *fakeMember) Usage() any               { return map[string]int64{"Put": 3} }
func (m *fakeMember) Leave(context.Context) error {
	return nil
}
func (m *fakeMember) Drain(context.Context) error {
	m.c.Rec.End("m1", benchproc.SyncID(0), 7)
	m.owned = 0
	return nil
}

func childMember() int {
	c := benchproc.NewChild(os.Stdout)
	err := c.RunMember(os.Stdin, func() (benchproc.Member, error) {
		c.Rec.Start("m1", benchproc.SyncID(0), 7)
		c.Logf("up")
		return &fakeMember{c: c, owned: 1}, nil
	})
	if err != nil {
		return 1
	}
	return 0
}

// childSlow is a store-like child: its ready line carries its address,
// and it answers "slow" after 300 ms.
func childSlow() int {
	c := benchproc.NewChild(os.Stdout)
	if err := c.Send(benchproc.OpReady, map[string]string{"addr": "here"}, nil); err != nil {
		return 1
	}
	err := c.Serve(os.Stdin, func(cmd string) (any, bool, error) {
		if cmd == "slow" {
			time.Sleep(300 * time.Millisecond)
		}
		return nil, false, nil
	})
	if err != nil {
		return 1
	}
	return 0
}

func command(t *testing.T, mode string) *exec.Cmd {
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "BENCHPROC_CHILD="+mode)
	return cmd
}

func TestProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec := recorder.New()
	logs := make(chan string, 16)
	before := recorder.Now()
	p, err := benchproc.Start(ctx, command(t, "member"), func(l benchproc.Line) {
		switch l.Op {
		case benchproc.OpStart:
			rec.StartAt(l.Member, l.Sync, l.Token, l.T)
		case benchproc.OpEnd:
			rec.EndAt(l.Member, l.Sync, l.Token, l.T)
		}
	}, func(s string) {
		select {
		case logs <- s:
		default:
			t.Errorf("unexpected log line %q", s)
		}
	})
	require.NoError(t, err)

	var st benchproc.Status
	require.NoError(t, p.Ask(ctx, benchproc.CmdStatus, &st))
	require.Equal(t, benchproc.Status{Owned: 1, Leader: true}, st)
	require.Equal(t, "up", <-logs)

	// The start event was written before ready, the end before the
	// drain's reply: both are in the record once the reply is here.
	require.NoError(t, p.Ask(ctx, benchproc.CmdDrain, nil))
	ivs := rec.Intervals()
	require.Len(t, ivs, 1)
	require.Equal(t, "m1", ivs[0].Member)
	require.Equal(t, int64(7), ivs[0].Token)
	require.False(t, ivs[0].Open)
	require.GreaterOrEqual(t, ivs[0].Start, before, "the child's clock is the parent's")
	require.LessOrEqual(t, ivs[0].End, recorder.Now())

	var usage map[string]int64
	require.NoError(t, p.Ask(ctx, benchproc.CmdUsage, &usage))
	require.Equal(t, map[string]int64{"Put": 3}, usage)

	err = p.Ask(ctx, "nonsense", nil)
	require.ErrorContains(t, err, "unknown command")

	require.NoError(t, p.Ask(ctx, benchproc.CmdLeave, nil))
	require.NoError(t, p.Close())
	require.NoError(t, p.Err())
}

func TestKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := benchproc.Start(ctx, command(t, "member"), func(benchproc.Line) {}, nil)
	require.NoError(t, err)
	p.Kill()
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal("killed child did not exit")
	}
	require.ErrorContains(t, p.Err(), "killed")
	require.ErrorContains(t, p.Ask(ctx, benchproc.CmdStatus, nil), "exited")
}

func TestStartFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := benchproc.Start(ctx, command(t, "fail"), func(benchproc.Line) {}, nil)
	require.ErrorContains(t, err, "cannot join")
}

func TestAskThatGaveUpFailsTheNext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := benchproc.Start(ctx, command(t, "slow"), func(benchproc.Line) {}, nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"addr":"here"}`, string(p.Ready))
	defer func() {
		p.Kill()
		<-p.Done()
	}()
	gone, stop := context.WithCancel(ctx)
	stop()
	require.ErrorIs(t, p.Ask(gone, benchproc.CmdStatus, nil), context.Canceled, "an ended ctx sends nothing")
	require.NoError(t, p.Ask(ctx, benchproc.CmdStatus, nil))

	short, stop2 := context.WithTimeout(ctx, 10*time.Millisecond)
	defer stop2()
	require.ErrorIs(t, p.Ask(short, "slow", nil), context.DeadlineExceeded)
	// The slow reply comes later: the next Ask must not take it for its
	// own.
	require.ErrorContains(t, p.Ask(ctx, benchproc.CmdStatus, nil), "never answered")
}
