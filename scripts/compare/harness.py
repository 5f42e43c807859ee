"""What the peer harnesses of scripts/compare.sh share: their command line, progress lines on
stderr, and the figures a phase reports (the fields `kademlia bench --json` gives, plus "done"
and "truncated" for a phase cut short by --phase-seconds). Plain Python: the python kademlia
harness runs it in a venv, the OpenDHT one in Debian's interpreter."""

import argparse
import sys
import time


def args(default_port):
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--base-port", type=int, default=default_port)
    ap.add_argument("--phase-seconds", type=float, default=180)
    return ap.parse_args()


def logger(tag):
    def log(msg):
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def pct(sorted_ms, q):
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def summary(log, name, concurrency, ops, latencies, launched, errors, wrong, elapsed):
    """A phase's figures: `latencies` of the ops that finished, `launched` ops started,
    `errors` among them (failed or never finished), `wrong` answers."""
    latencies = sorted(latencies)
    done = len(latencies)
    log(f"{name} c{concurrency}: {done}/{ops} ops in {elapsed:.1f} s, {errors} errors")
    return {
        "done": done,
        "truncated": launched < ops,
        "ok": launched - errors,
        "errors": errors,
        "wrong": wrong,
        "ops_per_sec": done / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
    }
