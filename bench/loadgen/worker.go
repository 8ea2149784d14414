package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "parley/bench/loadgen/pb/parley/v1"
)

const (
	connectTimeout   = 60 * time.Second
	connectAttempts  = 3
	reconnectBackoff = 500 * time.Millisecond
	setupRPCTimeout  = 60 * time.Second
	setupConcurrency = 64
	tokenTTL         = 7 * 24 * time.Hour
	maxReceiveBytes  = 16 * 1024 * 1024
	tickNs           = 1_000_000
	maxTickNs        = 5_000_000
	abortCheckNs     = 100_000_000
	progressEvery    = 2 * time.Second
)

// resentCodes: errors after which a send is resent (retry_shed): the server refused it before
// storing it, or its fate is unknown; a resend with the same client_message_id is stored at
// most once.
var resentCodes = map[pb.ErrorCode]bool{
	pb.ErrorCode_ERROR_CODE_OVERLOADED:        true,
	pb.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED: true,
	pb.ErrorCode_ERROR_CODE_UNAVAILABLE:       true,
}

// workerConfig: the runner's "setup" command (bench/runner.py).
type workerConfig struct {
	Worker      int     `json:"worker"`
	Target      string  `json:"target"`
	RunID       string  `json:"run_id"`
	UserOffset  int     `json:"user_offset"`
	Users       int     `json:"users"`
	Connections int     `json:"connections"`
	GroupSize   int     `json:"group_size"`
	DirectShare float64 `json:"direct_share"`
	BodyBytes   int     `json:"body_bytes"`
	Seed        uint64  `json:"seed"`
	// Resend sends the server shed or timed out (same client_message_id, after its retry-after
	// plus jitter, as the SDKs do) instead of counting them failed.
	RetryShed bool `json:"retry_shed"`
	// TLS with this CA (PEM file, e.g. .state/pki/ca.crt); empty: plaintext.
	TLSCA string `json:"tls_ca"`
	// The name the server certificate must carry when it is not the target's host.
	TLSServerName string `json:"tls_server_name"`
	// HS256 key of the tokens; empty: the development secret.
	JWTSecret string `json:"jwt_secret"`
}

// client: one simulated user with one session stream at a time.
type client struct {
	index         int32
	userID        string
	authorization string
	conversations []int32 // plan indices
	chat          pb.ChatServiceClient
	live          bool     // under worker.mu: synced, and its stream not ended
	session       *session // under worker.mu: the current stream
	// Under worker.mu, retry_shed: after a shed send the client holds all its sends until the
	// retry-after has passed (as the SDKs' outboxes do): new ones wait with the shed one and
	// go out in order when the hold ends, instead of meeting the same refusal.
	// When the hold ends, the oldest held send goes alone (the probe); the rest follow its ack,
	// so a client still refused costs the server one refusal per hold, not one per held send.
	heldUntilNs int64
	held        []int64
	holdGen     int64
	probe       int64
}

type session struct {
	stream     grpc.BidiStreamingClient[pb.ConnectRequest, pb.ConnectResponse]
	cancel     context.CancelFunc
	sendMu     sync.Mutex // a gRPC stream takes one sender at a time
	halfClosed bool       // under sendMu
	synced     bool       // under worker.mu
	// Posted once by the reader: "" when sync_complete arrived, else why the stream ended first.
	syncResult chan string
	done       chan struct{} // closed when the reader returns
}

type pendingSend struct {
	client  *client
	request *pb.ConnectRequest
}

// stepState: everything measured during one step (under worker.mu).
type stepState struct {
	ledger           *lossLedger
	windowStartNs    int64
	windowEndNs      int64
	ack, delivery    latency
	lag              latency
	admittedAck      latency
	admittedDelivery latency
	offered, sent    int64
	skipped          int64
	windowDeliveries int64
	windowAcks       int64
	errors           map[string]int64
	// Overload: resends of shed sends, and latency from the attempt the server admitted.
	retries     int64
	attemptNs   map[int64]int64
	attempts    map[int64]int
	requests    map[int64]pendingSend
	stray       int64
	sendingDone bool
	drained     chan struct{}
	drainedSet  bool
}

func newStepState(windowStartNs, windowEndNs int64) *stepState {
	return &stepState{
		ledger:           newLossLedger(),
		windowStartNs:    windowStartNs,
		windowEndNs:      windowEndNs,
		ack:              newLatency(),
		delivery:         newLatency(),
		lag:              newLatency(),
		admittedAck:      newLatency(),
		admittedDelivery: newLatency(),
		errors:           make(map[string]int64),
		attemptNs:        make(map[int64]int64),
		attempts:         make(map[int64]int),
		requests:         make(map[int64]pendingSend),
		drained:          make(chan struct{}),
	}
}

func (s *stepState) inWindow(tNs int64) bool { return s.windowStartNs <= tNs && tNs < s.windowEndNs }

// checkDrained wakes the drain wait once sending is over and nothing is owed any more.
func (s *stepState) checkDrained() {
	if s.sendingDone && s.ledger.outstanding() == 0 && !s.drainedSet {
		s.drainedSet = true
		close(s.drained)
	}
}

// outgoing: a frame to send once worker.mu is released (a Send may wait for flow control).
type outgoing struct {
	session *session
	request *pb.ConnectRequest
}

type worker struct {
	cfg             workerConfig
	plan            *plan
	conns           []*grpc.ClientConn
	clients         []*client
	conversationIDs []string
	closing         atomic.Bool
	background      sync.WaitGroup

	mu               sync.Mutex // everything below, and client.live / client.session / session.synced
	rng              *rand.Rand
	order            *orderTracker
	step             *stepState
	nextMsgID        int64
	streamResets     int64
	streamEndReasons map[string]int64
}

func newWorker(cfg workerConfig) (*worker, error) {
	p, err := planConversations(cfg.Users, cfg.GroupSize)
	if err != nil {
		return nil, err
	}
	if cfg.Connections < 1 {
		cfg.Connections = 1
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = devSecret
	}
	return &worker{
		cfg:              cfg,
		plan:             p,
		rng:              rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.Worker))),
		order:            newOrderTracker(),
		nextMsgID:        1,
		streamEndReasons: make(map[string]int64),
	}, nil
}

func (w *worker) userID(index int) string {
	return fmt.Sprintf("%s-u%d", w.cfg.RunID, w.cfg.UserOffset+index)
}

func (w *worker) dialOptions() ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if w.cfg.TLSCA != "" {
		tls, err := credentials.NewClientTLSFromFile(w.cfg.TLSCA, w.cfg.TLSServerName)
		if err != nil {
			return nil, fmt.Errorf("TLS CA %s: %w", w.cfg.TLSCA, err)
		}
		creds = tls
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReceiveBytes)),
		// One write buffer per connection shared by its streams, not one per stream.
		grpc.WithSharedWriteBuffer(true),
	}, nil
}

// --- setup ----------------------------------------------------------------------------------

func (w *worker) setup() (map[string]any, error) {
	started := time.Now()
	opts, err := w.dialOptions()
	if err != nil {
		return nil, err
	}
	// Every grpc.ClientConn is its own HTTP/2 connection; the streams of the users are spread
	// over them.
	for range w.cfg.Connections {
		conn, err := grpc.NewClient(w.cfg.Target, opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", w.cfg.Target, err)
		}
		w.conns = append(w.conns, conn)
	}
	w.clients = make([]*client, w.cfg.Users)
	for i := range w.clients {
		id := w.userID(i)
		token, err := mintToken(id, w.cfg.JWTSecret, tokenTTL)
		if err != nil {
			return nil, err
		}
		w.clients[i] = &client{
			index:         int32(i),
			userID:        id,
			authorization: "Bearer " + token,
			chat:          pb.NewChatServiceClient(w.conns[i%len(w.conns)]),
		}
	}
	w.conversationIDs = make([]string, len(w.plan.conversations))
	failures := newCounter()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range setupConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for index := range jobs {
				w.create(index, failures)
			}
		}()
	}
	for index := range w.plan.conversations {
		jobs <- index
	}
	close(jobs)
	wg.Wait()
	missing := 0
	for index, planned := range w.plan.conversations {
		if w.conversationIDs[index] == "" {
			missing++
		}
		for _, member := range planned.members {
			c := w.clients[member]
			c.conversations = append(c.conversations, int32(index))
		}
	}
	return map[string]any{
		"event":                 "setup_done",
		"conversations":         len(w.plan.conversations),
		"missing_conversations": missing,
		"setup_errors":          failures.snapshot(),
		"seconds":               roundTo(time.Since(started).Seconds(), 2),
	}, nil
}

func (w *worker) create(index int, failures *counter) {
	planned := w.plan.conversations[index]
	creator := w.clients[planned.members[0]]
	conv := pb.NewConversationServiceClient(w.conns[index%len(w.conns)])
	for attempt := range 3 {
		ctx, cancel := context.WithTimeout(w.authorized(context.Background(), creator), setupRPCTimeout)
		var id string
		var err error
		if planned.kind == kindDirect {
			var resp *pb.CreateDirectResponse
			resp, err = conv.CreateDirect(ctx, &pb.CreateDirectRequest{PeerUserId: w.clients[planned.members[1]].userID})
			if err == nil {
				id = resp.GetConversation().GetId()
			}
		} else {
			members := make([]string, 0, len(planned.members)-1)
			for _, m := range planned.members[1:] {
				members = append(members, w.clients[m].userID)
			}
			var resp *pb.CreateGroupResponse
			resp, err = conv.CreateGroup(ctx, &pb.CreateGroupRequest{Name: fmt.Sprintf("bench group %d", index), MemberIds: members})
			if err == nil {
				id = resp.GetConversation().GetId()
			}
		}
		cancel()
		if err == nil {
			w.conversationIDs[index] = id
			return
		}
		failures.add(codeName(status.Code(err)), 1)
		time.Sleep(time.Duration(attempt+1) * reconnectBackoff)
	}
}

func (w *worker) authorized(ctx context.Context, c *client) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", c.authorization)
}

// --- sessions -------------------------------------------------------------------------------

// connect opens every user's stream at rate per second, concurrency handshakes at a time.
func (w *worker) connect(rate float64, concurrency int, emit func(map[string]any)) map[string]any {
	started := time.Now()
	failures := newCounter()
	var done atomic.Int64
	slots := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	lastProgress := started
	for i, c := range w.clients {
		due := started.Add(time.Duration(float64(i) / rate * 1e9))
		if delay := time.Until(due); delay > 0 {
			time.Sleep(delay)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			for attempt := range connectAttempts {
				reason := w.open(c)
				if reason == "" {
					done.Add(1)
					return
				}
				failures.add(reason, 1)
				time.Sleep(time.Duration(attempt+1) * reconnectBackoff)
			}
		}()
		if now := time.Now(); now.Sub(lastProgress) >= progressEvery {
			lastProgress = now
			emit(map[string]any{"event": "progress", "worker": w.cfg.Worker, "opened": i + 1, "connected": done.Load()})
		}
	}
	wg.Wait()
	return map[string]any{
		"event":            "connect_done",
		"connected":        w.liveCount(),
		"users":            len(w.clients),
		"connect_failures": failures.snapshot(),
		"seconds":          roundTo(time.Since(started).Seconds(), 2),
	}
}

func (w *worker) liveCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.clients {
		if c.live {
			n++
		}
	}
	return n
}

// open opens the client's stream (hello with its cursors) and waits for sync_complete; it
// returns a failure reason, or "" once the session is live.
func (w *worker) open(c *client) string {
	w.mu.Lock()
	cursors := make([]*pb.Cursor, 0, len(c.conversations))
	for _, conv := range c.conversations {
		cid := w.conversationIDs[conv]
		if cid != "" {
			cursors = append(cursors, &pb.Cursor{ConversationId: cid, Seq: w.order.position(c.index, cid)})
		}
	}
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(w.authorized(context.Background(), c))
	stream, err := c.chat.Connect(ctx)
	if err != nil {
		cancel()
		return codeName(status.Code(err))
	}
	s := &session{stream: stream, cancel: cancel, syncResult: make(chan string, 1), done: make(chan struct{})}
	hello := &pb.ConnectRequest{Frame: &pb.ConnectRequest_Hello{Hello: &pb.Hello{
		DeviceId: "bench",
		Sync:     &pb.SyncFrame{Cursors: cursors},
	}}}
	if err := stream.Send(hello); err != nil {
		// The reason is in the status the stream ended with.
		_, err = stream.Recv()
		cancel()
		return endReason(err)
	}
	w.mu.Lock()
	c.session = s
	w.mu.Unlock()
	go w.read(c, s)
	timer := time.NewTimer(connectTimeout)
	defer timer.Stop()
	select {
	case reason := <-s.syncResult:
		return reason
	case <-timer.C:
		cancel()
		return "timeout"
	}
}

func (w *worker) read(c *client, s *session) {
	defer close(s.done)
	var reason string
	for {
		response, err := s.stream.Recv()
		if err != nil {
			reason = endReason(err)
			break
		}
		switch frame := response.GetFrame().(type) {
		case *pb.ConnectResponse_Message:
			w.onMessage(c, frame.Message)
		case *pb.ConnectResponse_SendAck:
			w.onAck(c, frame.SendAck)
		case *pb.ConnectResponse_SyncComplete:
			w.mu.Lock()
			if c.session == s && !s.synced {
				s.synced = true
				c.live = true
				s.syncResult <- ""
			}
			w.mu.Unlock()
		case *pb.ConnectResponse_Error:
			w.onError(frame.Error)
		}
	}
	s.cancel()
	w.mu.Lock()
	if c.session == s {
		c.live = false
	}
	if !s.synced {
		w.mu.Unlock()
		s.syncResult <- reason // the connect loop retries
		return
	}
	if w.closing.Load() {
		w.mu.Unlock()
		return
	}
	// A live stream ended under load: resume from the cursors, like a real client.
	w.streamResets++
	w.streamEndReasons[reason]++
	if w.step != nil {
		w.step.errors["stream_end:"+reason]++
	}
	w.mu.Unlock()
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		w.reconnect(c)
	}()
}

func (w *worker) reconnect(c *client) {
	for attempt := 1; attempt < 1000; attempt++ {
		time.Sleep(min(time.Duration(attempt)*reconnectBackoff, 5*time.Second))
		if w.closing.Load() {
			return
		}
		if w.open(c) == "" {
			return
		}
	}
}

// --- frames ---------------------------------------------------------------------------------

func (w *worker) onMessage(c *client, m *pb.Message) {
	now := monotonicNs()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.order.observe(c.index, m.GetConversationId(), m.GetSeq())
	step := w.step
	if step == nil {
		return
	}
	msgID, intendedNs, err := decodeBody(m.GetBody())
	if err != nil {
		step.stray++
		return
	}
	if step.ledger.delivered(msgID, c.index) == deliveryFirst {
		if step.inWindow(intendedNs) {
			step.delivery.recordNs(now - intendedNs)
			if attempt, ok := step.attemptNs[msgID]; ok { // the admitted attempt: no resend follows it
				step.admittedDelivery.recordNs(now - attempt)
			}
		}
		step.checkDrained()
	}
	if step.inWindow(now) {
		step.windowDeliveries++
	}
}

func (w *worker) onAck(c *client, ack *pb.SendAck) {
	now := monotonicNs()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !ack.GetDuplicate() {
		w.order.observe(c.index, ack.GetConversationId(), ack.GetSeq())
	}
	step := w.step
	if step == nil {
		return
	}
	msgID, err := strconv.ParseInt(ack.GetClientMessageId(), 10, 64)
	if err != nil {
		step.stray++
		return
	}
	intendedNs, known := step.ledger.intendedNs(msgID)
	if !known || !step.ledger.acked(msgID) {
		step.stray++
		return
	}
	if step.inWindow(intendedNs) {
		step.ack.recordNs(now - intendedNs)
		if attempt, ok := step.attemptNs[msgID]; ok {
			step.admittedAck.recordNs(now - attempt)
		}
	}
	w.settled(step, step.requests[msgID].client, msgID)
	delete(step.requests, msgID)
	if step.inWindow(now) {
		step.windowAcks++
	}
	step.checkDrained()
}

func (w *worker) onError(e *pb.Error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	step := w.step
	if step == nil {
		return
	}
	name := "UNKNOWN"
	if e.GetCode() != 0 {
		name = e.GetCode().String()
	}
	step.errors[name]++
	msgID, err := strconv.ParseInt(e.GetRequestId(), 10, 64)
	if err != nil || msgID <= 0 {
		return
	}
	if w.cfg.RetryShed && resentCodes[e.GetCode()] {
		if _, pending := step.requests[msgID]; pending {
			step.retries++
			// As the SDK does: the server's hint at least, backing off exponentially per message
			// with jitter, so shed clients do not return together and refusals stay cheap.
			step.attempts[msgID]++
			hint := 0.1
			if e.GetRetryAfter() != nil {
				hint = durationSeconds(e.GetRetryAfter())
			}
			ceiling := min(5.0, 0.1*float64(uint64(1)<<min(step.attempts[msgID], 16)))
			delay := max(hint, ceiling*(0.5+0.5*w.rng.Float64()))
			w.hold(step, step.requests[msgID].client, msgID, delay)
			return
		}
	}
	if pending, ok := step.requests[msgID]; ok {
		w.settled(step, pending.client, msgID)
	}
	step.ledger.failed(msgID)
	step.checkDrained()
}

// hold (under w.mu) parks msgID with the client's held sends and holds them all for delay
// seconds (at least: an earlier, longer hold stands).
func (w *worker) hold(step *stepState, c *client, msgID int64, delay float64) {
	c.held = append(c.held, msgID)
	if c.probe == msgID {
		c.probe = 0
	}
	until := monotonicNs() + int64(delay*1e9)
	if until <= c.heldUntilNs {
		return // the running hold releases it
	}
	c.heldUntilNs = until
	c.holdGen++
	gen := c.holdGen
	time.AfterFunc(time.Duration(delay*1e9), func() { w.release(step, c, gen) })
}

// release ends a client's hold: its oldest held send goes out as the probe.
func (w *worker) release(step *stepState, c *client, gen int64) {
	w.mu.Lock()
	if c.holdGen != gen || len(c.held) == 0 {
		w.mu.Unlock()
		return // extended (a later timer releases) or a new step
	}
	slices.Sort(c.held)
	probe := c.held[0]
	c.probe = probe
	c.held = c.held[1:]
	c.heldUntilNs = 0
	w.mu.Unlock()
	w.resend(step, probe)
}

// settled (under w.mu): msgID was acked or failed for good; if it was the client's probe,
// the sends held behind it go out, oldest first.
func (w *worker) settled(step *stepState, c *client, msgID int64) {
	if c == nil || c.probe != msgID || msgID == 0 {
		return
	}
	c.probe = 0
	if len(c.held) == 0 || c.heldUntilNs != 0 {
		return
	}
	// The next oldest goes as the next probe: the backlog drains one send at a time, each
	// written once the previous was answered, never as a burst the gateway must queue.
	slices.Sort(c.held)
	next := c.held[0]
	c.probe = next
	c.held = c.held[1:]
	go w.resend(step, next)
}

func (w *worker) resend(step *stepState, msgID int64) {
	w.mu.Lock()
	pending, ok := step.requests[msgID]
	if !ok || w.step != step {
		w.mu.Unlock()
		return
	}
	c := pending.client
	if !c.live || c.session == nil {
		w.mu.Unlock()
		// Its stream broke: the same send goes out again once it is back.
		time.AfterFunc(200*time.Millisecond, func() { w.resend(step, msgID) })
		return
	}
	step.attemptNs[msgID] = monotonicNs()
	s := c.session
	w.mu.Unlock()
	s.send(pending.request)
}

// --- sending --------------------------------------------------------------------------------

// send writes a frame on the stream, from the goroutine that decided it: no hand-off to another
// goroutine, which would cost a wake-up per message. Callers do not hold worker.mu: a Send waits
// when the stream's flow-control window is full, and the readers must go on meanwhile.
func (s *session) send(request *pb.ConnectRequest) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if !s.halfClosed {
		// An error means the stream ended: its reader sees why and reconnects.
		_ = s.stream.Send(request)
	}
}

// send registers the message due at intendedNs (under w.mu) and appends its frame to out.
func (w *worker) send(step *stepState, intendedNs int64, out []outgoing) []outgoing {
	var sender *client
	for range 4 {
		candidate := w.clients[w.rng.IntN(len(w.clients))]
		if candidate.live && candidate.session != nil {
			sender = candidate
			break
		}
	}
	if sender == nil {
		step.skipped++
		return out
	}
	conv := w.plan.pickConversation(int(sender.index), w.cfg.DirectShare, w.rng)
	cid := w.conversationIDs[conv]
	if cid == "" {
		step.skipped++
		return out
	}
	msgID := w.nextMsgID
	w.nextMsgID++
	members := w.plan.conversations[conv].members
	recipients := make([]int32, 0, len(members))
	for _, m := range members {
		if m != sender.index && w.clients[m].live {
			recipients = append(recipients, m)
		}
	}
	if err := step.ledger.sent(msgID, intendedNs, recipients); err != nil {
		panic(err) // ids come from one counter
	}
	textID := strconv.FormatInt(msgID, 10)
	request := &pb.ConnectRequest{
		RequestId: textID,
		Frame: &pb.ConnectRequest_Send{Send: &pb.SendFrame{
			ConversationId:  cid,
			ClientMessageId: textID,
			Body:            encodeBody(msgID, intendedNs, w.cfg.BodyBytes),
		}},
	}
	if w.cfg.RetryShed {
		step.requests[msgID] = pendingSend{sender, request}
		step.attemptNs[msgID] = monotonicNs()
		if sender.heldUntilNs > step.attemptNs[msgID] || sender.probe != 0 {
			step.sent++
			sender.held = append(sender.held, msgID) // goes out when the hold ends
			return out
		}
	}
	step.sent++
	return append(out, outgoing{sender.session, request})
}

type stepCommand struct {
	Rate        float64 `json:"rate"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"`
	DrainS      float64 `json:"drain_s"`
	AbortAfterS float64 `json:"abort_after_s"`
	// Sending starts this long after the command, so every generator process starts together.
	LeadS float64 `json:"lead_s"`
}

func (w *worker) runStep(cmd stepCommand) (map[string]any, error) {
	startNs := monotonicNs() + int64(cmd.LeadS*1e9)
	windowStart := startNs + int64(cmd.WarmupS*1e9)
	windowEnd := windowStart + int64(cmd.DurationS*1e9)
	schedule, err := newOpenLoopSchedule(cmd.Rate, startNs, cmd.WarmupS+cmd.DurationS)
	if err != nil {
		return nil, err
	}
	step := newStepState(windowStart, windowEnd)
	w.mu.Lock()
	resetsBefore := w.streamResets
	gapsBefore, repeatsBefore := w.order.gaps, w.order.repeats
	w.step = step
	for _, c := range w.clients { // a step starts with no client held by the last one's refusals
		c.held, c.heldUntilNs, c.probe = nil, 0, 0
		c.holdGen++
	}
	w.mu.Unlock()
	aborted := ""
	var nextCheck int64
	due := make([]int64, 0, 1024)
	frames := make([]outgoing, 0, 1024)
	for !schedule.finished() {
		now := monotonicNs()
		due = schedule.due(now, due[:0])
		frames = frames[:0]
		w.mu.Lock()
		for _, intended := range due {
			if step.inWindow(intended) {
				step.offered++
				step.lag.recordNs(now - intended)
			}
			frames = w.send(step, intended, frames)
		}
		if now >= nextCheck {
			nextCheck = now + abortCheckNs
			if oldest, ok := step.ledger.oldestOutstandingNs(); ok && float64(now-oldest) > cmd.AbortAfterS*1e9 {
				aborted = fmt.Sprintf("a message was still unanswered after %s s", formatG(cmd.AbortAfterS))
				// Rates are per measured second: nothing after the abort counts.
				step.windowEndNs = min(step.windowEndNs, now)
				w.mu.Unlock()
				break
			}
		}
		w.mu.Unlock()
		for _, f := range frames {
			f.session.send(f.request)
		}
		if upcoming, ok := schedule.nextDueNs(); ok {
			// Ticks of 1-5 ms: what fell due meanwhile goes out together, stamped with its
			// intended time (the measured schedule lag shows the tick).
			wait := min(max(upcoming-monotonicNs(), tickNs), maxTickNs)
			time.Sleep(time.Duration(wait))
		}
	}
	sendEnd := monotonicNs()
	w.mu.Lock()
	step.sendingDone = true
	step.checkDrained()
	w.mu.Unlock()
	stillArriving := w.drain(step, cmd.DrainS)
	drained := float64(monotonicNs()-sendEnd) / 1e9

	w.mu.Lock()
	defer w.mu.Unlock()
	w.step = nil
	measuredNs := min(step.windowEndNs, sendEnd) - windowStart
	live := 0
	for _, c := range w.clients {
		if c.live {
			live++
		}
	}
	return map[string]any{
		"event":   "step_done",
		"worker":  w.cfg.Worker,
		"rate":    cmd.Rate,
		"aborted": aborted,
		// The window ends early after an abort (step.windowEndNs).
		"measured_s": max(0.0, float64(measuredNs)/1e9),
		"drain_s":    roundTo(drained, 3),
		// Deliveries were still coming when the drain gave up: "lost" may be only late.
		"still_arriving":    stillArriving,
		"offered":           step.offered,
		"sent":              step.sent,
		"skipped":           step.skipped,
		"window_acks":       step.windowAcks,
		"window_deliveries": step.windowDeliveries,
		"loss":              step.ledger.report(),
		"errors":            step.errors,
		"retries":           step.retries,
		"stray":             step.stray,
		"order_gaps":        w.order.gaps - gapsBefore,
		"order_repeats":     w.order.repeats - repeatsBefore,
		"stream_resets":     w.streamResets - resetsBefore,
		"live":              live,
		"hist": map[string]string{
			"ack":               step.ack.encode(),
			"delivery":          step.delivery.encode(),
			"lag":               step.lag.encode(),
			"admitted_ack":      step.admittedAck.encode(),
			"admitted_delivery": step.admittedDelivery.encode(),
		},
	}, nil
}

// drain waits for what is still owed: up to drainS, and up to 3x as long while it keeps
// arriving. It returns true if acks or deliveries were still arriving when it gave up.
func (w *worker) drain(step *stepState, drainS float64) bool {
	start := time.Now()
	deadline := start.Add(time.Duration(drainS * 1e9))
	hardDeadline := start.Add(time.Duration(3 * drainS * 1e9))
	w.mu.Lock()
	last := step.ledger.outstanding()
	w.mu.Unlock()
	for {
		select {
		case <-step.drained:
			return false
		case <-time.After(time.Second):
		}
		now := time.Now()
		w.mu.Lock()
		outstanding := step.ledger.outstanding()
		w.mu.Unlock()
		progressed := outstanding < last
		last = outstanding
		if !now.Before(hardDeadline) || (!now.Before(deadline) && !progressed) {
			select {
			case <-step.drained:
				return false
			default:
				return progressed
			}
		}
	}
}

// --- shutdown -------------------------------------------------------------------------------

func (w *worker) close() {
	w.closing.Store(true)
	w.mu.Lock()
	var sessions []*session
	for _, c := range w.clients {
		if c.session != nil {
			sessions = append(sessions, c.session)
		}
	}
	w.mu.Unlock()
	for _, s := range sessions {
		s.sendMu.Lock()
		if !s.halfClosed {
			s.halfClosed = true
			_ = s.stream.CloseSend() // half-close: the gateway ends the session cleanly
		}
		s.sendMu.Unlock()
	}
	deadline := time.After(10 * time.Second)
wait:
	for _, s := range sessions {
		select {
		case <-s.done:
		case <-deadline:
			break wait
		}
	}
	for _, s := range sessions {
		s.cancel()
	}
	for _, conn := range w.conns {
		_ = conn.Close()
	}
}

// --- helpers --------------------------------------------------------------------------------

// codeName: the status code as grpc.StatusCode names it in Python ("UNAVAILABLE"), so reasons
// read the same in every report.
func codeName(code codes.Code) string {
	name := code.String()
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	out := strings.ToUpper(b.String())
	if out == "CANCELED" {
		return "CANCELLED"
	}
	return out
}

func endReason(err error) string {
	if errors.Is(err, io.EOF) {
		return "closed"
	}
	return codeName(status.Code(err))
}

func durationSeconds(d *durationpb.Duration) float64 { return d.AsDuration().Seconds() }

type counter struct {
	mu sync.Mutex
	m  map[string]int64
}

func newCounter() *counter { return &counter{m: make(map[string]int64)} }

func (c *counter) add(key string, n int64) {
	c.mu.Lock()
	c.m[key] += n
	c.mu.Unlock()
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
