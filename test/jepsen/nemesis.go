package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// nemesis causes one fault at a time, chosen by its seeded stream: a
// quiet time, a fault on a node of cfg.FaultNodes, its duration, the undo.
type nemesis struct {
	r        *run
	nodes    Nodes
	rng      *rand.Rand
	down     map[int]bool
	paused   map[int]bool
	isolated bool
}

// loop runs faults until work ends; an error means a node could not be
// brought back, which ends the run. Undoing a fault is bounded by ctx,
// not work: a restart that the end of the workload interrupts would
// leave the node half started.
func (n *nemesis) loop(ctx, work context.Context) error {
	cfg := n.r.cfg
	if len(cfg.Faults) == 0 {
		<-work.Done()
		return nil
	}
	for {
		select {
		case <-work.Done():
			return nil
		case <-time.After(cfg.FaultEvery.pick(n.rng)):
		}
		f := cfg.Faults[n.rng.IntN(len(cfg.Faults))]
		node := cfg.FaultNodes[n.rng.IntN(len(cfg.FaultNodes))]
		last := cfg.FaultFor.pick(n.rng)
		if cfg.LongFaults > 0 && n.rng.Float64() < cfg.LongFaults {
			last = cfg.LongFaultFor.pick(n.rng)
		}
		if err := n.cause(f, node); err != nil {
			return err
		}
		select {
		case <-work.Done(): // heal undoes it
			return nil
		case <-time.After(last):
		}
		if err := n.undo(ctx, f, node); err != nil {
			return err
		}
	}
}

func (n *nemesis) cause(f Fault, node int) error {
	n.r.h.event("nemesis", "%s node %d", f, node)
	n.r.cfg.Logger.Debug("nemesis", "fault", f, "node", node)
	switch f {
	case Kill:
		n.down[node] = true
		return n.nodes.Kill(node)
	case Pause:
		n.paused[node] = true
		return n.nodes.Pause(node)
	case Isolate:
		p, ok := n.nodes.(Partitioner)
		if !ok {
			return fmt.Errorf("jepsen: these nodes cannot be partitioned")
		}
		n.isolated = true
		return p.Isolate(node)
	}
	return fmt.Errorf("jepsen: unknown fault %q", f)
}

func (n *nemesis) undo(ctx context.Context, f Fault, node int) error {
	n.r.h.event("nemesis", "undo %s node %d", f, node)
	switch f {
	case Kill:
		delete(n.down, node)
		return n.nodes.Start(ctx, node)
	case Pause:
		delete(n.paused, node)
		return n.nodes.Resume(node)
	case Isolate:
		n.isolated = false
		return n.nodes.(Partitioner).Heal()
	}
	return nil
}

// heal undoes whatever fault is still in place.
func (n *nemesis) heal(ctx context.Context) error {
	var errs []error
	for node := range n.paused {
		errs = append(errs, n.undo(ctx, Pause, node))
	}
	for node := range n.down {
		errs = append(errs, n.undo(ctx, Kill, node))
	}
	if n.isolated {
		errs = append(errs, n.undo(ctx, Isolate, 0))
	}
	return errors.Join(errs...)
}
