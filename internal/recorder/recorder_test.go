package recorder_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/recorder"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNowIsMonotonic(t *testing.T) {
	prev := recorder.Now()
	require.Positive(t, prev)
	for range 1000 {
		now := recorder.Now()
		require.GreaterOrEqual(t, now, prev)
		prev = now
	}
}

func TestHandoffsPass(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s1", 5, 0)
	r.EndAt("a", "s1", 5, 10)
	r.StartAt("b", "s1", 7, 10) // adjacent: allowed
	r.EndAt("b", "s1", 7, 20)
	r.StartAt("b", "s1", 7, 25) // same member, same token (spec change)
	r.EndAt("b", "s1", 7, 30)
	r.StartAt("b", "s1", 9, 30) // same member, newer token
	r.StartAt("a", "s2", 6, 3)  // another sync, overlapping in time
	require.NoError(t, r.Check())
	require.Equal(t, map[string]string{"s1": "b", "s2": "a"}, r.Owners())

	ivs := r.Intervals()
	require.Len(t, ivs, 5)
	require.Equal(t, recorder.Interval{Member: "a", Sync: "s1", Token: 5, Start: 0, End: 10}, ivs[0])
	require.Equal(t, recorder.Interval{Member: "b", Sync: "s1", Token: 9, Start: 30, Open: true}, ivs[3])
	require.Equal(t, "s2", ivs[4].Sync)
}

func TestZeroLengthIntervals(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s", 1, 5)
	r.EndAt("a", "s", 1, 5)
	r.StartAt("b", "s", 2, 5)
	r.EndAt("b", "s", 2, 5)
	r.StartAt("c", "s", 3, 5)
	require.NoError(t, r.Check())
}

func requireViolation(t *testing.T, r *recorder.Recorder, substrs ...string) {
	t.Helper()
	err := r.Check()
	require.Error(t, err)
	for _, s := range substrs {
		require.Contains(t, err.Error(), s)
	}
}

func TestOverlapDetected(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.EndAt("a", "s", 1, 10)
		r.StartAt("b", "s", 2, 9)
		r.EndAt("b", "s", 2, 20)
		requireViolation(t, r, "sync s owned twice", "by 1ns")
	})
	t.Run("open extends forever", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.StartAt("b", "s", 2, 1_000_000)
		r.EndAt("b", "s", 2, 2_000_000)
		requireViolation(t, r, "owned twice", "until it ends")
	})
	t.Run("inside a long interval", func(t *testing.T) {
		// b and c do not overlap each other, but both overlap a.
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.EndAt("a", "s", 1, 100)
		r.StartAt("b", "s", 2, 10)
		r.EndAt("b", "s", 2, 20)
		r.StartAt("c", "s", 3, 30)
		r.EndAt("c", "s", 3, 40)
		err := r.Check()
		require.Error(t, err)
		require.Contains(t, err.Error(), "c@s(token 3)")
		require.Contains(t, err.Error(), "b@s(token 2)")
	})
	t.Run("same start", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 7)
		r.StartAt("b", "s", 2, 7)
		requireViolation(t, r, "owned twice")
	})
	t.Run("other syncs are independent", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s1", 1, 0)
		r.StartAt("a", "s2", 1, 0)
		r.StartAt("b", "s3", 1, 0)
		require.NoError(t, r.Check())
	})
}

func TestTokenViolations(t *testing.T) {
	t.Run("decrease", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 5, 0)
		r.EndAt("a", "s", 5, 10)
		r.StartAt("a", "s", 4, 20)
		requireViolation(t, r, "token went down")
	})
	t.Run("same token, other member", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 5, 0)
		r.EndAt("a", "s", 5, 10)
		r.StartAt("b", "s", 5, 20)
		requireViolation(t, r, "changed member without a new token")
	})
	t.Run("ordered by start, not by recording", func(t *testing.T) {
		// Recorded out of time order (as merged processes are), but the
		// tokens rise with time: fine.
		r := recorder.New()
		r.StartAt("b", "s", 8, 20)
		r.StartAt("a", "s", 5, 0)
		r.EndAt("a", "s", 5, 10)
		require.NoError(t, r.Check())
	})
}

func TestMisuse(t *testing.T) {
	t.Run("end without start", func(t *testing.T) {
		r := recorder.New()
		r.EndAt("a", "s", 1, 5)
		requireViolation(t, r, "without starting it")
	})
	t.Run("end with another token", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.EndAt("a", "s", 2, 5)
		requireViolation(t, r, "without starting it")
		require.Equal(t, map[string]string{"s": "a"}, r.Owners())
	})
	t.Run("double start", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.StartAt("a", "s", 1, 5)
		requireViolation(t, r, "while still owning it")
	})
	t.Run("end before start", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 10)
		r.EndAt("a", "s", 1, 5)
		requireViolation(t, r, "before it started")
	})
	t.Run("end after double start closes the newest", func(t *testing.T) {
		r := recorder.New()
		r.StartAt("a", "s", 1, 0)
		r.StartAt("a", "s", 2, 5)
		r.EndAt("a", "s", 1, 6)
		ivs := r.Intervals()
		require.False(t, ivs[0].Open)
		require.True(t, ivs[1].Open)
	})
}

func TestCheckCapsItsReport(t *testing.T) {
	r := recorder.New()
	for i := range 100 {
		r.EndAt("a", "s", int64(i), int64(i))
	}
	err := r.Check()
	require.Error(t, err)
	require.Contains(t, err.Error(), "and 80 more violations")
}

func TestEndMember(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s1", 1, 0)
	r.StartAt("a", "s2", 2, 0)
	r.StartAt("b", "s3", 3, 0)
	require.Equal(t, 2, r.EndMember("a", 50))
	require.Zero(t, r.EndMember("a", 60))
	r.StartAt("c", "s1", 4, 50)
	require.NoError(t, r.Check())
	require.Equal(t, map[string]string{"s1": "c", "s3": "b"}, r.Owners())
	for _, iv := range r.Intervals() {
		if iv.Member == "a" {
			require.Equal(t, int64(50), iv.End)
		}
	}
}

func TestGaps(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s", 1, 0)
	r.EndAt("a", "s", 1, 100)
	r.StartAt("b", "s", 2, 100) // adjacent: no gap
	r.EndAt("b", "s", 2, 200)
	r.StartAt("c", "s", 3, 230) // 30ns gap
	r.EndAt("c", "s", 3, 300)
	r.StartAt("d", "s", 4, 400) // 100ns gap
	r.StartAt("a", "t", 1, 0)
	r.EndAt("a", "t", 1, 10)
	r.StartAt("b", "t", 2, 15)

	require.Equal(t, []recorder.Gap{
		{Sync: "s", From: "b", To: "c", FromToken: 2, ToToken: 3, Start: 200, End: 230},
		{Sync: "s", From: "c", To: "d", FromToken: 3, ToToken: 4, Start: 300, End: 400},
	}, r.Gaps("s"))
	require.EqualValues(t, 30, r.Gaps("s")[0].Duration())
	require.Empty(t, r.Gaps("none"))

	all := r.Gaps()
	require.Len(t, all, 3)
	require.Equal(t, all, r.Gaps("s", "t"))
	require.Equal(t, all[2:], r.Gaps("t"))
	require.Equal(t, "t", all[2].Sync)
	require.EqualValues(t, 5, all[2].Duration())
}

func TestGapsAfterNestedInterval(t *testing.T) {
	// An interval inside a longer one does not open a gap when it ends.
	r := recorder.New()
	r.StartAt("a", "s", 1, 0)
	r.EndAt("a", "s", 1, 100)
	r.StartAt("b", "s", 2, 10)
	r.EndAt("b", "s", 2, 20)
	r.StartAt("c", "s", 3, 150)
	gaps := r.Gaps("s")
	require.Len(t, gaps, 1)
	require.Equal(t, recorder.Gap{Sync: "s", From: "a", To: "c", FromToken: 1, ToToken: 3, Start: 100, End: 150}, gaps[0])
}

func TestWriteReadRoundTrip(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s", 1, 0)
	r.EndAt("a", "s", 1, 10)
	r.StartAt("b", "s", 2, 5) // overlap, survives the round trip
	r.EndAt("x", "y", 1, 3)   // misuse, too

	var buf bytes.Buffer
	n, err := r.WriteTo(&buf)
	require.NoError(t, err)
	require.EqualValues(t, buf.Len(), n)
	require.Equal(t, 4, strings.Count(buf.String(), "\n"))

	back, err := recorder.Read(&buf)
	require.NoError(t, err)
	require.Equal(t, r.Intervals(), back.Intervals())
	require.Equal(t, r.Check().Error(), back.Check().Error())
}

func TestReadToleratesCutLastLine(t *testing.T) {
	var buf bytes.Buffer
	r := recorder.New(recorder.WithSink(&buf))
	r.StartAt("a", "s", 1, 0)
	r.EndAt("a", "s", 1, 10)
	r.StartAt("b", "s", 2, 10)
	whole := buf.String()
	cut := whole[:len(whole)-7]

	back, err := recorder.Read(strings.NewReader(cut))
	require.NoError(t, err)
	require.Len(t, back.Intervals(), 1)

	back, err = recorder.Read(strings.NewReader(whole))
	require.NoError(t, err)
	require.Equal(t, r.Intervals(), back.Intervals())

	_, err = recorder.Read(strings.NewReader("{bad\n" + whole))
	require.ErrorContains(t, err, "line 1")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestSinkErrorReported(t *testing.T) {
	r := recorder.New(recorder.WithSink(failingWriter{}))
	r.StartAt("a", "s", 1, 0)
	require.ErrorContains(t, r.Check(), "disk full")
}

func TestMergeAcrossProcesses(t *testing.T) {
	// Process 1 runs member a, which is killed at 50 while owning s; process
	// 2 runs member b, which takes s over at 60.
	var p1, p2 bytes.Buffer
	r1 := recorder.New(recorder.WithSink(&p1))
	r2 := recorder.New(recorder.WithSink(&p2))
	r1.StartAt("a", "s", 1, 0)
	r2.StartAt("b", "s", 2, 60)

	back1, err := recorder.Read(&p1)
	require.NoError(t, err)
	back2, err := recorder.Read(&p2)
	require.NoError(t, err)

	m := recorder.Merge(back1, back2)
	require.ErrorContains(t, m.Check(), "owned twice") // a never ended
	back1.EndMember("a", 50)
	m = recorder.Merge(back1, back2)
	require.NoError(t, m.Check())
	require.Equal(t, []recorder.Gap{{Sync: "s", From: "a", To: "b", FromToken: 1, ToToken: 2, Start: 50, End: 60}}, m.Gaps("s"))

	// The same member ID restarted in a new process.
	r3 := recorder.New()
	r3.StartAt("a", "s", 3, 70)
	require.NoError(t, recorder.Merge(back1, recorder.New(), r3).Check())
}

func TestWithClock(t *testing.T) {
	now := int64(100)
	r := recorder.New(recorder.WithClock(func() int64 { return now }))
	r.Start("a", "s", 1)
	now = 150
	r.End("a", "s", 1)
	iv := r.Intervals()[0]
	require.Equal(t, int64(100), iv.Start)
	require.Equal(t, int64(150), iv.End)
	require.EqualValues(t, 50, iv.Duration())
}

func TestConcurrentUse(t *testing.T) {
	var sink bytes.Buffer
	var sinkMu sync.Mutex
	r := recorder.New(recorder.WithSink(lockedWriter{&sinkMu, &sink}))
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			member := fmt.Sprintf("m%d", w)
			for i := range rounds {
				syncID := fmt.Sprintf("s%d", w) // one sync per worker: no overlap
				r.Start(member, syncID, int64(i+1))
				if i%20 == 0 {
					_ = r.Owners()
					_ = r.Check()
				}
				r.End(member, syncID, int64(i+1))
			}
		})
	}
	wg.Go(func() {
		for range rounds / 10 {
			_ = r.Intervals()
			_, _ = r.WriteTo(&bytes.Buffer{})
		}
	})
	wg.Wait()
	require.NoError(t, r.Check())
	require.Len(t, r.Intervals(), workers*rounds)
	require.Empty(t, r.Owners())

	sinkMu.Lock()
	back, err := recorder.Read(&sink)
	sinkMu.Unlock()
	require.NoError(t, err)
	require.Equal(t, r.Intervals(), back.Intervals())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestOverlaps(t *testing.T) {
	r := recorder.New()
	r.StartAt("a", "s1", 1, 0)
	r.StartAt("b", "s1", 2, 5) // a still runs: overlap 5..8
	r.EndAt("a", "s1", 1, 8)
	r.EndAt("b", "s1", 2, 20)
	r.StartAt("c", "s1", 3, 20) // adjacent: no overlap
	r.StartAt("a", "s2", 4, 0)
	r.StartAt("b", "s2", 5, 10) // both open: open overlap
	r.StartAt("a", "s3", 6, 0)
	r.EndAt("a", "s3", 6, 10)
	r.StartAt("b", "s3", 7, 12) // a gap, not an overlap

	got := r.Overlaps()
	require.Len(t, got, 2)
	require.Equal(t, "s1", got[0].Sync)
	require.Equal(t, []string{"a", "b"}, []string{got[0].First, got[0].Second})
	require.Equal(t, int64(5), got[0].Start)
	require.Equal(t, int64(8), got[0].End)
	require.Equal(t, 3*time.Nanosecond, got[0].Duration())
	require.False(t, got[0].Open)
	require.Equal(t, "s2", got[1].Sync)
	require.True(t, got[1].Open)
	require.Empty(t, r.Overlaps("s3"))
	require.Len(t, r.Overlaps("s1"), 1)

	// Check reports the same overlaps, and nothing else here.
	err := r.Check()
	require.Error(t, err)
	require.Equal(t, 2, strings.Count(err.Error(), "owned twice"), err.Error())
}
