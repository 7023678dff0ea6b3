package wsconn

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// serve runs a WebSocket server that plays script against each client.
func serve(t *testing.T, script func(ws *websocket.Conn)) *Conn {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		script(ws)
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := New(ws)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// Bytes of consecutive binary messages read as one stream; writes are
// messages; a normal close reads as EOF.
func TestStream(t *testing.T) {
	c := serve(t, func(ws *websocket.Conn) {
		ws.WriteMessage(websocket.BinaryMessage, []byte("ab"))
		ws.WriteMessage(websocket.BinaryMessage, []byte("cde"))
		_, m, err := ws.ReadMessage()
		if err == nil {
			ws.WriteMessage(websocket.BinaryMessage, m)
		}
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	})
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "abcde" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := c.Write([]byte("echo")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "echo" {
		t.Fatalf("rest %q, %v; want echo then EOF", rest, err)
	}
}

// A text message ends the stream [MQTT-6.0.0-1].
func TestTextMessage(t *testing.T) {
	c := serve(t, func(ws *websocket.Conn) {
		ws.WriteMessage(websocket.TextMessage, []byte("hi"))
		ws.ReadMessage() // until the client goes
	})
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, ErrTextMessage) {
		t.Fatalf("err %v, want ErrTextMessage", err)
	}
}
