// Package rccar is the seed's remote-control car scenario in Go, built the
// way an app uses an MqttHelper: a Car publishes its state and obeys
// commands; a Controller watches every car and sends commands. Run it
// against a broker:
//
//	roost serve &
//	go run ./examples/rccar/car -id car1 &
//	go run ./examples/rccar/controller -car car1 -drive 3 -turn 90 -stop
//
// Topics (one tree per car):
//
//	rccar/<id>/online   "online" / "offline" (retained; "offline" is the will)
//	rccar/<id>/state    JSON State (retained, QoS 1)
//	rccar/<id>/cmd      JSON Command (QoS 1); MQTT 5 requests get the new
//	                    state as the response
package rccar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// State is what a car reports.
type State struct {
	Speed   float64 `json:"speed"`
	Heading float64 `json:"heading"`
	Battery int     `json:"battery"`
}

// Command is what a controller asks: "drive" (Speed), "turn" (Heading),
// "stop".
type Command struct {
	Op      string  `json:"op"`
	Speed   float64 `json:"speed,omitempty"`
	Heading float64 `json:"heading,omitempty"`
}

func topic(id, leaf string) string { return "rccar/" + id + "/" + leaf }

// Car is one remote-control car.
type Car struct {
	ID  string
	c   *client.Client
	log *slog.Logger

	mu    sync.Mutex
	state State
}

// NewCar connects a car to server. Its will marks it offline if the
// connection is lost without a goodbye.
func NewCar(ctx context.Context, server, id string, log *slog.Logger) (*Car, error) {
	car := &Car{ID: id, log: log, state: State{Battery: 100}}
	c, err := client.New(client.Options{
		Servers:     []string{server},
		ClientID:    "rccar-" + id,
		KeepAlive:   10 * time.Second,
		KeepSession: true, // commands sent while we are offline wait for us
		Will:        &client.Message{Topic: topic(id, "online"), Payload: []byte("offline"), QoS: 1, Retain: true},
		OnStatus:    func(s client.Status) { log.Info("car status", "car", id, "status", s.String()) },
		OnConnectionUp: func(c *client.Client, _ *packet.Connack) {
			// Runs on every (re)connection, on the dispatcher: publish
			// asynchronously so that a handler never waits for the network.
			go car.announce(context.Background())
		},
	})
	if err != nil {
		return nil, err
	}
	car.c = c
	// Subscribed before connecting: the SUBSCRIBE waits for the connection.
	go func() {
		_, err := c.Subscribe(ctx, client.Subscription{Filter: topic(id, "cmd"), QoS: 1, Handler: car.onCommand})
		if err != nil {
			log.Error("subscribe", "err", err)
		}
	}()
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	return car, nil
}

func (car *Car) announce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	car.c.Publish(ctx, client.Message{Topic: topic(car.ID, "online"), Payload: []byte("online"), QoS: 1, Retain: true})
	car.publishState(ctx)
}

// onCommand handles one command and publishes the new state; an MQTT 5
// request also gets the state as its response.
func (car *Car) onCommand(m *client.Message) {
	var cmd Command
	if err := json.Unmarshal(m.Payload, &cmd); err != nil {
		car.log.Warn("bad command", "payload", string(m.Payload), "err", err)
		return
	}
	car.mu.Lock()
	switch cmd.Op {
	case "drive":
		car.state.Speed = cmd.Speed
	case "turn":
		car.state.Heading = cmd.Heading
	case "stop":
		car.state.Speed = 0
	}
	car.state.Battery = max(car.state.Battery-1, 0)
	st := car.state
	car.mu.Unlock()
	car.log.Info("command", "car", car.ID, "op", cmd.Op, "state", st)
	// Publishing from a handler is fine: it does not need the dispatcher.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	car.publishState(ctx)
	if m.Properties.ResponseTopic != "" {
		b, _ := json.Marshal(st)
		car.c.Respond(ctx, m, client.Message{QoS: 1, Payload: b})
	}
}

func (car *Car) publishState(ctx context.Context) {
	car.mu.Lock()
	b, _ := json.Marshal(car.state)
	car.mu.Unlock()
	m := client.Message{Topic: topic(car.ID, "state"), Payload: b, QoS: 1, Retain: true}
	m.Properties.Set(packet.PropContentType)
	m.Properties.ContentType = "application/json"
	if _, err := car.c.Publish(ctx, m); err != nil {
		car.log.Warn("publish state", "err", err)
	}
}

// Close says goodbye: marks the car offline and disconnects.
func (car *Car) Close(ctx context.Context) error {
	car.c.Publish(ctx, client.Message{Topic: topic(car.ID, "online"), Payload: []byte("offline"), QoS: 1, Retain: true})
	return car.c.Disconnect(ctx)
}

// Controller watches cars and commands them.
type Controller struct {
	c   *client.Client
	log *slog.Logger

	mu     sync.Mutex
	states map[string]State
	online map[string]bool
	change chan struct{}
}

// NewController connects a controller and subscribes to every car's
// state and presence.
func NewController(ctx context.Context, server string, log *slog.Logger) (*Controller, error) {
	ctl := &Controller{log: log, states: map[string]State{}, online: map[string]bool{}, change: make(chan struct{}, 1)}
	c, err := client.New(client.Options{
		Servers:  []string{server},
		OnStatus: func(s client.Status) { log.Info("controller status", "status", s.String()) },
	})
	if err != nil {
		return nil, err
	}
	ctl.c = c
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	_, err = c.Subscribe(ctx,
		client.Subscription{Filter: "rccar/+/state", QoS: 1, Handler: ctl.onState},
		client.Subscription{Filter: "rccar/+/online", QoS: 1, Handler: ctl.onOnline},
	)
	if err != nil {
		c.Disconnect(ctx)
		return nil, err
	}
	return ctl, nil
}

func carID(topic string) string { return strings.Split(topic, "/")[1] }

func (ctl *Controller) onState(m *client.Message) {
	var st State
	if json.Unmarshal(m.Payload, &st) != nil {
		return
	}
	ctl.mu.Lock()
	ctl.states[carID(m.Topic)] = st
	ctl.mu.Unlock()
	ctl.log.Info("state", "car", carID(m.Topic), "speed", st.Speed, "heading", st.Heading, "battery", st.Battery)
	ctl.notify()
}

func (ctl *Controller) onOnline(m *client.Message) {
	ctl.mu.Lock()
	ctl.online[carID(m.Topic)] = string(m.Payload) == "online"
	ctl.mu.Unlock()
	ctl.log.Info("presence", "car", carID(m.Topic), "status", string(m.Payload))
	ctl.notify()
}

func (ctl *Controller) notify() {
	select {
	case ctl.change <- struct{}{}:
	default:
	}
}

// Send publishes a command and returns once the broker has it (PUBACK).
func (ctl *Controller) Send(ctx context.Context, id string, cmd Command) error {
	b, _ := json.Marshal(cmd)
	_, err := ctl.c.Publish(ctx, client.Message{Topic: topic(id, "cmd"), Payload: b, QoS: 1})
	return err
}

// Ask sends a command as an MQTT 5 request and returns the car's state
// after it.
func (ctl *Controller) Ask(ctx context.Context, id string, cmd Command) (State, error) {
	b, _ := json.Marshal(cmd)
	resp, err := ctl.c.Request(ctx, client.Message{Topic: topic(id, "cmd"), Payload: b, QoS: 1})
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(resp.Payload, &st); err != nil {
		return State{}, fmt.Errorf("bad response %q: %w", resp.Payload, err)
	}
	return st, nil
}

// Wait waits until cond holds for the cars' known states and presence.
func (ctl *Controller) Wait(ctx context.Context, cond func(states map[string]State, online map[string]bool) bool) error {
	for {
		ctl.mu.Lock()
		ok := cond(ctl.states, ctl.online)
		ctl.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctl.change:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close disconnects.
func (ctl *Controller) Close(ctx context.Context) error { return ctl.c.Disconnect(ctx) }
