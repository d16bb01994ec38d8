"""Function composition, as Cloudburst's paper shows it: square(increment(x)).

    squall node &                      # a node on 127.0.0.1:7400
    python python/examples/compose.py  # prints 36
    python python/examples/compose.py --addr HOST:PORT --x 7

`increment` and `square` are built-in functions; the DAG runs both on the
node, the output of one the input of the other.
"""

import argparse

import squall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7400", help="the node's host:port")
    p.add_argument("--x", type=int, default=5, help="the input (default 5)")
    a = p.parse_args()
    with squall.connect(a.addr) as c:
        c.register_dag("compose", ["increment", "square"], [("increment", "square")])
        print(int(c.call_dag("compose", {"increment": a.x})))


if __name__ == "__main__":
    main()
