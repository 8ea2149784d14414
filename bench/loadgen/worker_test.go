package main

// The worker end to end against an in-process fake of the public API (setup, connect, step,
// close), so `go test` covers the protocol handling and the resend of shed sends; the real
// servers are covered by tests/integration/bench/test_loadgen.py.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "parley/bench/loadgen/pb/parley/v1"
)

// fakeParley: conversations in memory; a send is acked with the next seq and delivered to the
// other members' sessions; with shedFirst, the first attempt of every client_message_id is
// refused with OVERLOADED (as an overloaded gateway does) and only the resend is stored.
type fakeParley struct {
	pb.UnimplementedChatServiceServer
	pb.UnimplementedConversationServiceServer
	shedFirst bool
	// Sheds each user's first send only, with a long retry-after, and records the order in
	// which each user's sends were stored.
	shedOncePerUser bool

	mu       sync.Mutex
	shedUser map[string]bool
	stored   map[string][]int64
	members  map[string][]string
	seq      map[string]uint64
	sessions map[string][]*fakeSession
	attempts map[string]int
	groups   int
}

type fakeSession struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]
}

func (s *fakeSession) send(r *pb.ConnectResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.stream.Send(r)
}

func userOf(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return "", status.Error(codes.Unauthenticated, "no token")
	}
	token, err := jwt.Parse(strings.TrimPrefix(auth[0], "Bearer "), func(*jwt.Token) (any, error) {
		return []byte(devSecret), nil
	}, jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	return token.Claims.GetSubject()
}

func (f *fakeParley) CreateDirect(ctx context.Context, r *pb.CreateDirectRequest) (*pb.CreateDirectResponse, error) {
	user, err := userOf(ctx)
	if err != nil {
		return nil, err
	}
	pair := []string{user, r.GetPeerUserId()}
	sort.Strings(pair)
	id := "d:" + strings.Join(pair, ":")
	f.mu.Lock()
	f.members[id] = pair
	f.mu.Unlock()
	return &pb.CreateDirectResponse{Conversation: &pb.Conversation{Id: id}, Created: true}, nil
}

func (f *fakeParley) CreateGroup(ctx context.Context, r *pb.CreateGroupRequest) (*pb.CreateGroupResponse, error) {
	user, err := userOf(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.groups++
	id := fmt.Sprintf("g:%d", f.groups)
	f.members[id] = append([]string{user}, r.GetMemberIds()...)
	f.mu.Unlock()
	return &pb.CreateGroupResponse{Conversation: &pb.Conversation{Id: id}}, nil
}

func (f *fakeParley) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	user, err := userOf(stream.Context())
	if err != nil {
		return err
	}
	hello, err := stream.Recv()
	if err != nil || hello.GetHello() == nil {
		return status.Error(codes.FailedPrecondition, "the first frame must be hello")
	}
	session := &fakeSession{stream: stream}
	f.mu.Lock()
	f.sessions[user] = append(f.sessions[user], session)
	f.mu.Unlock()
	session.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_Welcome{Welcome: &pb.Welcome{UserId: user}}})
	session.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_SyncComplete{SyncComplete: &pb.SyncComplete{}}})
	for {
		request, err := stream.Recv()
		if err != nil {
			return nil // half-close or cancel: the session ends
		}
		send := request.GetSend()
		if send == nil {
			continue
		}
		f.mu.Lock()
		key := user + "/" + send.GetClientMessageId()
		f.attempts[key]++
		if f.shedFirst && f.attempts[key] == 1 {
			f.mu.Unlock()
			session.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_Error{Error: &pb.Error{
				RequestId:  request.GetRequestId(),
				Code:       pb.ErrorCode_ERROR_CODE_OVERLOADED,
				RetryAfter: durationpb.New(10 * time.Millisecond),
			}}})
			continue
		}
		if f.shedOncePerUser && !f.shedUser[user] {
			f.shedUser[user] = true
			f.mu.Unlock()
			session.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_Error{Error: &pb.Error{
				RequestId:  request.GetRequestId(),
				Code:       pb.ErrorCode_ERROR_CODE_OVERLOADED,
				RetryAfter: durationpb.New(150 * time.Millisecond),
			}}})
			continue
		}
		if id, err := strconv.ParseInt(send.GetClientMessageId(), 10, 64); err == nil {
			f.stored[user] = append(f.stored[user], id)
		}
		cid := send.GetConversationId()
		f.seq[cid]++
		seq := f.seq[cid]
		var targets []*fakeSession
		for _, member := range f.members[cid] {
			if member != user {
				targets = append(targets, f.sessions[member]...)
			}
		}
		f.mu.Unlock()
		message := &pb.Message{ConversationId: cid, Seq: seq, SenderId: user, ClientMessageId: send.GetClientMessageId(), Body: send.GetBody()}
		for _, target := range targets {
			target.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_Message{Message: message}})
		}
		session.send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_SendAck{SendAck: &pb.SendAck{
			ClientMessageId: send.GetClientMessageId(), ConversationId: cid, Seq: seq,
		}}})
	}
}

func startFake(t *testing.T, shedFirst bool) string {
	t.Helper()
	return serveFake(t, &fakeParley{shedFirst: shedFirst})
}

func serveFake(t *testing.T, fake *fakeParley) string {
	t.Helper()
	fake.members = map[string][]string{}
	fake.seq = map[string]uint64{}
	fake.sessions = map[string][]*fakeSession{}
	fake.attempts = map[string]int{}
	fake.shedUser = map[string]bool{}
	fake.stored = map[string][]int64{}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	pb.RegisterChatServiceServer(server, fake)
	pb.RegisterConversationServiceServer(server, fake)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

func runWorker(t *testing.T, address string, retryShed bool) map[string]any {
	t.Helper()
	w, err := newWorker(workerConfig{
		Target: address, RunID: "t", Users: 30, Connections: 2, GroupSize: 5,
		DirectShare: 0.5, BodyBytes: 64, Seed: 1, RetryShed: retryShed,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	setup, err := w.setup()
	if err != nil || setup["missing_conversations"] != 0 {
		t.Fatalf("setup %v %v", setup, err)
	}
	if connected := w.connect(1000, 10, func(map[string]any) {}); connected["connected"] != 30 {
		t.Fatalf("connect %v", connected)
	}
	report, err := w.runStep(stepCommand{Rate: 200, WarmupS: 0.2, DurationS: 0.5, DrainS: 5, AbortAfterS: 5, LeadS: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	return report
}

func TestEverySendIsAckedAndDeliveredToEveryMember(t *testing.T) {
	report := runWorker(t, startFake(t, false), false)
	loss := report["loss"].(lossReport)
	if loss.Sent != 140 || loss.Acked != loss.Sent || loss.Lost != 0 || loss.Delivered != loss.ExpectedDeliveries {
		t.Fatalf("loss %+v", loss)
	}
	if loss.ExpectedDeliveries <= loss.Sent || loss.Duplicates != 0 || loss.Unexpected != 0 {
		t.Fatalf("loss %+v", loss)
	}
	if report["order_gaps"] != int64(0) || report["stray"] != int64(0) || report["offered"] != int64(100) {
		t.Fatalf("report %v", report)
	}
}

func TestShedSendsAreResentWithTheSameClientMessageID(t *testing.T) {
	// Without resends every send is refused: owed to nobody, counted failed.
	refused := runWorker(t, startFake(t, true), false)["loss"].(lossReport)
	if refused.Failed != refused.Sent || refused.Acked != 0 || refused.Lost != 0 {
		t.Fatalf("without resends: %+v", refused)
	}
	// With resends (the overload scenario) every send is stored once, on its second attempt.
	report := runWorker(t, startFake(t, true), true)
	loss := report["loss"].(lossReport)
	if loss.Acked != loss.Sent || loss.Failed != 0 || loss.Lost != 0 || loss.Duplicates != 0 {
		t.Fatalf("with resends: %+v", loss)
	}
	if report["retries"] != loss.Sent || report["errors"].(map[string]int64)["ERROR_CODE_OVERLOADED"] != loss.Sent {
		t.Fatalf("retries %v errors %v, sent %d", report["retries"], report["errors"], loss.Sent)
	}
}

func TestAShedClientHoldsItsLaterSendsAndKeepsTheirOrder(t *testing.T) {
	// Each user's first send is shed for 150 ms. Its later sends of those 150 ms wait with it
	// (as the SDKs' outboxes do) and go out after it: stored in the order they were sent, and
	// not refused in turn.
	fake := &fakeParley{shedOncePerUser: true}
	report := runWorker(t, serveFake(t, fake), true)
	loss := report["loss"].(lossReport)
	if loss.Acked != loss.Sent || loss.Failed != 0 || loss.Lost != 0 {
		t.Fatalf("loss %+v", loss)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	shed, behind := 0, 0
	for user, ids := range fake.stored {
		if !slices.IsSorted(ids) {
			t.Fatalf("%s's sends stored out of order: %v", user, ids)
		}
		shed++
		behind += len(ids) - 1
	}
	if report["retries"] != int64(shed) || behind == 0 {
		t.Fatalf("retries %v for %d shed users, %d sends behind them", report["retries"], shed, behind)
	}
}
