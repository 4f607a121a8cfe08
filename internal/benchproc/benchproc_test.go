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
	case "fail":
		c := benchproc.NewChild(os.Stdout)
		_ = c.Send(benchproc.OpReady, nil, errors.New("cannot join"))
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

func childMember() int {
	c := benchproc.NewChild(os.Stdout)
	c.Rec.Start("m1", benchproc.SyncID(0), 7)
	if err := c.Send(benchproc.OpReady, map[string]string{"addr": "here"}, nil); err != nil {
		return 1
	}
	c.Logf("up")
	owned := 1
	err := c.Serve(os.Stdin, func(cmd string) (any, bool, error) {
		switch cmd {
		case benchproc.CmdStatus:
			return benchproc.Status{Owned: owned, Leader: true}, false, nil
		case benchproc.CmdDrain:
			c.Rec.End("m1", benchproc.SyncID(0), 7)
			owned = 0
			return nil, false, nil
		case benchproc.CmdLeave:
			return nil, true, nil
		case "slow":
			time.Sleep(300 * time.Millisecond)
			return nil, false, nil
		}
		return nil, false, errors.New("unknown command")
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
	require.JSONEq(t, `{"addr":"here"}`, string(p.Ready))

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
	p, err := benchproc.Start(ctx, command(t, "member"), func(benchproc.Line) {}, nil)
	require.NoError(t, err)
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
