"""A fake SLURM for tests: ``sbatch``, ``srun``, ``squeue``, ``sacct``, ``sinfo``, ``scontrol``, ``scancel``.

The test copies this file (standard library only) under each command's name into a folder on
``PATH``; the name it is called by picks the command. Every call appends its argument vector
and standard input to ``$FAKE_SLURM_DIR/calls.jsonl``. ``sbatch`` runs the submitted command on
this machine in a detached process (as SLURM would on a node) and reports the job's state
through ``sacct``/``squeue`` in the formats snakemake-executor-plugin-slurm parses:
``PENDING`` on submission, ``RUNNING`` while it runs, then ``COMPLETED`` or ``FAILED``.
With ``FAKE_SLURM_RUN=0`` jobs are recorded but not run and end ``FAILED`` at once (for
checking what a submission asks for without running it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

RUN_FLAG = "--fake-slurm-run-job"


def _state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise updates of the shared files (sbatch is called from several threads)."""
    with (_state_dir() / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record(command: str, argv: list[str], stdin: str) -> None:
    line = json.dumps({"cmd": command, "argv": argv, "stdin": stdin})
    with _locked(), (_state_dir() / "calls.jsonl").open("a") as fh:
        fh.write(line + "\n")


def _job_file(job_id: str) -> Path:
    return _state_dir() / "jobs" / f"{job_id}.json"


def _read_job(job_id: str) -> dict:
    return json.loads(_job_file(job_id).read_text())


def _write_job(job: dict) -> None:
    # Atomic replace: sacct may read while the runner updates the state.
    path = _job_file(job["id"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    tmp.replace(path)


def _jobs() -> list[dict]:
    folder = _state_dir() / "jobs"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _option(argv: list[str], *names: str) -> str | None:
    """Value of an option given as ``--name value``, ``--name=value`` or ``-n value``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def sbatch(argv: list[str], stdin: str) -> int:
    wrap = _option(argv, "--wrap")
    script = stdin if argv and argv[-1] == "/dev/stdin" else None
    if wrap is None and script is None:
        print("sbatch: error: no --wrap and no script on stdin", file=sys.stderr)
        return 1
    with _locked():
        counter = _state_dir() / "next_id"
        job_id = str(int(counter.read_text()) if counter.exists() else 1001)
        counter.write_text(str(int(job_id) + 1))
    gpus = _option(argv, "--gpus")
    gres = _option(argv, "--gres")
    job = {
        "id": job_id,
        "name": _option(argv, "--job-name", "-J") or "",
        "comment": _option(argv, "--comment") or "",
        "output": (_option(argv, "--output", "-o") or "slurm-%j.out").replace("%j", job_id),
        "workdir": _option(argv, "-D", "--chdir") or os.getcwd(),
        "command": wrap if wrap is not None else script,
        "cpus": _option(argv, "--cpus-per-task", "-c") or "1",
        "gpus": gpus or (gres.rsplit(":", 1)[-1] if gres and gres.startswith("gpu") else None),
        "state": "PENDING",
        "pid": None,
    }
    if os.environ.get("FAKE_SLURM_RUN", "1") == "0":
        job["state"] = "FAILED"
        _write_job(job)
    else:
        _write_job(job)
        # Detached like a batch job: its own session, so scancel can end the whole tree.
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), RUN_FLAG, job_id],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(job_id)  # --parsable: the job id alone
    return 0


def run_job(job_id: str) -> int:
    """The detached body of a batch job: run its command, then record the final state."""
    job = _read_job(job_id)
    env = {
        **os.environ,
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": job["name"],
        "SLURM_CPUS_PER_TASK": job["cpus"],
        "SLURM_SUBMIT_DIR": job["workdir"],
    }
    if job["gpus"]:
        env["SLURM_GPUS"] = job["gpus"]
    Path(job["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(job["output"], "w") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job["command"]],
            cwd=job["workdir"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        with _locked():
            job = {**_read_job(job_id), "state": "RUNNING", "pid": os.getpid()}
            _write_job(job)
        code = proc.wait()
    with _locked():
        job = _read_job(job_id)
        if job["state"] != "CANCELLED":
            job["state"] = "COMPLETED" if code == 0 else "FAILED"
            job["exit_code"] = code
            _write_job(job)
    return 0


def srun(argv: list[str], stdin: str) -> int:
    # Job-step options come first (``-n1``, ``--cpus-per-task=2``, ``--gpus=1``, ...); the
    # command starts at the first word that is not an option.
    takes_value = {"-n", "-c", "-N", "-J", "--jobid", "--ntasks", "--nodes"}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in takes_value else 1
    command = argv[i:]
    if not command:
        print("srun: error: no command", file=sys.stderr)
        return 1
    if command == ["sh", "-s"]:
        return subprocess.run(["/bin/sh", "-s"], input=stdin, text=True).returncode
    return subprocess.run(command).returncode


FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")


def _status_lines(argv: list[str], fmt: str) -> list[str]:
    """States of the jobs named ``--name``, answered when there is news.

    The plugin polls at growing intervals (+10 s after every query that finds no finished
    job), which would make a test wait mostly on its own schedule. So the query waits (at most
    ``FAKE_SLURM_WAIT`` seconds, default 30, under the plugin's 60 s timeout) until a job has
    ended that no earlier query reported: as if each poll came just after a job finished.
    Jobs still running are reported as such, so the plugin's handling of them is exercised.
    """
    import time

    name = _option(argv, "--name")
    deadline = time.monotonic() + float(os.environ.get("FAKE_SLURM_WAIT", "30"))
    seen_path = _state_dir() / "reported_final.json"
    while True:
        jobs = [job for job in _jobs() if name is None or job["name"] == name]
        with _locked():
            seen = set(json.loads(seen_path.read_text())) if seen_path.exists() else set()
            final = {job["id"] for job in jobs if job["state"] in FINAL_STATES}
            news = final - seen
            active = len(final) < len(jobs)
            if news or not active or time.monotonic() > deadline:
                seen_path.write_text(json.dumps(sorted(seen | final)))
                break
        time.sleep(0.1)
    return [fmt.format(id=job["id"], state=job["state"]) for job in jobs]


def sacct(argv: list[str]) -> int:
    fmt = _option(argv, "--format", "-o") or ""
    if fmt.lower().startswith("jobidraw,state"):
        print("\n".join(_status_lines(argv, "{id}|{state}")))
    elif fmt.lower().startswith("nodelist"):
        print("localhost")
    # Account guesses (``-o Account``) and failure reasons (``--format=Reason``): nothing known.
    return 0


def squeue(argv: list[str]) -> int:
    print("\n".join(_status_lines(argv, "{id}|{state}")))
    return 0


def scancel(argv: list[str]) -> int:
    for job_id in (a for a in argv if a.isdigit()):
        with _locked():
            job = _read_job(job_id)
            job["state"] = "CANCELLED"
            _write_job(job)
        if job.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job["pid"], signal.SIGTERM)
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == RUN_FLAG:
        return run_job(sys.argv[2])
    command = Path(sys.argv[0]).name
    argv = sys.argv[1:]
    # Standard input is read only where SLURM reads it: a script given as /dev/stdin to sbatch,
    # or `srun ... sh -s`; any other command must not wait on an inherited open pipe.
    reads_stdin = (command == "sbatch" and argv[-1:] == ["/dev/stdin"]) or (
        command == "srun" and argv[-2:] == ["sh", "-s"]
    )
    stdin = sys.stdin.read() if reads_stdin else ""
    _record(command, argv, stdin)
    if command == "sbatch":
        return sbatch(argv, stdin)
    if command == "srun":
        return srun(argv, stdin)
    if command == "sacct":
        return sacct(argv)
    if command == "squeue":
        return squeue(argv)
    if command == "sinfo":
        print("PARTITION\ncpu*\ngpu")  # `sinfo -o %P`: the default partition is starred
        return 0
    if command == "scontrol":
        print("MinJobAge               = 300 sec\nMaxArraySize            = 1001")
        return 0
    if command == "scancel":
        return scancel(argv)
    print(f"fake slurm: unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
