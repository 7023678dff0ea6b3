// Command car is a remote-control car: it publishes its state and obeys
// commands until interrupted. See package rccar.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/roost-mqtt/roost/examples/rccar"
)

func main() {
	server := flag.String("server", "mqtt://localhost:1883", "broker `URL`")
	id := flag.String("id", "car1", "car `id`")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	car, err := rccar.NewCar(ctx, *server, *id, log)
	if err != nil {
		log.Error("connect", "err", err)
		os.Exit(1)
	}
	<-ctx.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	car.Close(ctx)
}
