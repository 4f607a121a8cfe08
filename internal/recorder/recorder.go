package recorder

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Now returns the CLOCK_MONOTONIC time in nanoseconds: the same clock in
// every process of the machine, never set back.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("recorder: clock_gettime(CLOCK_MONOTONIC): %v", err))
	}
	return ts.Nano()
}

// Interval is one time a member owned a sync, from Start to End (monotonic
// nanoseconds, see [Now]). Open intervals have not ended: End is 0 and they
// count as lasting forever.
type Interval struct {
	Member string `json:"member"`
	Sync   string `json:"sync"`
	Token  int64  `json:"token"`
	Start  int64  `json:"start"`
	End    int64  `json:"end,omitempty"`
	Open   bool   `json:"open,omitempty"`
}

// Duration is End - Start; for an open interval, [Now] - Start.
func (iv Interval) Duration() time.Duration {
	if iv.Open {
		return time.Duration(Now() - iv.Start)
	}
	return time.Duration(iv.End - iv.Start)
}

func (iv Interval) String() string {
	end := "open"
	if !iv.Open {
		end = fmt.Sprint(iv.End)
	}
	return fmt.Sprintf("%s@%s(token %d)[%d, %s]", iv.Member, iv.Sync, iv.Token, iv.Start, end)
}

// Option configures [New].
type Option func(*options)

type options struct {
	now  func() int64
	sink io.Writer
}

func defaultOptions() options { return options{now: Now} }

// WithClock replaces [Now] as the source of timestamps for
// [Recorder.Start] and [Recorder.End].
func WithClock(now func() int64) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithSink writes every event to w as a JSON line, in one Write call, as it
// is recorded, so a process that dies leaves a readable record (see [Read]).
// The first write error is reported by [Recorder.Check].
func WithSink(w io.Writer) Option {
	return func(o *options) { o.sink = w }
}

// event is the unit of the record, and the line format of WriteTo and Read.
type event struct {
	Op     string `json:"op"` // "start" or "end"
	Member string `json:"member"`
	Sync   string `json:"sync"`
	Token  int64  `json:"token"`
	T      int64  `json:"t"`
}

const (
	opStart = "start"
	opEnd   = "end"
)

type ownerKey struct{ member, sync string }

// Recorder collects ownership intervals. It is safe for concurrent use.
type Recorder struct {
	opts options

	mu        sync.Mutex
	events    []event
	intervals []Interval
	open      map[ownerKey][]int // indexes into intervals, oldest first
	misuse    []error
	sinkErr   error
}

// New returns an empty recorder.
func New(opts ...Option) *Recorder {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Recorder{opts: o, open: make(map[ownerKey][]int)}
}

// Start records that member began to own sync with token, now.
func (r *Recorder) Start(member, sync string, token int64) {
	r.record(event{Op: opStart, Member: member, Sync: sync, Token: token, T: r.opts.now()})
}

// End records that member stopped owning sync (held with token), now.
func (r *Recorder) End(member, sync string, token int64) {
	r.record(event{Op: opEnd, Member: member, Sync: sync, Token: token, T: r.opts.now()})
}

// StartAt is [Recorder.Start] at time t.
func (r *Recorder) StartAt(member, sync string, token, t int64) {
	r.record(event{Op: opStart, Member: member, Sync: sync, Token: token, T: t})
}

// EndAt is [Recorder.End] at time t.
func (r *Recorder) EndAt(member, sync string, token, t int64) {
	r.record(event{Op: opEnd, Member: member, Sync: sync, Token: token, T: t})
}

// EndMember ends every open interval of member at time t and returns how
// many it ended: for a member whose process was killed at t.
func (r *Recorder) EndMember(member string, t int64) int {
	r.mu.Lock()
	var ends []event
	for k, idx := range r.open {
		if k.member != member {
			continue
		}
		for _, i := range idx {
			iv := r.intervals[i]
			ends = append(ends, event{Op: opEnd, Member: member, Sync: iv.Sync, Token: iv.Token, T: t})
		}
	}
	slices.SortFunc(ends, func(a, b event) int { return cmp.Compare(a.Sync, b.Sync) })
	for _, e := range ends {
		r.recordLocked(e)
	}
	r.mu.Unlock()
	return len(ends)
}

func (r *Recorder) record(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLocked(e)
}

func (r *Recorder) recordLocked(e event) {
	r.events = append(r.events, e)
	r.apply(e)
	if r.opts.sink != nil && r.sinkErr == nil {
		line, err := json.Marshal(e)
		if err == nil {
			_, err = r.opts.sink.Write(append(line, '\n'))
		}
		if err != nil {
			r.sinkErr = fmt.Errorf("recorder: write event: %w", err)
		}
	}
}

func (r *Recorder) apply(e event) {
	k := ownerKey{e.Member, e.Sync}
	switch e.Op {
	case opStart:
		if len(r.open[k]) > 0 {
			prev := r.intervals[r.open[k][len(r.open[k])-1]]
			r.misuse = append(r.misuse, fmt.Errorf("recorder: %s started %s (token %d) at %d while still owning it (token %d since %d)",
				e.Member, e.Sync, e.Token, e.T, prev.Token, prev.Start))
		}
		r.open[k] = append(r.open[k], len(r.intervals))
		r.intervals = append(r.intervals, Interval{Member: e.Member, Sync: e.Sync, Token: e.Token, Start: e.T, Open: true})
	case opEnd:
		idx := r.open[k]
		for j := len(idx) - 1; j >= 0; j-- {
			iv := &r.intervals[idx[j]]
			if iv.Token != e.Token {
				continue
			}
			iv.End, iv.Open = e.T, false
			if e.T < iv.Start {
				r.misuse = append(r.misuse, fmt.Errorf("recorder: %s ended %s (token %d) at %d, before it started at %d",
					e.Member, e.Sync, e.Token, e.T, iv.Start))
			}
			if idx = slices.Delete(idx, j, j+1); len(idx) == 0 {
				delete(r.open, k)
			} else {
				r.open[k] = idx
			}
			return
		}
		r.misuse = append(r.misuse, fmt.Errorf("recorder: %s ended %s (token %d) at %d without starting it",
			e.Member, e.Sync, e.Token, e.T))
	default:
		r.misuse = append(r.misuse, fmt.Errorf("recorder: unknown event %q", e.Op))
	}
}

// Intervals returns every interval, sorted by sync, then start time.
func (r *Recorder) Intervals() []Interval {
	r.mu.Lock()
	out := slices.Clone(r.intervals)
	r.mu.Unlock()
	sortIntervals(out)
	return out
}

func sortIntervals(ivs []Interval) {
	slices.SortStableFunc(ivs, func(a, b Interval) int {
		return cmp.Or(cmp.Compare(a.Sync, b.Sync), cmp.Compare(a.Start, b.Start))
	})
}

// Owners maps each sync that has an open interval to its member (the one
// that started last, should there be several).
func (r *Recorder) Owners() map[string]string {
	owners := make(map[string]string)
	for _, iv := range r.Intervals() {
		if iv.Open {
			owners[iv.Sync] = iv.Member
		}
	}
	return owners
}

// maxReported bounds the violations Check lists.
const maxReported = 20

// Check verifies the record: no two intervals of one sync overlap (sharing an
// instant, End == Start, is allowed), tokens of a sync never decrease in
// start order and strictly increase whenever the member changes, and the
// recorder was used correctly (no End without Start or before it, no second
// Start of an owned sync). It returns nil or an error
// listing the violations.
func (r *Recorder) Check() error {
	r.mu.Lock()
	errs := slices.Clone(r.misuse)
	if r.sinkErr != nil {
		errs = append(errs, r.sinkErr)
	}
	r.mu.Unlock()
	errs = append(errs, checkIntervals(r.Intervals())...)
	if len(errs) > maxReported {
		n := len(errs) - maxReported
		errs = append(errs[:maxReported], fmt.Errorf("recorder: and %d more violations", n))
	}
	return errors.Join(errs...)
}

// checkIntervals checks overlap and tokens of intervals sorted by sync, start.
func checkIntervals(ivs []Interval) []error {
	var errs []error
	perSync(ivs, nil, func(ivs []Interval) { errs = append(errs, checkSync(ivs)...) })
	return errs
}

func checkSync(ivs []Interval) []error {
	var errs []error
	for _, o := range overlaps(ivs) {
		by := "until it ends"
		if !o.first.Open {
			by = "by " + o.Duration().String()
		}
		errs = append(errs, fmt.Errorf("recorder: sync %s owned twice: %v overlaps %v %s", o.Sync, o.first, o.second, by))
	}
	for i := 1; i < len(ivs); i++ {
		prev, cur := ivs[i-1], ivs[i]
		switch {
		case cur.Token < prev.Token:
			errs = append(errs, fmt.Errorf("recorder: sync %s token went down: %v then %v", cur.Sync, prev, cur))
		case cur.Token == prev.Token && cur.Member != prev.Member:
			errs = append(errs, fmt.Errorf("recorder: sync %s changed member without a new token: %v then %v", cur.Sync, prev, cur))
		}
	}
	return errs
}

// Overlap is a time a sync had two owners: Second started while First, an
// interval that started earlier, still ran.
type Overlap struct {
	Sync          string
	First, Second string // the members
	Start         int64  // when Second started
	End           int64  // when the first of the two ended; 0 if neither has
	Open          bool   // neither interval has ended

	first, second Interval
}

// Duration is the length of the overlap; for an open one, until [Now].
func (o Overlap) Duration() time.Duration {
	if o.Open {
		return time.Duration(Now() - o.Start)
	}
	return time.Duration(o.End - o.Start)
}

// Overlaps returns the times a sync had two owners, sorted by sync, then
// time; with no arguments, of every sync, else of the syncs named. It is the
// overlap rule of [Recorder.Check] as data: each interval that starts before
// the furthest-reaching earlier interval of its sync has ended overlaps it
// (sharing an instant, End == Start, does not).
func (r *Recorder) Overlaps(syncs ...string) []Overlap {
	var out []Overlap
	perSync(r.Intervals(), syncs, func(ivs []Interval) { out = append(out, overlaps(ivs)...) })
	return out
}

// overlaps finds the overlaps among the intervals of one sync, sorted by
// start.
func overlaps(ivs []Interval) []Overlap {
	var out []Overlap
	// last is the interval reaching furthest in time so far: any later start
	// before its end overlaps it.
	last := 0
	for i := 1; i < len(ivs); i++ {
		cur, prev := ivs[i], ivs[last]
		if prev.Open || cur.Start < prev.End {
			o := Overlap{Sync: cur.Sync, First: prev.Member, Second: cur.Member, Start: cur.Start, first: prev, second: cur}
			if end := min(endOf(prev), endOf(cur)); end == endOf(Interval{Open: true}) {
				o.Open = true
			} else {
				o.End = end
			}
			out = append(out, o)
		}
		if endOf(cur) > endOf(prev) {
			last = i
		}
	}
	return out
}

func endOf(iv Interval) int64 {
	if iv.Open {
		return 1<<63 - 1
	}
	return iv.End
}

// Gap is a time a sync had no owner, between two of its intervals.
type Gap struct {
	Sync      string
	From, To  string // members before and after
	FromToken int64
	ToToken   int64
	Start     int64 // when From's interval ended
	End       int64 // when To's interval started
}

// Duration is the length of the gap.
func (g Gap) Duration() time.Duration { return time.Duration(g.End - g.Start) }

// Gaps returns the times a sync had no owner between its first interval and
// its last, sorted by sync, then time; with no arguments, of every sync,
// else of the syncs named. Adjacent intervals (End == Start) leave no gap.
func (r *Recorder) Gaps(syncs ...string) []Gap {
	var out []Gap
	perSync(r.Intervals(), syncs, func(ivs []Interval) { out = append(out, gaps(ivs)...) })
	return out
}

// perSync calls f with the intervals of each sync in turn (ivs sorted by
// sync, then start), only of the syncs named when any are.
func perSync(ivs []Interval, syncs []string, f func([]Interval)) {
	for len(ivs) > 0 {
		n := 1
		for n < len(ivs) && ivs[n].Sync == ivs[0].Sync {
			n++
		}
		if len(syncs) == 0 || slices.Contains(syncs, ivs[0].Sync) {
			f(ivs[:n])
		}
		ivs = ivs[n:]
	}
}

func gaps(ivs []Interval) []Gap {
	var out []Gap
	if len(ivs) == 0 {
		return nil
	}
	last := ivs[0]
	for _, cur := range ivs[1:] {
		if !last.Open && cur.Start > last.End {
			out = append(out, Gap{
				Sync: cur.Sync, From: last.Member, To: cur.Member,
				FromToken: last.Token, ToToken: cur.Token,
				Start: last.End, End: cur.Start,
			})
		}
		if endOf(cur) > endOf(last) {
			last = cur
		}
	}
	return out
}

// WriteTo writes the record as JSON lines, one event per line, in the order
// recorded. [Read] reads it back.
func (r *Recorder) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	events := slices.Clone(r.events)
	r.mu.Unlock()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			return 0, fmt.Errorf("recorder: encode: %w", err)
		}
	}
	n, err := w.Write(buf.Bytes())
	if err != nil {
		return int64(n), fmt.Errorf("recorder: write: %w", err)
	}
	return int64(n), nil
}

// Read reads a record written by [Recorder.WriteTo] or [WithSink] into a new
// recorder. A last line cut short (the writer was killed mid-write) is
// ignored; any other malformed line is an error.
func Read(rd io.Reader) (*Recorder, error) {
	r := New()
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("recorder: read: %w", err)
	}
	for lineNo := 1; len(data) > 0; lineNo++ {
		line, rest, complete := bytes.Cut(data, []byte{'\n'})
		data = rest
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			if !complete {
				break
			}
			return nil, fmt.Errorf("recorder: line %d: %w", lineNo, err)
		}
		r.record(e)
	}
	return r, nil
}

// Merge returns a recorder holding the events of rs, each recorder's in its
// order, one recorder after another. Pass the records of one member ID in the
// order its processes ran.
func Merge(rs ...*Recorder) *Recorder {
	m := New()
	for _, r := range rs {
		r.mu.Lock()
		events := slices.Clone(r.events)
		r.mu.Unlock()
		for _, e := range events {
			m.record(e)
		}
	}
	return m
}
