package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
)

// Kinds of fenced write.
const (
	// KindCheckpoint is a Claim.SaveCheckpoint: fenced by the claim's local
	// deadline and by its etcd guard.
	KindCheckpoint = "checkpoint"
	// KindGuard is a Txn on the checkpoint key guarded by Claim.Guard alone,
	// tried after SaveCheckpoint said ErrNotOwner: it shows that etcd itself
	// refuses the write, not only the member's own clock.
	KindGuard = "guard"
)

// Write is one attempt at a fenced write, one line of a fenced log. A
// worker appends it after the attempt returns, so a line with OK set means
// etcd committed the write with this token.
type Write struct {
	Member string `json:"member"`
	Sync   string `json:"sync"`
	Token  int64  `json:"token"`
	Seq    int64  `json:"seq"` // per member process and sync, from 1
	Kind   string `json:"kind"`
	// Start and End bracket the attempt, in recorder.Now() nanoseconds:
	// etcd committed a successful write somewhere between them.
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	OK    bool   `json:"ok"`
	Err   string `json:"err,omitempty"` // "not-owner", or the error of a failed attempt
}

// Value is what a fenced write stores at the sync's checkpoint key, so that
// etcd's history of the key names every write that succeeded.
type Value struct {
	Member string `json:"member"`
	Token  int64  `json:"token"`
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
}

// Log appends Writes to a file as JSON lines, one Write call per line, so a
// process killed mid-write leaves at most its last line cut short.
type Log struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLog returns a log writing to w.
func NewLog(w io.Writer) *Log { return &Log{w: w} }

// Append writes one line.
func (l *Log) Append(w Write) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.w.Write(append(b, '\n'))
	return err
}

// ReadLog reads a fenced log; a last line cut short is ignored.
func ReadLog(path string) ([]Write, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Write
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pending []byte
	line := 0
	for sc.Scan() {
		line++
		if pending != nil {
			return nil, fmt.Errorf("chaos: %s:%d: malformed line %q", path, line-1, pending)
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var w Write
		if err := json.Unmarshal(b, &w); err != nil {
			pending = append([]byte(nil), b...)
			continue
		}
		out = append(out, w)
	}
	// Only the last line may be cut short (the writer was killed).
	return out, sc.Err()
}
