"""Grade a generated class and measure the throughput of ``cnncheck grade``.

The class is made from the test corpus (``tests/corpus/manifest.json``): its
correct modules and its single-bug ones, drawn in a fixed shuffled order and
repeated until there are ``--count`` submissions, each a file of its own
(``student_000.py``...) with a line of its own so that no two are the same
file.  The script then runs::

    cnncheck grade CLASS --jobs N --layers affine,relu,conv,pool --output grades.json --format plain

and reports the wall time, submissions per minute, the load average before
and after, and how the outcomes and points came out; then it runs the same
command again with ``--resume`` (every submission already graded: nothing
but reading back) and reports that time too.

    python benchmarks/grade_class.py                      # 200 submissions, --jobs = cores
    python benchmarks/grade_class.py --count 20 --quick   # a quick look
    python benchmarks/grade_class.py --keep /tmp/class    # keep the class and grades.json

With ``--interrupt SECONDS`` the first run is stopped with Ctrl-C (SIGINT)
after that many seconds, and the ``--resume`` run grades the rest: the
figure then says how many submissions each run graded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
LAYERS = "affine,relu,conv,pool"


def generate(folder: Path, count: int, seed: int = 0) -> dict:
    """Write ``count`` submissions into ``folder``; ``{"correct": n, "broken": n}``."""
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    pool = [("correct", name) for name in sorted(manifest["correct"])]
    pool += [("broken", name) for name in sorted(manifest["broken"])]
    random.Random(seed).shuffle(pool)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = {"correct": 0, "broken": 0}
    for number in range(count):
        kind, name = pool[number % len(pool)]
        text = (CORPUS / kind / name).read_text()
        (folder / f"student_{number:03d}.py").write_text(f"{text}\n# student {number:03d}, from {kind}/{name}\n")
        kinds[kind] += 1
    return kinds


def run(command: list, interrupt: float | None = None) -> tuple:
    """Run ``command``; (exit status, seconds, load average before, after)."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if interrupt is not None:
        try:
            proc.wait(timeout=interrupt)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1, 130):
        sys.stderr.write(err)
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}")
    return proc.returncode, seconds, before, os.getloadavg()[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="submissions in the class [200]")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="--jobs of grade [the cores]")
    parser.add_argument("--quick", action="store_true", help="grade at the notebook's geometry only")
    parser.add_argument("--timeout", type=float, default=30.0, help="--timeout of grade [30]")
    parser.add_argument("--seed", type=int, default=1, help="--seed of grade [1]")
    parser.add_argument("--interrupt", type=float, default=None, metavar="SECONDS",
                        help="stop the first run after SECONDS with Ctrl-C; --resume grades the rest")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="make the class in DIR and keep it with grades.json")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="cnncheck-class-"))
    folder = work / "class"
    if folder.exists():
        shutil.rmtree(folder)
    kinds = generate(folder, args.count)
    grades = work / "grades.json"
    for stale in (grades, Path(f"{grades}.partial")):
        if stale.exists():
            stale.unlink()
    command = [sys.executable, "-m", "cnncheck", "grade", str(folder), "--jobs", str(args.jobs), "--layers", LAYERS,
               "--timeout", str(args.timeout), "--seed", str(args.seed), "--output", str(grades), "--format", "plain"]
    if args.quick:
        command.append("--quick")
    status, seconds, load_before, load_after = run(command, args.interrupt)
    first = json.loads(grades.read_text())
    graded_first = len(first["submissions"])
    status2, resumed, _, load_end = run(command + ["--resume"])
    document = json.loads(grades.read_text())
    subs = document["submissions"]
    outcomes: dict = {}
    for sub in subs:
        outcomes[sub["outcome"]] = outcomes.get(sub["outcome"], 0) + 1
    slowest = max(subs, key=lambda s: s["seconds"])
    figures = {
        "submissions": len(subs), "correct": kinds["correct"], "broken": kinds["broken"], "jobs": args.jobs,
        "cores": os.cpu_count(), "quick": args.quick, "layers": LAYERS,
        "first_run": {"exit": status, "seconds": round(seconds, 1), "graded": graded_first,
                      "per_minute": round(graded_first / seconds * 60, 1) if seconds else None,
                      "load_before": round(load_before, 2), "load_after": round(load_after, 2)},
        "resume_run": {"exit": status2, "seconds": round(resumed, 1), "graded": len(subs) - graded_first,
                       "load_after": round(load_end, 2)},
        "submission_seconds": {"sum": round(sum(s["seconds"] for s in subs), 1),
                               "mean": round(sum(s["seconds"] for s in subs) / len(subs), 2),
                               "slowest": [slowest["name"], round(slowest["seconds"], 1)]},
        "outcomes": outcomes,
        "mean_points": document["summary"]["mean_points"], "max_points": document["max_points"],
    }
    print(f"{len(subs)} submissions ({kinds['correct']} correct, {kinds['broken']} broken), --jobs {args.jobs} on "
          f"{os.cpu_count()} cores{' --quick' if args.quick else ''}:")
    run1 = figures["first_run"]
    print(f"  graded {run1['graded']} in {run1['seconds']} s: {run1['per_minute']} submissions per minute "
          f"(load average {run1['load_before']} before, {run1['load_after']} after)")
    print(f"  sum of the submissions' own times {figures['submission_seconds']['sum']} s, mean "
          f"{figures['submission_seconds']['mean']} s, slowest {slowest['name']} "
          f"{figures['submission_seconds']['slowest'][1]} s")
    print(f"  --resume: {figures['resume_run']['graded']} graded, {figures['resume_run']['seconds']} s")
    print(f"  outcomes {outcomes}; mean {figures['mean_points']} of {figures['max_points']} points")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
