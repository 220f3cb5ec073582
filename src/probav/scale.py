"""What the pipeline costs at the archive's size: every stage timed, its memory and disk measured.

``python -m probav.scale`` (``make scale``) runs the whole pipeline twice from scratch, each time in a
fresh clone of this repository's last commit: once with the default params and once with a profile
(``profiles/archive-cpu.yaml``: the simulator's ``large`` profile, the official archive's 1450 scenes,
training capped at the default's steps). Stage by stage (``dvc repro -s``, in DVC's order) it records:

- ``seconds``: wall-clock time of the stage;
- ``peak_rss_mb``: the stage's peak resident memory, all its processes together (worker pools
  included), sampled from /proc every ``interval`` seconds; ``peak_process_rss_mb``: the largest
  single process (its ``VmHWM``, the kernel's high-water mark of that process since its ``exec``, read
  at each sample: unlike ``wait4``'s ``ru_maxrss`` it does not count the forking parent's image);
- ``disk_mb``: what the stage added to the clone (its outputs, and DVC's cache of them: links to the same
  files with .dvc/config's ``cache.type``, counted once; not known for an in-place run, whose forced
  stages replace outputs already there);
- ``load_average``: the machine's 1-minute load before and after (other work slows a stage down).

and writes ``metrics/scale.json``: both runs, and per stage the growth from the default size to the
archive's (``time_ratio`` against ``scene_ratio``; ``relative`` = their quotient: 1 grows like the
scenes, above 1 worse than linear, below 1 fixed costs dominate). The JSON is rewritten after every
stage, so an interrupted run keeps what it measured. The clones see ``../shared`` as this repository
does, so the real-scene stages run as in ``make repro``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

VERSION = 1
MB = 1e6


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """Resident memory of ``root``'s process tree now, and the largest high-water mark of one of them (MB)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = largest = 0
    for pid in _descendants(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):   # "VmHWM:   123456 kB"
                largest = max(largest, int(line.split()[1]) * 1024)
    return total / MB, largest / MB


def measure_command(cmd: list[str], cwd: Path, env: dict, log_path: Path, interval: float = 0.5) -> dict:
    """Run ``cmd``; its wall time, exit status, peak memory of its process tree and of its largest process."""
    with open(log_path, "ab") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = [0.0, 0.0]
        done = threading.Event()

        def sample():
            # First at once, then every ``interval``, so that a command shorter than the interval is
            # measured too. (Popen returns after the child's exec, so even the first reading is the
            # command's own memory, not the image of this process that forked it.)
            while True:
                tree, largest = _tree_rss_mb(proc.pid)
                peak[0], peak[1] = max(peak[0], tree), max(peak[1], largest)
                if done.wait(interval):
                    break

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status = os.waitpid(proc.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "returncode": proc.returncode, "peak_rss_mb": peak[0] or None,
            "peak_process_rss_mb": peak[1] or None}


def disk_mb(root: Path, skip: tuple[str, ...] = (".git", ".venv")) -> float:
    """Bytes under ``root`` (files counted once: hard links and DVC's links to its cache are not doubled)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total / MB


def stage_order(clone: Path) -> list[str]:
    """The stages of the clone's ``dvc.yaml`` in the order ``dvc repro`` runs them."""
    from dvc.repo import Repo

    with Repo(str(clone)) as repo:
        root = (Path(clone) / "dvc.yaml").resolve()  # dvc repro's own pipeline: not studies/ or bench/
        stages = [s for s in repo.index.stages if Path(s.dvcfile.path).resolve() == root]
        try:
            from dvc.repo.reproduce import plan_repro  # DVC's own plan (dependencies first)
            planned = plan_repro(repo.index.graph, stages)
        except ImportError:  # an older or newer DVC: any order with dependencies first
            import networkx as nx
            planned = [s for s in reversed(list(nx.topological_sort(repo.index.graph))) if s in stages]
        return [s.name for s in planned]


def persist_outputs(clone: Path) -> dict[str, list[Path]]:
    """The outputs dvc.yaml marks ``persist: true``, by stage name: DVC leaves them in place even for
    ``dvc repro -f``, so that their stages resume (download, tfrecords)."""
    from dvc.repo import Repo

    with Repo(str(clone)) as repo:
        return {s.name: [Path(o.fs_path) for o in s.outs if o.persist] for s in repo.index.stages
                if any(o.persist for o in s.outs)}


def make_clone(repo: Path, clone: Path, overrides: dict | None) -> None:
    """A fresh clone of ``repo``'s last commit at ``clone``, with ``../shared`` as ``repo`` sees it and
    the profile's ``overrides`` written into its params.yaml."""
    from probav.profiles import apply_profile

    if clone.exists():
        shutil.rmtree(clone)
    clone.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    shared = (repo / ".." / "shared").resolve()
    if shared.is_dir() and not (clone.parent / "shared").exists():
        (clone.parent / "shared").symlink_to(shared)
    if overrides:
        params_path = clone / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params_path.write_text(yaml.safe_dump(apply_profile(params, overrides), sort_keys=False))


def scene_count(clone: Path) -> int | None:
    index = clone / "data" / "scenes.csv"
    if not index.is_file():
        return None
    return max(sum(1 for _ in index.open()) - 1, 0)


def run_pipeline(repo: Path, name: str, overrides: dict | None, work: Path | None, on_stage=None,
                 log=print) -> dict:
    """The pipeline from scratch in a clone (``work/name``), stage by stage, measured (see the module
    docstring). ``work`` None: in ``repo`` itself, every stage forced (``dvc repro -s -f``) and its
    ``persist`` outputs deleted first, so the measured run is also the repository's own ``dvc repro`` from
    scratch (no profile then)."""
    in_place = work is None
    if in_place and overrides:
        raise ValueError("an in-place run takes params.yaml as it is: no profile")
    clone = repo if in_place else work / name
    if not in_place:
        make_clone(repo, clone, overrides)
    env = dict(os.environ, PYTHONPATH=str(clone / "src"), TF_CPP_MIN_LOG_LEVEL="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    stages = stage_order(clone)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=clone).stdout.strip()
    log_path = Path(tempfile.gettempdir()) / f"scale-{name}.log" if in_place else clone / "scale.log"
    run = {"profile": overrides or {}, "stages": {}, "order": stages, "log": str(log_path), "commit": commit,
           "in_place": in_place}
    # In place, a forced stage must start from nothing: the outputs DVC keeps (persist) are deleted first,
    # or a resumable stage would reuse its earlier work instead of doing what is measured.
    persist = persist_outputs(clone) if in_place else {}
    disk_before = disk_mb(clone)
    start = time.perf_counter()
    for stage in stages:
        if log:
            log(f"scale [{name}]: {stage} …")
        for path in persist.get(stage, []):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        load_before = os.getloadavg()[0]
        # Forced, and not restored from DVC's run cache: either would skip the work being measured. In a
        # fresh clone too: outputs tracked in git (metrics with cache: false) come with the clone and, with
        # the committed dvc.lock, make DVC skip a stage whose dependencies hash the same as committed.
        row = measure_command(["dvc", "repro", "-s", "-f", "--no-run-cache", stage], clone, env, log_path)
        row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # 1-min, before and after
        disk_after = disk_mb(clone)
        # In place, a forced stage replaces outputs that were already there: what it adds is not known.
        row["disk_mb"] = None if in_place else disk_after - disk_before
        disk_before = disk_after
        run["stages"][stage] = row
        run["scenes"] = scene_count(clone)
        run["seconds"] = time.perf_counter() - start
        run["disk_mb"] = disk_after
        if log:
            disk = "" if row["disk_mb"] is None else f", +{row['disk_mb']:.0f} MB on disk"
            log(f"  {row['seconds']:.0f} s, {row['peak_rss_mb'] or 0:.0f} MB{disk}")
        if on_stage:
            on_stage(run)
        if row["returncode"] != 0:
            run["failed"] = f"{stage} exited with status {row['returncode']} (see {run['log']})"
            break
    run["breakdown_mb"] = {part: disk_mb(clone / part) for part in ("data/raw", "data/tfrecords", "models", ".dvc/cache")
                           if (clone / part).exists()}
    return run


def growth(small: dict, large: dict) -> dict:
    """Per stage: time and memory at the large size over the small, against the ratio of scenes."""
    if not small.get("scenes") or not large.get("scenes"):
        return {}
    scene_ratio = large["scenes"] / small["scenes"]
    out = {}
    for stage, row in large["stages"].items():
        base = small["stages"].get(stage)
        if not base or base["seconds"] <= 0:
            continue
        ratio = row["seconds"] / base["seconds"]
        out[stage] = {"time_ratio": ratio, "scene_ratio": scene_ratio, "relative": ratio / scene_ratio,
                      "memory_ratio": (row["peak_rss_mb"] / base["peak_rss_mb"])
                      if row.get("peak_rss_mb") and base.get("peak_rss_mb") else None}
    return out


README_MARKERS = ("<!-- scale:start -->", "<!-- scale:end -->")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def markdown_table(report: dict) -> str:
    """Per stage: time at both sizes, growth against the scenes, peak memory and disk at the archive's size."""
    runs = report.get("runs") or {}
    small, large = runs.get("default") or {}, runs.get("archive") or {}
    grow = report.get("growth") or {}
    stages = list(dict.fromkeys([*(large.get("order") or []), *(small.get("order") or [])]))
    if not stages:
        return "No stage measured yet."
    commits = {str(r.get("commit") or report.get("commit", ""))[:7] for r in (small, large) if r}
    head = (f"`make scale` at commit {' and '.join(f'`{c}`' for c in sorted(commits))} on {report.get('cpu_count')} "
            f"cores: the pipeline from scratch with {small.get('scenes', '–')} scenes (default"
            f"{', in place' if small.get('in_place') else ''}) and {large.get('scenes', '–')} "
            f"(`{report.get('profile')}`); growth = time ratio ÷ scene ratio (1: linear in the scenes, above 1: "
            "worse than linear, below 1: fixed costs dominate); memory: all of a stage's processes together.")
    lines = [head, "", "| stage | default | archive size | growth | peak memory (MB) | disk added (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for stage in stages:
        a, b, g = (small.get("stages") or {}).get(stage, {}), (large.get("stages") or {}).get(stage, {}), grow.get(stage, {})
        relative = f"{g['relative']:.2f}" if g.get("relative") is not None else "–"
        memory = f"{b['peak_rss_mb']:,.0f}" if b.get("peak_rss_mb") else "–"
        disk = f"{b['disk_mb']:,.0f}" if b.get("disk_mb") is not None else "–"
        lines.append(f"| {stage} | {_fmt_s(a.get('seconds'))} | {_fmt_s(b.get('seconds'))} | {relative} | {memory} | {disk} |")
    lines.append(f"| **all** | {_fmt_s(small.get('seconds'))} | {_fmt_s(large.get('seconds'))} | | | "
                 f"{large.get('disk_mb', 0):,.0f} in all |")
    for name, run in (("default", small), ("archive size", large)):
        if run.get("failed"):
            lines.append(f"\n{name}: stopped: {run['failed']}")
    return "\n".join(lines) + "\n"


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m probav.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="profiles/archive-cpu.yaml", help="params overrides of the large run")
    parser.add_argument("--out", default="metrics/scale.json", help="measurements (JSON, rewritten after each stage)")
    parser.add_argument("--table", default="reports/scale.md", help="markdown table of the measurements")
    parser.add_argument("--readme", default="README.md",
                        help=f"README whose block between {README_MARKERS[0]} and {README_MARKERS[1]} gets the table")
    parser.add_argument("--work", default=None, help="where the clones go (default: a temporary folder, removed after)")
    parser.add_argument("--runs", default="archive,default",
                        help="which runs: default (params.yaml as is), archive (with --profile), or both")
    parser.add_argument("--keep", action="store_true", help="keep the clones (their data, models and logs)")
    parser.add_argument("--in-place", action="store_true",
                        help="run the default size here, every stage forced, instead of in a clone: the measured "
                             "run is then also this repository's dvc repro")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from probav.profiles import load_profile

    args = parse_args(argv)
    repo = Path.cwd()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True, cwd=repo).stdout.strip():
        print("scale: note: uncommitted changes are not measured (the clones take the last commit)", file=sys.stderr)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    overrides = load_profile(args.profile, params)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - {"default", "archive"}
    if unknown:
        print(f"scale: unknown run(s) {sorted(unknown)}: choose default, archive", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.is_file() else {}
    report.update(version=VERSION, cpu_count=os.cpu_count(), profile=str(args.profile),
                  commit=subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                        cwd=repo).stdout.strip())
    report.setdefault("runs", {})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="probav-scale-"))

    def save(name: str, run: dict) -> None:
        from probav.report.readme import update_readme

        report["runs"][name] = run
        if "default" in report["runs"] and "archive" in report["runs"]:
            report["growth"] = growth(report["runs"]["default"], report["runs"]["archive"])
        write_json_atomic(out_path, report)
        table = markdown_table(report)
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.table).with_name(f".{Path(args.table).name}.tmp")
        tmp.write_text(table)
        os.replace(tmp, args.table)
        update_readme(Path(args.readme), table, README_MARKERS)

    try:
        for name in runs:
            here = args.in_place and name == "default"
            run = run_pipeline(repo, name, overrides if name == "archive" else None, None if here else work,
                               on_stage=lambda r, n=name: save(n, r),
                               log=lambda line: print(line, file=sys.stderr, flush=True))
            save(name, run)
            if "failed" in run:
                print(f"scale: {run['failed']}", file=sys.stderr)
                return 1
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"scale: wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
