// Command parley-loadgen is Parley's load generator: one process drives many users' session
// streams over a few HTTP/2 connections, speaking the public protocol as a client does
// (ChatService.Connect with hello and cursors, sends with client_message_id, acks), at an
// open-loop rate, with HdrHistogram latencies and loss accounting.
//
// It is driven by the Python orchestrator (bench/runner.py) with JSON lines: one command per line
// on stdin (setup, connect, step, quit), one event per line on stdout; logs go to stderr. Every
// command is answered by exactly one final event (setup_done, connect_done, step_done, bye), with
// progress events in between while connecting, or an error event.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log"
	"math"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
)

type emitter struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func (e *emitter) emit(event map[string]any) {
	line, err := json.Marshal(event)
	if err != nil {
		line, _ = json.Marshal(map[string]any{"event": "error", "message": err.Error()})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.out.Write(line)
	_ = e.out.WriteByte('\n')
	_ = e.out.Flush()
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("loadgen ")
	out := &emitter{out: bufio.NewWriter(os.Stdout)}
	// LOADGEN_CPUPROFILE=file: a pprof CPU profile of the whole run (go tool pprof file), to see
	// where the generator's own CPU goes.
	if path := os.Getenv("LOADGEN_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			log.Fatalf("CPU profile %s: %v", path, err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	if err := serve(bufio.NewReaderSize(os.Stdin, 1<<20), out); err != nil {
		out.emit(map[string]any{"event": "error", "message": err.Error()})
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func serve(in *bufio.Reader, out *emitter) error {
	var w *worker
	defer func() {
		if w != nil {
			w.close()
		}
		out.emit(map[string]any{"event": "bye"})
	}()
	for {
		line, err := in.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			return nil // stdin closed: the runner is gone
		}
		var head struct {
			Cmd string `json:"cmd"`
		}
		if err := json.Unmarshal(line, &head); err != nil {
			out.emit(map[string]any{"event": "error", "message": fmt.Sprintf("bad command: %v", err)})
			continue
		}
		switch head.Cmd {
		case "setup":
			var cfg workerConfig
			if err := json.Unmarshal(line, &cfg); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			if w, err = newWorker(cfg); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			event, err := w.setup()
			if err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			out.emit(event)
		case "connect":
			var cmd struct {
				Rate        float64 `json:"rate"`
				Concurrency int     `json:"concurrency"`
			}
			if err := json.Unmarshal(line, &cmd); err != nil || w == nil || cmd.Rate <= 0 {
				return fmt.Errorf("connect needs a setup first and a positive rate (%v)", err)
			}
			out.emit(w.connect(cmd.Rate, cmd.Concurrency, out.emit))
		case "step":
			var cmd stepCommand
			if err := json.Unmarshal(line, &cmd); err != nil || w == nil {
				return fmt.Errorf("step needs a setup first (%v)", err)
			}
			event, err := w.runStep(cmd)
			if err != nil {
				return fmt.Errorf("step: %w", err)
			}
			out.emit(event)
		case "quit":
			return nil
		default:
			out.emit(map[string]any{"event": "error", "message": fmt.Sprintf("unknown command %q", head.Cmd)})
		}
	}
}

func roundTo(value float64, digits int) float64 {
	scale := math.Pow(10, float64(digits))
	return math.Round(value*scale) / scale
}

// formatG formats like Python's "{:g}" for the values the reports show (5, 0.5, 2.25).
func formatG(value float64) string { return strconv.FormatFloat(value, 'g', -1, 64) }
