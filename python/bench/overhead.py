"""A Python call's overhead over the Rust client's, measured serially.

    squall node &   # or let scripts/bench-python.sh start one
    python python/bench/overhead.py [--addr HOST:PORT] [--calls 10000]

Calls the DAG square(increment(41)) on one connection, `--calls` times from
Python (each call timed with perf_counter_ns) and `--calls` times from the
Rust client in a Rust loop on the same connection (`_time_rust_calls`: the
Rust client's cost with no Python in between), interleaved call by call
(`--block`) so that drift in the machine falls on both alike. Prints both
medians and their difference, then one JSON line (the last).
Then, as a second view, `loadgen compose` (the Rust client in its own
process) for the same number of calls, unless --no-loadgen.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import time

import squall

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7400")
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--block", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument("--loadgen", default=str(ROOT / "target" / "release" / "loadgen"))
    p.add_argument("--no-loadgen", action="store_true")
    a = p.parse_args()
    py_us, rust_us = [], []
    with squall.connect(a.addr) as c:
        c.register_dag("py_compose", ["increment", "square"], [("increment", "square")])
        args = {"increment": 41}
        for _ in range(a.warmup):
            assert c.call_dag("py_compose", args) == b"1764"
        c._time_rust_calls("py_compose", "increment", b"41", a.warmup)
        while len(py_us) < a.calls:
            for _ in range(a.block):
                t = time.perf_counter_ns()
                out = c.call_dag("py_compose", args)
                py_us.append((time.perf_counter_ns() - t) / 1000)
                assert out == b"1764", out
            rust_us += c._time_rust_calls("py_compose", "increment", b"41", a.block)
    q = lambda v, x: sorted(v)[min(len(v) - 1, int(len(v) * x))]  # noqa: E731
    result = {
        "calls": len(py_us),
        "python_p50_us": statistics.median(py_us),
        "python_p99_us": q(py_us, 0.99),
        "rust_p50_us": statistics.median(rust_us),
        "rust_p99_us": q(rust_us, 0.99),
    }
    result["overhead_p50_us"] = result["python_p50_us"] - result["rust_p50_us"]
    print(f"square(increment(41)), {len(py_us)} serial calls each, interleaved on one connection: "
          f"Python p50 {result['python_p50_us']:.1f} us p99 {result['python_p99_us']:.1f} us; "
          f"Rust client p50 {result['rust_p50_us']:.1f} us p99 {result['rust_p99_us']:.1f} us; "
          f"Python - Rust p50 {result['overhead_p50_us']:+.1f} us")
    if not a.no_loadgen:
        out = subprocess.run(
            [a.loadgen, "compose", "--addr", a.addr, "--calls", str(a.calls), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
        lg = json.loads(out.strip().splitlines()[-1])
        result["loadgen_p50_us"], result["loadgen_p99_us"] = lg["p50_us"], lg["p99_us"]
        print(f"loadgen compose (the Rust client in its own process), {a.calls} calls: "
              f"p50 {lg['p50_us']:.1f} us p99 {lg['p99_us']:.1f} us")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
