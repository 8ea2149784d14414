"""How fast the box is, second by second: a fixed CPU workload, timed in CPU time.

The boxes the benchmarks run on are virtual machines whose speed changes from
one second to the next: on an idle 2-core box, one thread running the same
Python workload took 22 to 36 ms of its own CPU time (not wall time: no waiting
for a core is in it) over a minute, with under 3 % of the time stolen by the
hypervisor, so none of it showed in any process's CPU share. That is the host's
other tenants (shared caches, memory bandwidth, hyperthreads), and it moves
every figure: the same code took 1.8 and 3.0 ms of gateway CPU per message on
two days, and a step that ran clean one hour was shed the next.

So the benchmark runner (bench.resources.Sampler) runs ``probe()`` once a
second: ``ROUNDS`` rounds of the services' kind of work (protobuf encode and
decode, JSON, hashing, dict and string work), timed by the thread's CPU clock.
Each step reports the mean and the slowest probe: a step is comparable with
another, in the same run or not, only at a like speed. One probe costs ~6 ms of
the orchestrator's CPU (under 1 % of a core).

``python -m bench.boxspeed [SECONDS]`` prints a probe a second (default 10).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

from google.protobuf.timestamp_pb2 import Timestamp

from parley.v1 import messages_pb2

ROUNDS = 250  # ~6 ms of CPU on the benchmark boxes


def workload(rounds: int = ROUNDS) -> int:
    """A fixed amount of the services' kind of work; returns a checksum so none of it is skipped."""
    check = 0
    for i in range(rounds):
        message = messages_pb2.Message(
            conversation_id=f"d_{i:024x}",
            seq=i,
            message_id=f"{i:026d}",
            sender_id="u_boxspeed",
            sender_device_id="device",
            client_message_id=f"c{i}",
            body=b"boxspeed " * 7,
            server_time=Timestamp(seconds=1_700_000_000 + i),
        )
        decoded = messages_pb2.Message.FromString(message.SerializeToString())
        text = json.dumps({"cid": decoded.conversation_id, "seq": decoded.seq, "body": decoded.body.decode()})
        check ^= int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
        check ^= len(json.loads(text)["cid"].split("_")[1])
    return check


def probe(rounds: int = ROUNDS) -> float:
    """Milliseconds of this thread's CPU time for ``rounds`` of the workload (lower is faster)."""
    started = time.thread_time()
    workload(rounds)
    return (time.thread_time() - started) * 1000


def main(argv: list[str]) -> int:
    seconds = int(argv[0]) if argv else 10
    for _ in range(seconds):
        print(f"{probe():.2f} ms", flush=True)
        time.sleep(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
