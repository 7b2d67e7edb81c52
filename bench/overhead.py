"""What per-node observability in Prefect costs over plain dbt: wall time and peak memory.

What it measures
- One synthetic DuckDB dbt project (1 seed of 100 rows, N table models in a layered DAG, or
  `--shape fanout` (one model, all others on it) or `fanin` (one model on all others), one
  `not_null` test per model, `threads: 4`) is built by three variants, each a child process:
  `plain`      `dbt build` with no Prefect at all (the baseline);
  `fast`       `dbtflow run --engine fast` against a local Prefect server (a task run, logs and
               asset events per dbt node, sent off dbt's threads);
  `prefectdbt` `dbtflow run --engine prefect-dbt` (prefect-dbt's PrefectDbtRunner as it is).
- Per child: wall time (`time.perf_counter()` around Popen .. wait4, so Python start-up and
  imports count, as a user sees them), CPU seconds and peak RSS from `os.wait4`'s rusage, and
  the CPU the Prefect server spent while that child ran and until it went idle again.
- The last line is `RESULT models=... shape=... plain_s=... fast_s=... prefectdbt_s=... fast_ratio=...
  prefectdbt_ratio=... fast_rss_ratio=...`: medians over `--repeat` rounds, ratios against
  plain dbt measured in the same run (`nan` for prefect-dbt with `--skip-prefect-dbt`).

How
- A `prefect server start` on a free loopback port with its own PREFECT_HOME (UI and analytics
  off), health-checked before and stopped (its whole process group) at the end, also on an
  error, Ctrl-C or SIGTERM. The children get their own PREFECT_HOME and no inherited PREFECT_*
  settings, dbt's anonymous usage tracking off (it would try the network), and a runs folder
  per child (DBTFLOW_RUNS_DIR), from which the run's record and run_results are checked.
- `dbt parse` and one untimed warm-up per variant come first: the first parse of a project is
  full, later ones partial. plain dbt keeps its partial-parse state in `target/`, dbtflow (both
  engines) in `target/<target>/`, so each variant warms its own; every measured run is checked
  to have parsed partially (a full parse rewrites partial_parse.msgpack; the fast engine also
  records it in run.json): a full parse in one variant only would be counted as its overhead.
- Rounds are interleaved (plain, fast, prefectdbt, then rotated by one each round), so slow
  drift of the machine (other load, thermal, page cache) spreads over all variants.
- Every child must exit 0 and its run_results must hold exactly the seed, the N models and
  the N tests, all `success`/`pass`; otherwise the script stops with exit 1 and the log path:
  a failed or empty run is never reported as a speed-up. Each build rebuilds every table.
- `--profile` runs `fast` once more under `python -m cProfile` and prints the top 25 functions
  by cumulative time.

Pitfalls
- On a 2-core machine the server runs on the same cores as the child: its CPU slows the child
  (which the wall time shows) but is not in the child's CPU or RSS; the `srv_cpu_s` column
  shows it (the idle server's own background loops, a few tenths of a second, are in every
  variant's, `plain` included). Other load on the machine adds noise: compare medians, and ratios from one run.
- The server handles events after the child exits; the script waits for its CPU to go idle
  (at most 30 s) before the next child, so one variant's backlog does not slow the next.
- `ru_maxrss` from wait4 is the peak of the child and of any descendants it waited for (a max,
  not a sum). Every variant, plain dbt included, spawns one small child: multiprocessing's
  `resource_tracker` (dbt's adapters use multiprocessing locks); a dbtflow child pointed at a server
  spawns nothing else (without PREFECT_API_URL it would start an ephemeral API in-process).
  The script samples each child's children at 4 Hz and prints what it saw under each table.
- Logging is not quite equal: plain dbt writes its console lines (to the log file here) and a
  debug `logs/dbt.log`; the fast engine turns dbt's console off (its lines go to Prefect) and
  keeps a debug dbt.log in the run folder (before dbtflow passed `--log-level-file debug`,
  `--log-level none` silenced that file too, which favoured `fast`); prefect-dbt writes an
  info-level dbt.log in the run folder and its own console lines.
- cProfile sees only the main thread: the dbt run itself is on dbtflow's `dbtflow-dbt` thread
  and dbt's worker threads, the reporter on its own thread; the profile shows start-up
  (imports, flow engine), waiting and shutdown (flushing to the API), not the per-node work.
- Timings include Python start-up and imports (prefect's are large); with small N that fixed
  cost dominates the ratios, with large N the per-node cost does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
TARGET = "bench"
THREADS = 4
SEED_ROWS = 100
LAYER_WIDTH = 8  # models per DAG layer: twice dbt's threads, so there is always parallel work
CHILD_TIMEOUT_S = 1800
SERVER_START_TIMEOUT_S = 120
SETTLE_TIMEOUT_S = 30
VARIANTS = ("plain", "fast", "prefectdbt")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A child failed or a check did not hold; the message says what and where the log is."""


@contextlib.contextmanager
def bench_folder(prefix: str, keep: bool) -> Iterator[Path]:
    """A temp folder for one bench run: removed at the end unless `keep`, kept (and named) on any failure.

    A BenchError or an interrupt ends the process with exit code 1 or 130 and one line on stderr;
    any other exception propagates with the kept folder named.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    print(f"temp folder: {tmp}")
    try:
        yield tmp
    except BenchError as exc:
        print(f"FAILED: {exc}\nkept: {tmp}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"interrupted; kept: {tmp}", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException:
        print(f"kept: {tmp}", file=sys.stderr)
        raise
    if keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


# --- 1. the synthetic dbt project ------------------------------------------------------------


def write_project(folder: Path, models: int, shape: str = "layered") -> None:
    """A DuckDB project: 1 seed, `models` table models in the DAG `shape`, one not_null test per model.

    layered: layers of LAYER_WIDTH models, each on 1-2 models of the layer before (the default);
    fanout: one model on the seed, every other model on that one (one wave of N-1 nodes);
    fanin: N-1 models on the seed and one last model that unions them all (N-1 parents).
    """
    (folder / "seeds").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "dbt_project.yml").write_text(
        "name: bench\nprofile: bench\nconfig-version: 2\n"
        "seed-paths: [seeds]\nmodel-paths: [models]\n"
        "models:\n  bench:\n    +materialized: table\n"
    )
    (folder / "profiles.yml").write_text(
        f"bench:\n  target: {TARGET}\n  outputs:\n    {TARGET}:\n"
        f"      type: duckdb\n      path: {json.dumps(str(folder / 'bench.duckdb'))}\n      threads: {THREADS}\n"
    )
    with (folder / "seeds" / "raw_items.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "category", "amount"])
        writer.writerows([i, f"c{i % 7}", i * 3 % 101] for i in range(1, SEED_ROWS + 1))

    rng = random.Random(42)  # the same DAG for a given N, run after run
    names = [f"m_{i:04d}" for i in range(models)]
    if shape != "layered":
        _write_wide(folder, names, shape)
    for i, name in enumerate(names if shape == "layered" else []):
        layer = i // LAYER_WIDTH
        if layer == 0:
            sql = "select id, category, amount from {{ ref('raw_items') }}"
        else:
            previous = names[(layer - 1) * LAYER_WIDTH : layer * LAYER_WIDTH]
            parents = rng.sample(previous, k=min(len(previous), rng.choice((1, 2))))
            if len(parents) == 1:
                sql = f"select id, category, (amount + {i}) % 1000003 as amount from {{{{ ref('{parents[0]}') }}}}"
            else:  # amounts stay bounded (modulo) so deep DAGs (N=1000) never overflow
                sql = (
                    "select a.id, a.category, (a.amount + b.amount) % 1000003 as amount\n"
                    f"from {{{{ ref('{parents[0]}') }}}} as a\n"
                    f"join {{{{ ref('{parents[1]}') }}}} as b on a.id = b.id"
                )
        (folder / "models" / f"{name}.sql").write_text(sql + "\n")
    schema = ["version: 2", "models:"]
    for name in names:
        schema += [f"  - name: {name}", "    columns:", "      - name: id", "        data_tests: [not_null]"]
    (folder / "models" / "schema.yml").write_text("\n".join(schema) + "\n")


def _write_wide(folder: Path, names: list[str], shape: str) -> None:
    """The `fanout` and `fanin` DAGs of write_project (one model on the seed first in both)."""
    seed = "select id, category, amount from {{ ref('raw_items') }}"
    for i, name in enumerate(names):
        if i == 0 or (shape == "fanin" and i < len(names) - 1):
            sql = seed
        elif shape == "fanout":
            sql = f"select id, category, (amount + {i}) % 1000003 as amount from {{{{ ref('{names[0]}') }}}}"
        else:  # the fan-in: one model on all the others
            sql = "\nunion all\n".join(f"select id, category, amount from {{{{ ref('{n}') }}}}" for n in names[:-1])
        (folder / "models" / f"{name}.sql").write_text(sql + "\n")


# --- 2. the Prefect server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, int]]:
    """A `prefect server start` on loopback; yields (API URL, process group id). Always stopped."""
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    log_path = home / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, spared the terminal's Ctrl-C
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"prefect server did not start; see {log_path}")
                time.sleep(0.5)
            yield url, proc.pid
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
            return


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in the process group `pgid`."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def wait_until_idle(pgid: int) -> None:
    """Wait until the server uses < 10 % of a core over 0.5 s (it handles events after a child exits)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    before = group_cpu_seconds(pgid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = group_cpu_seconds(pgid)
        if now - before < 0.05:
            return
        before = now


# --- 3. one measured child -------------------------------------------------------------------


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    rss_mib: float
    server_cpu_s: float
    log: Path
    spawned: list[str] = field(default_factory=list)


@dataclass
class Bench:
    tmp: Path
    project: Path
    models: int
    api_url: str
    server_pgid: int

    def command(self, variant: str) -> list[str]:
        if variant == "plain":
            return [str(BIN / "dbt"), "build", "--project-dir", str(self.project), "--profiles-dir", str(self.project)]
        engine = {"fast": "fast", "prefectdbt": "prefect-dbt"}[variant]
        return [
            str(BIN / "dbtflow"), "run", "--project-dir", str(self.project), "--target", TARGET, "--engine", engine,
        ]  # fmt: skip

    def env(self, runs_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBT_"))}
        env.update(
            PREFECT_HOME=str(self.tmp / "prefect-client"),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            DO_NOT_TRACK="1",
            DBTFLOW_RUNS_DIR=str(runs_dir),
        )
        return env

    def run(self, variant: str, label: str, argv: list[str] | None = None, check: bool = True) -> Sample:
        """Run one child to completion, measure it, and (`check`) that it really built everything."""
        log = self.tmp / "logs" / f"{label}.log"
        runs_dir = self.tmp / "runs" / label
        log.parent.mkdir(exist_ok=True)
        self._clear_plain_results()
        parse_state = self._parse_state(variant)
        server_before = group_cpu_seconds(self.server_pgid)
        with log.open("w") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv or self.command(variant), cwd=self.tmp, env=self.env(runs_dir), stdout=out, stderr=out
            )
            watcher = _ChildWatcher(proc.pid)
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:  # Ctrl-C or SIGTERM: never leave the child behind
                proc.kill()
                proc.wait()
                raise
            finally:
                watcher.stop()
            wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        wait_until_idle(self.server_pgid)
        sample = Sample(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
            server_cpu_s=group_cpu_seconds(self.server_pgid) - server_before,
            log=log,
            spawned=watcher.spawned,
        )
        if watcher.timed_out:
            raise BenchError(f"{label}: killed after {CHILD_TIMEOUT_S} s; log: {log}")
        if proc.returncode != 0:
            raise BenchError(f"{label}: exit code {proc.returncode}; log: {log}")
        if check:
            self._check(variant, label, log, runs_dir, parse_state)
        return sample

    def _clear_plain_results(self) -> None:
        (self.project / "target" / "run_results.json").unlink(missing_ok=True)

    def _check(self, variant: str, label: str, log: Path, runs_dir: Path, parse_state: int | None) -> None:
        """Exactly 1 seed + N models + N tests, all success/pass; and (after the warm-up) a partial parse."""
        if variant == "plain":
            results_path = self.project / "target" / "run_results.json"
            parse = ""
        else:
            folders = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.is_dir() else []
            if len(folders) != 1:
                raise BenchError(f"{label}: expected one run folder in {runs_dir}, found {len(folders)}; log: {log}")
            record = json.loads((folders[0] / "run.json").read_text())
            if record.get("status") != "completed":
                raise BenchError(f"{label}: run {record.get('status')}: {record.get('message')}; log: {log}")
            results_path = folders[0] / "01-build" / "run_results.json"
            parse = str(record["steps"][0].get("parse") or "")  # the fast engine says how it parsed
        if not results_path.exists():
            raise BenchError(f"{label}: no run_results.json at {results_path}; log: {log}")
        results = json.loads(results_path.read_text())["results"]
        kinds = [r["unique_id"].split(".")[0] for r in results]
        expected = {"seed": 1, "model": self.models, "test": self.models}
        counts = {kind: kinds.count(kind) for kind in expected}
        bad = [r["unique_id"] for r in results if r["status"] not in ("success", "pass")]
        if counts != expected or bad or len(results) != 1 + 2 * self.models:
            raise BenchError(f"{label}: ran {counts}, expected {expected}; not ok: {bad[:5]}; log: {log}")
        # A full parse rewrites partial_parse.msgpack; a partial one with nothing changed leaves it alone.
        if not label.startswith("warmup") and (parse.startswith("full") or self._parse_state(variant) != parse_state):
            raise BenchError(f"{label}: dbt parsed the project in full, which the others may not; log: {log}")

    def _parse_state(self, variant: str) -> int | None:
        """mtime of the variant's partial_parse.msgpack (plain dbt: target/, dbtflow: target/<target>/)."""
        target = self.project / "target" if variant == "plain" else self.project / "target" / TARGET
        with contextlib.suppress(FileNotFoundError):
            return (target / "partial_parse.msgpack").stat().st_mtime_ns
        return None


class _ChildWatcher:
    """Samples the child's children (4 Hz) and kills the child after CHILD_TIMEOUT_S."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.spawned: list[str] = []
        self.timed_out = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not self._done.wait(0.25):
            if time.monotonic() > deadline:
                self.timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return
            for pid in _children(self.pid):
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if cmd.strip() and cmd not in self.spawned:
                        self.spawned.append(cmd.strip())


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(task.path, "children").read_text().split()]
    return found


# --- 4. the report ---------------------------------------------------------------------------


def print_table(variant: str, samples: list[Sample]) -> None:
    print(f"\n{variant}")
    print(f"  {'round':>5}  {'wall_s':>8}  {'cpu_s':>8}  {'rss_mib':>8}  {'srv_cpu_s':>9}")
    for i, s in enumerate(samples, 1):
        print(f"  {i:>5}  {s.wall_s:>8.2f}  {s.cpu_s:>8.2f}  {s.rss_mib:>8.1f}  {s.server_cpu_s:>9.2f}")
    med = [statistics.median(getattr(s, a) for s in samples) for a in ("wall_s", "cpu_s", "rss_mib", "server_cpu_s")]
    print(f"  {'med':>5}  {med[0]:>8.2f}  {med[1]:>8.2f}  {med[2]:>8.1f}  {med[3]:>9.2f}")
    spawned = sorted({cmd for s in samples for cmd in s.spawned})
    for cmd in spawned:
        print(f"  spawned a child process: {cmd[:200]}")


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples) if samples else math.nan


def result_line(models: int, shape: str, samples: dict[str, list[Sample]]) -> str:
    plain, fast, pdbt = (median(samples[v], "wall_s") for v in VARIANTS)
    rss_ratio = median(samples["fast"], "rss_mib") / median(samples["plain"], "rss_mib")
    return (
        f"RESULT models={models} shape={shape} plain_s={plain:.2f} fast_s={fast:.2f} prefectdbt_s={pdbt:.2f} "
        f"fast_ratio={fast / plain:.3f} prefectdbt_ratio={pdbt / plain:.3f} fast_rss_ratio={rss_ratio:.3f}"
    )


def print_profile(bench: Bench) -> None:
    out = bench.tmp / "fast.prof"
    argv = [str(BIN / "python"), "-m", "cProfile", "-o", str(out), "-m", "dbtflow.cli", *bench.command("fast")[1:]]
    sample = bench.run("fast", "profile-fast", argv)
    print(f"\ncProfile of one `fast` run ({sample.wall_s:.2f} s under the profiler; main thread only): {out}")
    pstats.Stats(str(out), stream=sys.stdout).sort_stats("cumulative").print_stats(25)


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=int, default=200, help="table models (and not_null tests); default 200")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds per variant; default 3")
    parser.add_argument(
        "--shape", choices=("layered", "fanout", "fanin"), default="layered", help="the DAG; default layered"
    )
    parser.add_argument("--skip-prefect-dbt", action="store_true", help="do not run the (slow) prefect-dbt engine")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (project, logs, runs)")
    parser.add_argument("--profile", action="store_true", help="also run `fast` once under cProfile")
    args = parser.parse_args()
    if args.models < 1 or args.repeat < 1:
        parser.error("--models and --repeat must be at least 1")
    for tool in ("dbt", "dbtflow", "prefect", "python"):
        if not (BIN / tool).exists():
            parser.error(f"{BIN / tool} not found: run `make install` first")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # so that the finally blocks stop the child and the server

    signal.signal(signal.SIGTERM, on_sigterm)
    variants = [v for v in VARIANTS if not (args.skip_prefect_dbt and v == "prefectdbt")]
    with bench_folder("dbtflow-bench-", args.keep) as tmp:
        project = tmp / "project"
        write_project(project, args.models, args.shape)
        print(f"project: 1 seed, {args.models} models ({args.shape}), {args.models} tests, threads {THREADS}")
        with prefect_server(tmp / "prefect-server") as (url, pgid):
            print(f"prefect server: {url}")
            bench = Bench(tmp, project, args.models, url, pgid)
            print("warm-up: dbt parse, then one untimed run per variant")
            bench.run("plain", "warmup-parse", [str(BIN / "dbt"), "parse", *bench.command("plain")[2:]], check=False)
            for variant in variants:
                bench.run(variant, f"warmup-{variant}")
            samples: dict[str, list[Sample]] = {v: [] for v in VARIANTS}
            for round_ in range(args.repeat):
                shift = round_ % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    sample = bench.run(variant, f"{variant}-{round_ + 1}")
                    samples[variant].append(sample)
                    print(f"  round {round_ + 1} {variant:<10} {sample.wall_s:7.2f} s  {sample.rss_mib:7.1f} MiB")
            if args.profile:
                print_profile(bench)
        for variant in variants:
            print_table(variant, samples[variant])
        print(result_line(args.models, args.shape, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
