// Command controller commands a remote-control car and prints its state.
// See package rccar.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/roost-mqtt/roost/examples/rccar"
)

func main() {
	server := flag.String("server", "mqtt://localhost:1883", "broker `URL`")
	id := flag.String("car", "car1", "car `id`")
	drive := flag.Float64("drive", 0, "drive at `speed`")
	turn := flag.Float64("turn", -1, "turn to `heading` (degrees)")
	stop := flag.Bool("stop", false, "stop the car")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctl, err := rccar.NewController(ctx, *server, log)
	if err != nil {
		log.Error("connect", "err", err)
		os.Exit(1)
	}
	defer ctl.Close(context.Background())
	var cmds []rccar.Command
	if *drive != 0 {
		cmds = append(cmds, rccar.Command{Op: "drive", Speed: *drive})
	}
	if *turn >= 0 {
		cmds = append(cmds, rccar.Command{Op: "turn", Heading: *turn})
	}
	if *stop {
		cmds = append(cmds, rccar.Command{Op: "stop"})
	}
	for _, cmd := range cmds {
		st, err := ctl.Ask(ctx, *id, cmd) // MQTT 5 request/response
		if err != nil {
			log.Error("command", "op", cmd.Op, "err", err)
			os.Exit(1)
		}
		log.Info("car answered", "op", cmd.Op, "speed", st.Speed, "heading", st.Heading, "battery", st.Battery)
	}
	time.Sleep(200 * time.Millisecond) // let the last state updates print
}
