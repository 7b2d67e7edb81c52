"""What the README's first command costs over plain dbt: `make run` (first and later) vs `dbt build`.

What it measures
- The tenant (tenants/dbt_williamgrant, target `local`, DuckDB) in a copy of this checkout
  (Makefile, scripts, pyproject.toml, uv.lock, the tenant without its build outputs; .venv linked),
  with `make run`'s Prefect server home in the temp folder and a free loopback port, so a
  developer's own `make run` server and folders are never touched.
- `first`: the first `make run` (it starts the background server, waits for its health, then runs;
  dbtflow's parse state in target/local/ is cold, so the parse is full), once.
- then `--repeat` interleaved rounds of `plain` (`dbt build --target local` in the tenant's folder,
  no Prefect) and `second` (a later `make run`: the server is up and reused), rotated each round.
- Per child: wall time (perf_counter around Popen .. wait4, so make, Python start-up and imports
  count, as a user sees them), CPU seconds and peak RSS (the max over the child and what it waited
  for) from wait4's rusage.
- The last line is `RESULT make_run plain_s=... first_s=... second_s=... first_ratio=...
  second_ratio=... second_rss_ratio=...`: medians, ratios against plain dbt in the same run.

How
- One untimed plain `dbt build` first (its partial-parse state in target/, so plain parses
  partially as `second` does in target/local/). Every child must exit 0; a `make run` must say
  `completed` and plain dbt's run_results must hold 139 results, none an error: a failed run is
  never reported as a speed-up. `make stop` at the end, also on an error or Ctrl-C.
- After each child the script waits (at most 30 s) for the server to go idle (it handles the
  run's events after the run exits), so one run's backlog does not slow the next child.

Pitfalls
- On a shared 2-core machine other load moves every number: compare medians and the ratios
  of one run, and say how loaded the machine was (the script prints the load average).
- `first` also pays the server's start (~20 s here) and a full parse; it is one sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from overhead import BenchError, bench_folder, free_port, group_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
TENANT = "dbt_williamgrant"
RESULTS = 139  # what `dbt build` of the tenant runs (PASS 136, WARN 1, NO-OP 2)
SETTLE_TIMEOUT_S = 30


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    rss_mib: float


def copy_checkout(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, root / name)  # mtimes kept: .venv/.synced stays newer, make does not re-sync
    shutil.copytree(ROOT / "scripts", root / "scripts")
    shutil.copytree(ROOT / "tenants" / TENANT, root / "tenants" / TENANT, ignore=_build_outputs)
    (root / ".venv").symlink_to(ROOT / ".venv")
    return root


def _build_outputs(folder: str, names: list[str]) -> set[str]:
    """target/, logs/ and the DuckDB files in .duckdb/ (the folder itself and its .gitignore stay)."""
    if Path(folder).name == ".duckdb":
        return {n for n in names if n != ".gitignore"}
    return {n for n in names if n in ("target", "logs")}


class MakeRunBench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.checkout = copy_checkout(tmp / "checkout")
        self.tenant = self.checkout / "tenants" / TENANT
        self.home = tmp / "prefect-home"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBTFLOW_", "DBT_", "MAKE"))}
        env.update(
            DBTFLOW_SERVER_HOME=str(self.home),
            DBTFLOW_SERVER_PORT=str(self.port),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            DO_NOT_TRACK="1",
        )
        self.env = env
        (tmp / "logs").mkdir()

    def command(self, variant: str) -> tuple[list[str], Path]:
        if variant == "plain":
            dbt = str(ROOT / ".venv" / "bin" / "dbt")
            return [dbt, "build", "--target", "local", "--profiles-dir", "."], self.tenant
        return ["make", "-s", "run"], self.checkout

    def run(self, variant: str, label: str) -> Sample:
        argv, cwd = self.command(variant)
        log = self.tmp / "logs" / f"{label}.log"
        (self.tenant / "target" / "run_results.json").unlink(missing_ok=True)
        with log.open("w") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=out, stderr=out)
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise BenchError(f"{label}: exit code {os.waitstatus_to_exitcode(status)}; log: {log}")
        self._check(variant, label, log)
        self._settle()
        return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)

    def _check(self, variant: str, label: str, log: Path) -> None:
        if variant != "plain":
            if "\ncompleted: " not in log.read_text():
                raise BenchError(f"{label}: the run did not say completed; log: {log}")
            return
        results = json.loads((self.tenant / "target" / "run_results.json").read_text())["results"]
        bad = [r["unique_id"] for r in results if r["status"] in ("error", "fail", "skipped")]
        if len(results) != RESULTS or bad:
            raise BenchError(f"{label}: {len(results)} results (expected {RESULTS}), not ok: {bad[:5]}; log: {log}")

    def _settle(self) -> None:
        """Wait until the server's process group uses < 10 % of a core over 0.5 s."""
        with contextlib.suppress(OSError, ValueError):
            pgid = os.getpgid(int((self.home / "server.pid").read_text()))
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            before = group_cpu_seconds(pgid)
            while time.monotonic() < deadline:
                time.sleep(0.5)
                now = group_cpu_seconds(pgid)
                if now - before < 0.05:
                    return
                before = now

    def stop(self) -> None:
        subprocess.run(["make", "-s", "stop"], cwd=self.checkout, env=self.env, capture_output=True, timeout=120)


def med(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds of plain and second; default 5")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (checkout, logs, server home)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not (ROOT / ".venv" / "bin" / "dbtflow").exists():
        parser.error("no .venv: run `make install` first")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with bench_folder("dbtflow-bench-make-run-", args.keep) as tmp:
        bench = MakeRunBench(tmp)
        try:
            bench.run("plain", "warmup-plain")
            first = bench.run("second", "first")
            print(f"  first  make run {first.wall_s:7.2f} s  {first.rss_mib:7.1f} MiB (server start + full parse)")
            samples: dict[str, list[Sample]] = {"plain": [], "second": []}
            for round_ in range(args.repeat):
                order = ["plain", "second"] if round_ % 2 == 0 else ["second", "plain"]
                for variant in order:
                    sample = bench.run(variant, f"{variant}-{round_ + 1}")
                    samples[variant].append(sample)
                    print(f"  round {round_ + 1} {variant:<7} {sample.wall_s:7.2f} s  {sample.rss_mib:7.1f} MiB")
        finally:
            bench.stop()
        plain, second = med(samples["plain"], "wall_s"), med(samples["second"], "wall_s")
        rss = med(samples["second"], "rss_mib") / med(samples["plain"], "rss_mib")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(
            f"RESULT make_run plain_s={plain:.2f} first_s={first.wall_s:.2f} second_s={second:.2f} "
            f"first_ratio={first.wall_s / plain:.3f} second_ratio={second / plain:.3f} second_rss_ratio={rss:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
