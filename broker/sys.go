package broker

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"time"
)

// sysLoop publishes the broker's figures under $SYS every SysInterval as
// retained QoS 0 messages, with the topic names mosquitto uses for the same
// figures so existing dashboards work.
func (s *Server) sysLoop() {
	defer s.bgWG.Done()
	t := time.NewTicker(s.opts.SysInterval)
	defer t.Stop()
	s.publishSys()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.publishSys()
		}
	}
}

func (s *Server) publishSys() {
	// $SYS messages pass the Authorizer, embedder code that may panic; a
	// background loop has no connection to close, so log and go on.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic while publishing $SYS figures", "panic", r, "stack", string(debug.Stack()))
			if h := s.onPanic; h != nil {
				h(r)
			}
		}
	}()
	st := &s.stats
	s.mu.Lock()
	total := len(s.sessions)
	s.mu.Unlock()
	connected := st.connected.Load()
	u := strconv.FormatUint
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	figures := [...]struct{ topic, value string }{
		{"$SYS/broker/version", "roost " + Version},
		{"$SYS/broker/uptime", i(int64(time.Since(s.start)/time.Second)) + " seconds"},
		{"$SYS/broker/clients/connected", i(connected)},
		{"$SYS/broker/clients/active", i(connected)},
		{"$SYS/broker/clients/disconnected", i(int64(total) - connected)},
		{"$SYS/broker/clients/inactive", i(int64(total) - connected)},
		{"$SYS/broker/clients/total", i(int64(total))},
		{"$SYS/broker/clients/maximum", i(st.maxConnected.Load())},
		{"$SYS/broker/clients/expired", u(st.expiredSessions.Load(), 10)},
		{"$SYS/broker/messages/received", u(st.sumReceived(), 10)},
		{"$SYS/broker/messages/sent", u(st.sumSent(), 10)},
		{"$SYS/broker/publish/messages/received", u(st.sumReceived(), 10)},
		{"$SYS/broker/publish/messages/sent", u(st.sumSent(), 10)},
		{"$SYS/broker/publish/messages/dropped", u(st.sumDropped(), 10)},
		{"$SYS/broker/bytes/received", u(st.bytesReceived.Load(), 10)},
		{"$SYS/broker/bytes/sent", u(st.bytesSent.Load(), 10)},
		{"$SYS/broker/subscriptions/count", i(int64(s.router.tree.Len()))},
		{"$SYS/broker/retained messages/count", i(int64(s.ret.count()))},
		// Not in mosquitto, which has no retained limits.
		{"$SYS/broker/retained messages/refused", u(st.retainedRefused.Load(), 10)},
		{"$SYS/broker/heap/current", u(heapInUse(), 10)},
	}
	now := time.Now().UnixNano()
	for _, f := range figures {
		s.publish(&Message{ID: s.msgID.Add(1), Topic: f.topic, Payload: []byte(f.value), QoS: 0, Retain: true, created: now})
	}
	if cf, ok := s.opts.Cluster.(ClusterFigures); ok {
		for _, f := range cf.SysFigures() {
			s.publish(&Message{ID: s.msgID.Add(1), Topic: "$SYS/broker/cluster/" + f[0], Payload: []byte(f[1]), QoS: 0, Retain: true, created: now})
		}
	}
	// The drops by reason, which mosquitto does not have: which bound a
	// client hit is what an operator needs to know.
	for r := range numDropReasons {
		s.publish(&Message{ID: s.msgID.Add(1), Topic: "$SYS/broker/publish/messages/dropped/" + r.String(),
			Payload: []byte(u(st.dropped[r].Load(), 10)), QoS: 0, Retain: true, created: now})
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
