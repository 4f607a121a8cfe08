package simetcd

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"google.golang.org/protobuf/proto"
)

// progressInterval is etcd's default interval of progress notifications
// (--experimental-watch-progress-notify-interval).
const progressInterval = 10 * time.Minute

// invalidWatchID is clientv3.InvalidWatchID.
const invalidWatchID = -1

// watchServer serves one watch stream: requests arrive through Send on the
// client's goroutine, responses leave through pump, which owns the order.
type watchServer struct {
	s    *Server
	cs   *clientStream[pb.WatchRequest, pb.WatchResponse]
	ws   mvcc.WatchStream
	ctrl chan *pb.WatchResponse

	mu       sync.Mutex // leaf; guards the option maps
	prevKV   map[mvcc.WatchID]bool
	progress map[mvcc.WatchID]bool
}

// openWatch opens a watch stream on s.
func (s *Server) openWatch(ctx context.Context) (*clientStream[pb.WatchRequest, pb.WatchResponse], error) {
	w := &watchServer{
		s:        s,
		ws:       s.kv.NewWatchStream(),
		ctrl:     make(chan *pb.WatchResponse, 16),
		prevKV:   map[mvcc.WatchID]bool{},
		progress: map[mvcc.WatchID]bool{},
	}
	w.cs = &clientStream[pb.WatchRequest, pb.WatchResponse]{st: newStream(ctx), onSend: w.handle, out: make(chan *pb.WatchResponse, 16)}
	if err := s.track(w.cs.st); err != nil {
		w.ws.Close()
		return nil, err
	}
	s.wg.Add(1)
	go w.pump()
	return w.cs, nil
}

// track registers st with the Server, which ends it on Close and on a lost
// leader; it is forgotten when it ends.
func (s *Server) track(st *stream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return rpctypes.ErrGRPCStopped
	default:
	}
	if st.requireLeader && s.noLeader {
		return rpctypes.ErrGRPCNoLeader
	}
	s.streams[st] = struct{}{}
	return nil
}

func (s *Server) untrack(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st)
}

// handle serves one request of the client, as etcd's recvLoop does.
func (w *watchServer) handle(req *pb.WatchRequest) {
	switch u := req.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		w.create(u.CreateRequest)
	case *pb.WatchRequest_CancelRequest:
		id := u.CancelRequest.WatchId
		if err := w.ws.Cancel(mvcc.WatchID(id)); err == nil {
			w.control(&pb.WatchResponse{Header: w.s.header(w.ws.Rev()), WatchId: id, Canceled: true})
			w.mu.Lock()
			delete(w.prevKV, mvcc.WatchID(id))
			delete(w.progress, mvcc.WatchID(id))
			w.mu.Unlock()
		}
	case *pb.WatchRequest_ProgressRequest:
		w.ws.RequestProgressAll()
	}
}

func (w *watchServer) create(c *pb.WatchCreateRequest) {
	if c == nil {
		return
	}
	key, end := c.Key, c.RangeEnd
	if len(key) == 0 {
		key = []byte{0} // the smallest key
	}
	if c.StartRevision < 0 {
		w.control(&pb.WatchResponse{Header: w.s.header(w.ws.Rev()), WatchId: invalidWatchID,
			Created: true, Canceled: true, CancelReason: rpctypes.ErrCompacted.Error()})
		return
	}
	switch {
	case len(end) == 0:
		end = nil // one key
	case len(end) == 1 && end[0] == 0:
		end = []byte{} // every key from key on
	}
	id, err := w.ws.Watch(w.cs.st.ctx, mvcc.WatchID(c.WatchId), key, end, c.StartRevision, v3rpc.FiltersFromRequest(c)...)
	resp := &pb.WatchResponse{Header: w.s.header(w.ws.Rev()), WatchId: int64(id), Created: true}
	if err != nil {
		resp.WatchId, resp.Canceled, resp.CancelReason = invalidWatchID, true, err.Error()
	} else {
		w.mu.Lock()
		w.prevKV[id] = c.PrevKv
		w.progress[id] = c.ProgressNotify
		w.mu.Unlock()
	}
	w.control(resp)
}

func (w *watchServer) control(r *pb.WatchResponse) {
	select {
	case w.ctrl <- r:
	case <-w.cs.st.done:
	case <-w.cs.st.ctx.Done():
	}
}

// pump sends control responses and events in etcd's order: a watcher's
// events wait until its creation was announced.
func (w *watchServer) pump() {
	defer w.s.wg.Done()
	defer w.s.untrack(w.cs.st)
	defer w.ws.Close()
	announced := map[mvcc.WatchID]bool{}
	pending := map[mvcc.WatchID][]*pb.WatchResponse{}
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	for {
		select {
		case wr, ok := <-w.ws.Chan():
			if !ok {
				return
			}
			resp := w.events(wr)
			if wr.WatchID != invalidWatchID && !announced[wr.WatchID] {
				pending[wr.WatchID] = append(pending[wr.WatchID], resp)
				continue
			}
			if !w.cs.send(resp) {
				return
			}
			if len(wr.Events) > 0 {
				w.mu.Lock()
				if w.progress[wr.WatchID] {
					w.progress[wr.WatchID] = false // the next notification is elided
				}
				w.mu.Unlock()
			}
		case c := <-w.ctrl:
			if !w.cs.send(c) {
				return
			}
			id := mvcc.WatchID(c.WatchId)
			switch {
			case c.Canceled && id != invalidWatchID:
				delete(announced, id)
			case c.Created:
				announced[id] = true
				for _, r := range pending[id] {
					if !w.cs.send(r) {
						return
					}
				}
				delete(pending, id)
			}
		case <-tick.C:
			w.mu.Lock()
			for id, on := range w.progress {
				if on {
					w.ws.RequestProgress(id)
				}
				w.progress[id] = true
			}
			w.mu.Unlock()
		case <-w.cs.st.done:
			return
		case <-w.cs.st.ctx.Done():
			w.cs.st.close(w.cs.st.ctx.Err())
			return
		}
	}
}

// events turns mvcc's response into the wire's, with previous values where
// the watcher asked for them.
func (w *watchServer) events(wr mvcc.WatchResponse) *pb.WatchResponse {
	w.mu.Lock()
	prev := w.prevKV[wr.WatchID]
	w.mu.Unlock()
	evs := make([]*mvccpb.Event, len(wr.Events))
	for i := range wr.Events {
		ev := wr.Events[i]
		if prev && !(ev.Type == mvccpb.Event_PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
			r, err := w.s.kv.Range(context.Background(), ev.Kv.Key, nil, mvcc.RangeOptions{Rev: ev.Kv.ModRevision - 1})
			if err == nil && len(r.KVs) != 0 {
				// mvcc shares events between watchers: copy before adding.
				ev = proto.Clone(ev).(*mvccpb.Event)
				ev.PrevKv = r.KVs[0]
			}
		}
		evs[i] = ev
	}
	return &pb.WatchResponse{
		Header:          w.s.header(wr.Revision),
		WatchId:         int64(wr.WatchID),
		Events:          evs,
		CompactRevision: wr.CompactRevision,
		Canceled:        wr.CompactRevision != 0,
	}
}
