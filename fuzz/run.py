"""Run the fuzz targets: short (the test command does this), long (on demand), or one target.

    .venv/bin/python fuzz/run.py                   # every target, 1M executions each (long)
    .venv/bin/python fuzz/run.py --runs 5000       # every target briefly
    .venv/bin/python fuzz/run.py snp_report --runs 200000 --max-time 600
    .venv/bin/python fuzz/run.py --output json     # figures for FUZZING.md

Each target runs as its own atheris process, one after the other (this machine has two cores),
started from its seeds (real evidence from ``../shared/vectors`` where present) and its committed
regressions in ``fuzz/corpus/<target>/``. New interesting inputs go to a scratch directory that is
thrown away; a finding is written to ``--artifacts`` (default ``fuzz/findings/``, not committed)
as ``crash-<sha1>`` and the run reports it. A finding worth keeping is minimized
(``python fuzz/harness.py NAME -minimize_crash=1 -runs=10000 FILE``), fixed, and committed to the
corpus so that ``fuzz/test_fuzz.py`` replays it forever.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR))

import fuzzsupport  # noqa: E402

LONG_RUNS = 1_000_000
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class TargetResult:
    target: str
    executions: int
    seconds: float
    findings: list[str]
    exit_code: int
    # The tail of libFuzzer's output when the run did not end normally.
    detail: str = ""


def write_seeds(name: str, directory: Path) -> int:
    """Seed inputs of one target as files (content-addressed) in ``directory``."""
    # Seeds are produced in a child: importing a target (and the project) in this process is
    # avoided so that the runner itself stays independent of what it runs.
    code = (
        "import sys, hashlib, pathlib; sys.path.insert(0, sys.argv[1]); import fuzzsupport;"
        "d = pathlib.Path(sys.argv[3]); n = 0\n"
        "for s in fuzzsupport.seeds_of(fuzzsupport.load_target(sys.argv[2])):\n"
        "    (d / hashlib.sha1(s).hexdigest()).write_bytes(s); n += 1\n"
        "print(n)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(FUZZ_DIR), name, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(out.stdout.strip() or 0)


def run_target(
    name: str, *, runs: int, max_time: int, artifacts: Path, per_input_timeout: int = 10
) -> TargetResult:
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        work = Path(scratch) / "work"
        seeds = Path(scratch) / "seeds"
        work.mkdir()
        seeds.mkdir()
        write_seeds(name, seeds)
        corpora = [str(work), str(seeds)]
        regressions = fuzzsupport.CORPUS_DIR / name
        if regressions.is_dir():
            corpora.append(str(regressions))
        before = set(artifacts.iterdir())
        argv = [
            sys.executable,
            str(FUZZ_DIR / "harness.py"),
            name,
            *corpora,
            f"-runs={runs}",
            f"-max_total_time={max_time}",
            f"-timeout={per_input_timeout}",
            "-rss_limit_mb=2048",
            "-max_len=65536",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
        ]
        started = time.monotonic()
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=max_time + 600,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        elapsed = time.monotonic() - started
    output = proc.stderr + proc.stdout
    executions = 0
    if m := _DONE.search(output):
        executions = int(m.group(1))
    elif statuses := _STATUS.findall(output):
        executions = int(statuses[-1])
    findings = sorted(str(p) for p in set(artifacts.iterdir()) - before)
    detail = "" if proc.returncode == 0 else "\n".join(output.strip().splitlines()[-40:])
    return TargetResult(name, executions, round(elapsed, 1), findings, proc.returncode, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--runs", type=int, default=LONG_RUNS, help="executions per target")
    parser.add_argument("--max-time", type=int, default=3600, help="seconds per target at most")
    parser.add_argument("--artifacts", type=Path, default=FUZZ_DIR / "findings")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)
    names = fuzzsupport.target_names()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.targets) - set(names))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(names)}")
    results = []
    for name in args.targets or names:
        result = run_target(name, runs=args.runs, max_time=args.max_time, artifacts=args.artifacts)
        results.append(result)
        if args.output == "text":
            verdict = "ok" if result.exit_code == 0 and not result.findings else "FINDING"
            print(
                f"{name:28} {result.executions:>9} runs {result.seconds:>8.1f} s  {verdict}",
                flush=True,
            )
            for finding in result.findings:
                print(f"    {finding}", flush=True)
            if result.detail and verdict != "ok":
                print("    " + result.detail.replace("\n", "\n    "), flush=True)
    if args.output == "json":
        print(json.dumps([asdict(r) for r in results], indent=2))
    failed = [r for r in results if r.exit_code != 0 or r.findings]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
