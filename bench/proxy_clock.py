"""How much the proxy's per-wake-up clock moves the latencies its metrics count.

The proxy reads `perf_counter()` once per wake-up of its event loop (`ProxyServer.clock`)
and gives that time to every exchange that starts or ends in the wake-up. This runs the
real proxy (metrics on) behind nginx's realistic-leg backend, with wrk at a few
concurrencies, and times every exchange a second way beside it: a clock read when its
request head is parsed and one when its response is done (and counted). It prints the two means, wrk's
own (the client's view), and how far apart the two ways are.

    .venv/bin/python bench/proxy_clock.py [--duration 4] [--connections 50,10,1]
"""

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.proxy import Procs, _nginx, berth_state, free_port, parse_wrk, wait_port  # noqa: E402
from bench.proxy_setup import BERTH_PROXY, NGINX_BACKEND, REALISTIC_SCRIPT  # noqa: E402

# Run inside the proxy process before it starts: time each exchange both ways, and
# print the sums when it exits.
BOTH_WAYS = """
import atexit, json, sys
from time import perf_counter
from agent.proxy import client as _client
_sums = {"n": 0, "wakeup": 0.0, "exact": 0.0, "apart": 0.0, "most": 0.0}
_parse = _client.ClientConnection.on_headers_complete
def _on_headers_complete(self):
    t0 = perf_counter()
    _parse(self)
    if self.parsing is not None:
        self.parsing.parsed_at = t0
_client.ClientConnection.on_headers_complete = _on_headers_complete
_done = _client.ClientConnection.response_done
def _response_done(self, ex):
    parsed_at = getattr(ex, "parsed_at", None)
    if parsed_at is not None and ex.head_at < 0 and not self.closed and ex is self.current:
        server = self.server
        now = server.tick or server.clock()  # (the time response_done counts with)
        wakeup, exact = now - ex.started, perf_counter() - parsed_at
        _sums["n"] += 1
        _sums["wakeup"] += wakeup
        _sums["exact"] += exact
        _sums["apart"] += abs(wakeup - exact)
        _sums["most"] = max(_sums["most"], abs(wakeup - exact))
    _done(self, ex)
_client.ClientConnection.response_done = _response_done
atexit.register(lambda: print("SUMS", json.dumps(_sums), file=sys.stderr, flush=True))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    ap.add_argument("--connections", default="50,10,1", help="wrk concurrencies, in order")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-clock-"))
    procs = Procs(tmp)
    script = tmp / "realistic.lua"
    script.write_text(REALISTIC_SCRIPT)
    try:
        backend, app, ws = free_port(), free_port(), free_port()
        _nginx(procs, tmp, "backend", NGINX_BACKEND.format(port=backend, app=app))
        wait_port(backend)
        state = berth_state(tmp, backend, app, ws)
        print("realistic leg; mean latency in ms; |apart|: mean and largest gap per exchange")
        print(f"{'wrk -c':>7} {'req/s':>8} {'wrk':>7} {'wake-up':>8} {'exact':>7} {'|apart|':>14}")
        for conns in (int(c) for c in args.connections.split(",")):
            port = free_port()
            proxy = procs.start(
                [sys.executable, "-c", BOTH_WAYS + BERTH_PROXY, str(state), f"127.0.0.1:{port}"],
                cwd=REPO,
            )
            log = tmp / f"proc-{len(procs.procs) - 1}.log"  # (where Procs sends its output)
            wait_port(port)
            wrk = subprocess.run(
                ["wrk", "-t1", f"-c{conns}", f"-d{args.duration:g}s", "--latency", "-s",
                 str(script), f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(30)
            line = next(x for x in log.read_text().splitlines() if x.startswith("SUMS "))
            sums = json.loads(line[5:])
            n = max(1, sums["n"])
            rps = parse_wrk(wrk)[0]
            mean = next(x.split()[1] for x in wrk.splitlines() if x.strip().startswith("Latency"))
            print(
                f"{conns:>7} {rps:>8.0f} {mean:>7} {sums['wakeup'] / n * 1e3:>8.3f}"
                f" {sums['exact'] / n * 1e3:>7.3f} {sums['apart'] / n * 1e6:>6.0f} µs"
                f" {sums['most'] * 1e3:>5.1f} ms"
            )
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
