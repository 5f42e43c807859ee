"""Benchmarks OpenDHT (Debian's python3-opendht, the C++ DHT behind Jami) the way `kademlia
bench` measures this node: N DhtRunner nodes on loopback in one process, per-IP rate limits
off, node 0 first and the others bootstrapping through it; then at each concurrency a put
phase, each put timed until OpenDHT reports it done, and a get phase of the keys put, each get
timed until its search completes, each op through a random node. Prints one JSON object.

A phase stops starting ops after --phase-seconds (default 180) and reports the ops that
finished ("done", "truncated": true); progress goes to stderr.

Usage: opendht_bench.py [--nodes 100] [--ops 1000] [--base-port 24000] [--phase-seconds 180]
"""

import json
import os
import random
import sys
import threading
import time

import opendht as dht

import harness


log = harness.logger("opendht")


def phase(name, ops, concurrency, start_op, budget):
    """Runs `ops` operations, at most `concurrency` in flight; `start_op(i, done)` starts op i
    and calls done(ok, correct) when OpenDHT says it finished."""
    slots = threading.Semaphore(concurrency)
    lock = threading.Lock()
    finished = threading.Event()
    latencies, counts = [], {"errors": 0, "wrong": 0, "left": ops}

    def launch(i):
        t = time.perf_counter()

        def done(ok, correct=True):
            with lock:
                latencies.append((time.perf_counter() - t) * 1000)
                if not ok:
                    counts["errors"] += 1
                elif not correct:
                    counts["wrong"] += 1
                counts["left"] -= 1
                if counts["left"] <= 0:
                    finished.set()
            slots.release()

        start_op(i, done)

    started = time.perf_counter()
    deadline = started + budget
    launched = 0
    for i in range(ops):
        if not slots.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            break
        if time.perf_counter() >= deadline:
            slots.release()
            break
        launch(i)
        launched += 1
    with lock:
        counts["left"] -= ops - launched
        if counts["left"] <= 0:
            finished.set()
    # In-flight ops get a further 30 s; any still running then count as errors.
    finished.wait(timeout=30)
    elapsed = time.perf_counter() - started
    with lock:
        finished_ms = list(latencies)
        errors = counts["errors"] + (launched - len(finished_ms))
        wrong = counts["wrong"]
    return harness.summary(log, name, concurrency, ops, finished_ms, launched, errors, wrong,
                           elapsed)


def main():
    args = harness.args(24000)
    budget = args.phase_seconds

    nodes = []
    for i in range(args.nodes):
        cfg = dht.DhtConfig()
        cfg.setRateLimit(-1, -1)
        n = dht.DhtRunner()
        n.run(port=args.base_port + i, ipv4="127.0.0.1", config=cfg)
        if i > 0:
            n.bootstrap("127.0.0.1", str(args.base_port))
        nodes.append(n)
    log(f"{args.nodes} nodes up")
    # OpenDHT fills its routing tables in the background: wait until a put from the last
    # node reports success, then a little more.
    deadline = time.time() + 60
    while not nodes[-1].put(dht.InfoHash.get("warm-up"), dht.Value(b"x")):
        if time.time() > deadline:
            raise SystemExit("OpenDHT network did not form within 60 s")
    time.sleep(5)
    log("network formed")

    rng = random.Random(7)
    out = {"system": "OpenDHT 2.4.12", "nodes": args.nodes, "ops": args.ops}
    for c in (1, 32):
        prefix = f"bench-c{c}"

        def put(i, done, prefix=prefix):
            value = dht.Value(f"value-{i}".encode())
            rng.choice(nodes).put(
                dht.InfoHash.get(f"{prefix}-{i}"), value, done_cb=lambda ok, _n: done(ok)
            )

        def get(i, done, prefix=prefix):
            want = f"value-{i}".encode()
            seen = []

            def on_value(v):
                seen.append(bytes(v.data))
                return True

            rng.choice(nodes).get(
                dht.InfoHash.get(f"{prefix}-{i}"),
                get_cb=on_value,
                done_cb=lambda ok, _n: done(ok and bool(seen), want in seen),
            )

        out[f"put_c{c}"] = phase("put", args.ops, c, put, budget)
        out[f"get_c{c}"] = phase("get", args.ops, c, get, budget)
    json.dump(out, sys.stdout)
    print(flush=True)
    # Shutting 100 DhtRunners down one by one hung for many minutes here: the process exits
    # without it, which ends every node's sockets and threads.
    os._exit(0)


main()
