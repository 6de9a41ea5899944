// A natsflow worker in Go: serves the custom action `billing.charge`.
//
// It binds to the action's durable consumer (made by `natsflow deploy`), takes
// each task, reports progress, publishes the result to the task's `reply_to`
// with a JetStream publish (header Nats-Msg-Id: result:<idempotency_key>), and
// acks the task only after the result's PubAck. Messages: README, "Subjects and
// messages: workers in any language"; schemas: `natsflow schema task|result|progress`.
//
//	NATS_URL=nats://127.0.0.1:4222 go run worker.go
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

const (
	action = "billing.charge"
	stream = "NATSFLOW_TASKS"
)

// Task is the part of natsflow's task message this worker reads (`natsflow schema task`).
type Task struct {
	Step           string         `json:"step"`
	Attempt        int            `json:"attempt"`
	Iteration      int            `json:"iteration"`
	Input          map[string]any `json:"input"`
	IdempotencyKey string         `json:"idempotency_key"`
	ReplyTo        string         `json:"reply_to"`
}

// ChargeError is a failure the workflow should know about: Retryable false ends the
// step at once, true lets natsflow retry it as the step's `retry` policy says.
type ChargeError struct {
	Message   string `json:"message"`
	Kind      string `json:"kind"`
	Retryable bool   `json:"retryable"`
}

func (e *ChargeError) Error() string { return e.Message }

// charge is the business logic (a stand-in): card "declined" is refused for good;
// card "flaky" fails its first attempt with a retryable error, as a gateway might.
func charge(t Task) (map[string]any, error) {
	switch {
	case t.Input["card"] == "declined":
		return nil, &ChargeError{"card declined", "declined", false}
	case t.Input["card"] == "flaky" && t.Attempt == 1:
		return nil, &ChargeError{"payment gateway timed out", "gateway_timeout", true}
	}
	return map[string]any{"receipt": fmt.Sprintf("r-%v", t.Input["amount"]), "attempt": t.Attempt, "worker": "go"}, nil
}

func handle(nc *nats.Conn, js nats.JetStreamContext, msg *nats.Msg) error {
	var t Task
	if err := json.Unmarshal(msg.Data, &t); err != nil {
		return msg.Term() // not a task: never deliver it again
	}
	about := map[string]any{"step": t.Step, "attempt": t.Attempt, "iteration": t.Iteration}
	reply := func(fields map[string]any) []byte {
		for k, v := range about {
			fields[k] = v
		}
		data, _ := json.Marshal(fields)
		return data
	}
	// progress: a plain publish, optional; it also counts as a heartbeat
	_ = nc.Publish(t.ReplyTo, reply(map[string]any{"kind": "progress", "message": "charging"}))
	result := map[string]any{"kind": "result", "ok": true}
	output, err := charge(t)
	var known *ChargeError
	switch {
	case err == nil:
		result["output"] = output
	case errors.As(err, &known):
		result["ok"], result["error"] = false, known
	default:
		result["ok"], result["error"] = false, &ChargeError{err.Error(), "error", true}
	}
	if _, err := js.Publish(t.ReplyTo, reply(result), nats.MsgId("result:"+t.IdempotencyKey)); err != nil {
		_ = msg.NakWithDelay(time.Second) // deliver the task again in a second
		return fmt.Errorf("result of %s not stored: %w", t.IdempotencyKey, err)
	}
	return msg.Ack() // only after the PubAck: a crash in between redelivers the task
}

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Drain()
	js, err := nc.JetStream()
	if err != nil {
		log.Fatal(err)
	}
	subject := "natsflow.task." + strings.ReplaceAll(action, ".", "_")
	durable := "natsflow-action-" + strings.ReplaceAll(action, ".", "_")
	// Bind: use the consumer natsflow made at deploy; never create one.
	sub, err := js.PullSubscribe(subject, durable, nats.Bind(stream, durable))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("serving %s on %s", action, durable)
	for ctx.Err() == nil {
		msgs, err := sub.Fetch(1, nats.MaxWait(2*time.Second))
		if err != nil && !errors.Is(err, nats.ErrTimeout) {
			log.Print(err)
		}
		for _, msg := range msgs {
			if err := handle(nc, js, msg); err != nil {
				log.Print(err)
			}
		}
	}
}
