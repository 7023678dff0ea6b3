package rccar

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

func TestCarAndController(t *testing.T) {
	srv, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	url := "mqtt://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	car, err := NewCar(ctx, url, "car1", log)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := NewController(ctx, url, log)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close(ctx)
	if err := ctl.Wait(ctx, func(s map[string]State, on map[string]bool) bool { return on["car1"] }); err != nil {
		t.Fatal("car never came online:", err)
	}
	if err := ctl.Send(ctx, "car1", Command{Op: "drive", Speed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Wait(ctx, func(s map[string]State, _ map[string]bool) bool { return s["car1"].Speed == 3 }); err != nil {
		t.Fatal("state never showed speed 3:", err)
	}
	st, err := ctl.Ask(ctx, "car1", Command{Op: "turn", Heading: 90})
	if err != nil || st.Heading != 90 || st.Speed != 3 {
		t.Fatalf("Ask turn = %+v, %v", st, err)
	}
	car.Close(ctx)
	if err := ctl.Wait(ctx, func(_ map[string]State, on map[string]bool) bool { return !on["car1"] }); err != nil {
		t.Fatal("car never went offline:", err)
	}
}
