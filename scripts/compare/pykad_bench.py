"""Benchmarks bmuller's kademlia (PyPI `kademlia`, asyncio over UDP) the way `kademlia bench`
measures this node: N servers on loopback in one process (k = 20, alpha = 3), node 0 first and
the others bootstrapping through it, then at each concurrency a put phase and a get phase of the
keys put, each op through a random node. Prints one JSON object on stdout.

A phase stops starting ops after --phase-seconds (default 180) and reports the ops it ran
("done" below "ops", "truncated": true), so one slow phase cannot hide the others. Progress goes
to stderr.

Usage: pykad_bench.py [--nodes 100] [--ops 1000] [--base-port 23000] [--phase-seconds 180]
"""

import asyncio
import json
import logging
import random
import sys
import time

from kademlia.network import Server

import harness


log = harness.logger("pykad")


async def phase(name, ops, concurrency, op, budget):
    latencies, errors, wrong, samples = [], 0, 0, []
    next_i = 0
    deadline = time.perf_counter() + budget

    async def worker():
        nonlocal next_i, errors, wrong
        while next_i < ops and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            try:
                ok = await op(i)
            except Exception as e:  # a failed op counts as an error, as in `kademlia bench`
                if len(samples) < 3:
                    samples.append(repr(e))
                ok = None
            latencies.append((time.perf_counter() - t) * 1000)
            if ok is None:
                errors += 1
            elif not ok:
                wrong += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    r = harness.summary(log, name, concurrency, ops, latencies, len(latencies), errors, wrong,
                        elapsed)
    r["error_samples"] = samples
    return r


async def main():
    args = harness.args(23000)
    budget = args.phase_seconds
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)

    servers = []
    for i in range(args.nodes):
        s = Server(ksize=20, alpha=3)
        await s.listen(args.base_port + i, interface="127.0.0.1")
        if i > 0:
            await s.bootstrap([("127.0.0.1", args.base_port)])
        servers.append(s)
    log(f"{args.nodes} servers up")
    # Let every node bootstrap once more now that the network is whole.
    await asyncio.gather(
        *(s.bootstrap([("127.0.0.1", args.base_port)]) for s in servers[1:])
    )

    log("second bootstrap done")
    rng = random.Random(7)
    out = {"system": "python kademlia 2.2.3", "nodes": args.nodes, "ops": args.ops}

    async def ping(i):
        a, b = rng.sample(range(len(servers)), 2)
        s = servers[a]
        ok, _ = await s.protocol.ping(("127.0.0.1", args.base_port + b), s.node.id)
        return True if ok else None

    out["ping"] = await phase("ping", args.ops, 1, ping, budget)
    for c in (1, 32):
        prefix = f"bench-c{c}"

        async def put(i, prefix=prefix):
            ok = await rng.choice(servers).set(f"{prefix}-{i}", f"value-{i}")
            return True if ok else None

        async def get(i, prefix=prefix):
            v = await rng.choice(servers).get(f"{prefix}-{i}")
            if v is None:
                return None
            return v == f"value-{i}"

        out[f"put_c{c}"] = await phase("put", args.ops, c, put, budget)
        out[f"get_c{c}"] = await phase("get", args.ops, c, get, budget)
    for s in servers:
        s.stop()
    json.dump(out, sys.stdout)
    print()


asyncio.run(main())
