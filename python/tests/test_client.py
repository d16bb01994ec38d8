"""The Python client against a real node: every call, every error class,
a silent server, non-UTF-8 bytes, threads."""

import os
import socket
import threading
import uuid

import pytest

import squall
from conftest import GUESTS, MODELS, Node


def key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ---- key-value, every lattice ----

def test_lww_round_trips_bytes_and_str_including_non_utf8(conn):
    k = key()
    assert conn.get(k) is None
    conn.put(k, "héllo")
    assert conn.get(k) == "héllo".encode()
    raw_key, raw = bytes([0xFF, 0x00, 0xFE]) + os.urandom(8), bytes(range(256))
    conn.put(raw_key, raw)
    assert conn.get(raw_key) == raw
    conn.put(k, bytearray(b"again"))
    assert conn.get(k) == b"again"


def test_set_lattices_merge(conn):
    s, o = key("set"), key("oset")
    conn.put(s, [b"a", "b"], lattice="set")
    conn.put(s, {b"c"}, lattice="set")
    assert conn.get(s) == {b"a", b"b", b"c"}
    conn.put(o, [b"z", b"a"], lattice="ordered_set")
    conn.put(o, [b"m"], lattice="ordered_set")
    assert conn.get(o) == [b"a", b"m", b"z"]


def test_max_and_priority_lattices_merge(conn):
    m, p = key("max"), key("prio")
    conn.put(m, 7, lattice="max")
    conn.put(m, 3, lattice="max")
    assert conn.get(m) == 7
    conn.put(p, b"late", lattice="priority", priority=5)
    conn.put(p, b"first", lattice="priority", priority=1)
    assert conn.get(p) == (1, b"first")


def test_causal_lattices_keep_concurrent_versions(conn):
    c, m = key("causal"), key("mcausal")
    conn.put(c, b"a", lattice="causal", clock={1: 1})
    conn.put(c, b"b", lattice="causal", clock={2: 1})
    assert sorted(conn.get(c)) == [b"a", b"b"], "concurrent: both kept"
    assert sorted(conn.get_causal(c)) == [(b"a", {1: 1}, {}), (b"b", {2: 1}, {})]
    conn.put(c, b"ab", lattice="causal", clock={1: 1, 2: 1, 3: 1})
    assert conn.get_causal(c) == [(b"ab", {1: 1, 2: 1, 3: 1}, {})], "dominated: replaced"
    conn.put(m, b"x", lattice="multi_causal", clock={7: 2}, deps={c: {1: 1, 2: 1, 3: 1}})
    assert conn.get_causal(m) == [(b"x", {7: 2}, {c.encode(): {1: 1, 2: 1, 3: 1}})]
    assert conn.get_causal(key()) is None
    conn.put(m + "-lww", b"plain")
    with pytest.raises(squall.InvalidArgument, match="not a causal one"):
        conn.get_causal(m + "-lww")
    with pytest.raises(ValueError, match="needs clock"):
        conn.put(c, b"x", lattice="causal")
    with pytest.raises(ValueError, match="deps are for"):
        conn.put(c, b"x", lattice="causal", clock={1: 9}, deps={})
    with pytest.raises(ValueError, match="causal lattices"):
        conn.put(c, b"x", clock={1: 1})
    with pytest.raises(TypeError, match="clock is a dict"):
        conn.put(c, b"x", lattice="causal", clock={"w": "x"})


def test_get_many_and_delete(conn):
    a, b, absent = key(), key(), key()
    conn.put(a, b"1")
    conn.put(b, b"2")
    assert conn.get_many([a, absent, b]) == [b"1", None, b"2"]
    assert conn.delete(a) is True
    assert conn.delete(a) is False
    assert conn.get(a) is None


# ---- functions and DAGs ----

def test_call_with_values_and_refs(conn):
    assert conn.call("increment", 5) == b"6"
    assert conn.call("increment", "41") == b"42"
    k = key()
    conn.put(k, b"\xffbinary")
    assert conn.call("echo", squall.Ref(k)) == b"\xffbinary"
    assert squall.Ref(k).key == k.encode()
    assert squall.Ref(k) == squall.Ref(k.encode())


def test_compose_dag_result_and_future(conn):
    conn.register_dag("compose", ["increment", "square"], [("increment", "square")])
    assert "compose" in conn.list_dags()
    assert conn.call_dag("compose", {"increment": 5}) == b"36"
    assert conn.call_dag("compose", {"increment": [6]}) == b"49"
    out = key("out")
    fut = conn.call_dag("compose", {"increment": 7}, output_key=out)
    assert isinstance(fut, squall.Future)
    assert fut.result(timeout=10) == b"64"
    assert fut.done()
    assert conn.get(out) == b"64"
    failing = conn.call_dag("compose", {"increment": "x"}, output_key=key("out"))
    with pytest.raises(squall.FunctionFailed):
        failing.result(timeout=10)


def test_dag_options_and_every_consistency_mode(conn):
    conn.register_dag("twice", ["echo", "increment"], [("echo", "increment")],
                      replicas={"echo": 1}, batch=1)
    k = key()
    conn.put(k, b"9")
    for mode in ["lww", "dsrr", "sk"]:
        assert conn.call_dag("twice", {"echo": squall.Ref(k)}, consistency=mode) == b"10"
    for mode in ["mk", "dsc"]:
        assert conn.call_dag("twice", {"echo": squall.Ref(k)}, consistency=mode,
                             atomic=True, retries=1) == b"10"
        # Always atomic: without atomic=True the node draws the call's id.
        assert conn.call_dag("twice", {"echo": squall.Ref(k)}, consistency=mode) == b"10"
    assert conn.delete_dag("twice") is True
    with pytest.raises(squall.NotFound):
        conn.call_dag("twice", {"echo": b"1"})


def test_register_wasm_from_a_path_and_from_bytes(conn):
    module = GUESTS / "increment.wasm"
    conn.register_wasm("py_inc", str(module), memory_mb=16, timeout_ms=1000)
    assert conn.call("py_inc", 1) == b"2"
    conn.register_wasm("py_inc2", module.read_bytes())
    assert conn.call("py_inc2", 2) == b"3"
    assert "py_inc" in conn.list_functions()
    assert conn.delete_function("py_inc") is True
    with pytest.raises(squall.InvalidArgument):
        conn.register_wasm("py_bad", b"\x00asm not really")
    with pytest.raises(OSError):
        conn.register_wasm("py_missing", "/nonexistent/module.wasm")
    conn.register_function("py_echo", "echo")
    assert conn.call("py_echo", "x") == b"x"


def test_predict_labels_the_kitten_as_tabby(conn):
    conn.put_model("squeezenet", MODELS / "squeezenet1.1_fp32.onnx",
                   labels=MODELS / "imagenet_labels.txt")
    top = conn.predict(MODELS / "kitten_224.png", timeout=60)
    assert len(top) == 5
    cls, p, label = top[0]
    assert "tabby" in label and 0.0 < p <= 1.0 and isinstance(cls, int)
    assert conn.predict((MODELS / "kitten_224.png").read_bytes())[0][2] == label


def test_stats_and_cluster_status(conn, node):
    conn.ping()
    stats = conn.stats()
    assert len(stats) == 1 and stats[0]["shard"] == 0 and stats[0]["puts"] >= 0
    view = conn.cluster_status()
    assert [m["addr"] for m in view["members"]] == [node.addr]
    assert view["members"][0]["state"] == "up"


# ---- errors ----

def test_every_status_maps_to_its_exception_class():
    expected = {
        1: squall.InvalidArgument, 2: squall.InvalidArgument, 3: squall.InvalidArgument,
        4: squall.AuthError, 5: squall.InvalidArgument, 6: squall.InvalidArgument,
        7: squall.InvalidArgument, 8: squall.InvalidArgument, 9: squall.Overloaded,
        10: squall.Unavailable, 11: squall.Unavailable, 12: squall.Timeout,
        13: squall.Unavailable, 14: squall.FunctionFailed, 15: squall.NotFound,
        16: squall.NotFound, 17: squall.InvalidArgument, 18: squall.InvalidArgument,
        19: squall.Unavailable, 20: squall.AuthError, 21: squall.AuthError,
        22: squall.Unavailable, 23: squall.Unavailable, 24: squall.Conflict,
    }
    from squall import _native
    for code, cls in expected.items():
        e = _native._error_for_status(code, "why")
        assert type(e) is cls, (code, type(e))
        assert isinstance(e, squall.SquallError) and e.code == code and e.status
        assert "why" in str(e)
    e = _native._error_for_status(999, "new")
    assert type(e) is squall.SquallError and e.code == 999
    assert issubclass(squall.Overloaded, squall.Unavailable)
    assert issubclass(squall.ConnectionClosed, squall.ConnectionFailed)


def test_node_errors_carry_code_status_and_sentence(conn):
    with pytest.raises(squall.InvalidArgument) as e:
        conn.put(key(), b"x" * (2 << 20))
    assert e.value.code == 7 and e.value.status == "value_too_large"
    assert "exceeds the limit" in str(e.value)
    with pytest.raises(squall.NotFound) as e:
        conn.call("no_such_function", 1)
    assert e.value.status == "unknown_function"
    with pytest.raises(squall.FunctionFailed):
        conn.call("increment", "not a number")
    with pytest.raises(squall.Timeout) as e:
        conn.call("sleep_ms", 3000, timeout=0.2)
    assert e.value.status == "timeout"


def test_bad_python_input_raises_clear_exceptions(conn):
    with pytest.raises(TypeError, match="a key must be bytes or str, not int"):
        conn.put(1, b"x")
    with pytest.raises(ValueError, match="lattice \"bogus\" is unknown"):
        conn.put(key(), b"x", lattice="bogus")
    with pytest.raises(TypeError, match="iterable"):
        conn.put(key(), b"ab", lattice="set")
    with pytest.raises(TypeError, match="max value"):
        conn.put(key(), -1, lattice="max")
    with pytest.raises(TypeError, match="argument must be bytes, str, int or squall.Ref"):
        conn.call("echo", 1.5)
    with pytest.raises(ValueError, match="consistency"):
        conn.call_dag("compose", {"increment": 1}, consistency="eventual")
    with pytest.raises(ValueError, match="timeout"):
        conn.call("increment", 1, timeout=-1)
    with pytest.raises(TypeError):
        conn.call_dag("compose", ["not", "a", "dict"])
    with pytest.raises(TypeError, match="replicas"):
        conn.register_dag("bad", ["echo"], replicas="three")


def test_a_closed_connection_raises_and_the_context_manager_closes(node):
    with squall.connect(node.addr) as c:
        c.ping()
    assert c.closed
    with pytest.raises(squall.ConnectionClosed, match="closed"):
        c.get("k")
    with pytest.raises(squall.ConnectionFailed):
        c.ping()


def test_a_silent_server_times_out_and_a_closed_port_fails(node):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        host, port = silent.getsockname()
        with pytest.raises(squall.Timeout):
            squall.connect(f"{host}:{port}", timeout=0.3)
    finally:
        silent.close()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(squall.ConnectionFailed):
        squall.connect(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(squall.ConnectionFailed):
        squall.connect("not an address", timeout=1)


def test_a_full_node_refuses_with_overloaded(tmp_path):
    n = Node(tmp_path / "data", "--connections-max", "1")
    try:
        with squall.connect(n.addr) as first:
            first.ping()
            with pytest.raises(squall.Overloaded) as e:
                squall.connect(n.addr, timeout=2)
            assert isinstance(e.value, squall.Unavailable)
            assert e.value.status == "overloaded" and "limit" in str(e.value)
    finally:
        n.stop()


def test_authentication(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("read read-secret-0123456789\nadmin admin-secret-0123456789\n")
    n = Node(tmp_path / "data", "--auth-token-file", str(tokens))
    try:
        with pytest.raises(squall.AuthError):
            squall.connect(n.addr, token=None).get("k")
        with pytest.raises(squall.AuthError):
            squall.connect(n.addr, token="wrong-secret-0123456789").get("k")
        reader = squall.connect(n.addr, token="read-secret-0123456789")
        assert reader.get("k") is None
        with pytest.raises(squall.AuthError) as e:
            reader.put("k", b"v")
        assert e.value.status == "forbidden"
        admin = squall.connect(n.addr, token="admin-secret-0123456789")
        admin.put("k", b"v")
        assert reader.get("k") == b"v"
    finally:
        n.stop()


# ---- threads ----

def test_threads_share_a_connection_and_run_their_own(conn, node):
    errors = []

    def work(c, base):
        try:
            for i in range(50):
                assert c.call("increment", base + i) == str(base + i + 1).encode()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    shared = [threading.Thread(target=work, args=(conn, t * 1000)) for t in range(4)]
    own_conns = [squall.connect(node.addr) for _ in range(4)]
    own = [threading.Thread(target=work, args=(c, 10_000 + t * 1000)) for t, c in enumerate(own_conns)]
    for t in shared + own:
        t.start()
    for t in shared + own:
        t.join()
    assert not errors, errors
    for c in own_conns:
        c.close()


def test_the_gil_is_released_while_a_call_waits(conn):
    done = threading.Event()
    count = 0

    def slow():
        conn.call("sleep_ms", 300)
        done.set()

    t = threading.Thread(target=slow)
    t.start()
    while not done.is_set():
        count += 1
    t.join()
    # With the GIL held for the whole call, this thread could not have run.
    assert count > 10_000, count
