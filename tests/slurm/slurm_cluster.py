"""A throw-away one-node SLURM cluster for the live-controller tests.

Debian's slurm-wlm (22.05 on bookworm) and munge, started as root by hand (no
systemd): munged (unless one already answers), slurmctld and slurmd in the
foreground as child processes of this one, so teardown stops exactly those.

* ``/etc/slurm/slurm.conf`` is written at the default path, because ``srun``
  inside a job (the plugin's job step) reads it from there, not from an exported
  ``SLURM_CONF``. An existing file that this module did not write means a real
  SLURM installation: the cluster refuses to start (the tests skip).
* select/cons_tres, proctrack/linuxproc, task/none, no cgroups, no accounting
  database (``sacct`` is unavailable; the profile uses ``squeue`` for status).
* ``GresTypes=gpu`` with ``Gres=gpu:4`` so ``--gpus`` requests are scheduled on
  this CPU-only node. A count-only gres.conf line (``Name=gpu Count=N``, no
  ``File=``) does not work in slurm 22.05: slurmd's gres/gpu plugin reports
  0 GPUs for it and slurmctld sets the node INVAL ("gres/gpu count reported
  lower than configured (0 < 2)"), while a count-only GRES of another name
  works. So the "GPUs" are symlinks to /dev/null and /dev/zero (slurmd only
  checks that they are character devices; task/none binds nothing).
* ``SlurmdParameters=config_overrides`` makes slurmd trust the configured CPUs
  and memory instead of probing hardware.
* One test cluster per machine at a time: ``/etc/slurm``, the munge socket, the
  daemons and the package install are machine-wide, so test sessions on one
  machine (parallel clones) take turns through :func:`machine_lock` (an flock on
  ``/run/lock/aeqa-slurm-tests.lock``), held from the availability check until
  the cluster has stopped. A second session waits for the first instead of
  finding its cluster running and refusing.

Run ``python tests/slurm/slurm_cluster.py`` to start one by hand (Ctrl-C stops it).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = Path("/etc/slurm")
MARKER = "# written by aeqa-nat tests/slurm/slurm_cluster.py"
PARTITION = "aeqa_test"      # the test's default partition (given through AEQA_SLURM_PARTITION)
GPU_PARTITION = "aeqa_gpu"   # a second partition on the same node, chosen per stage in the config
# More than the CI machine's 2 cores: most of a test job's time is Snakemake
# starting up and the plugin's status polling, so more jobs at once shortens
# the DAG's wall time (slurmd trusts these numbers, see config_overrides).
NODE_CPUS = 4
NODE_GPUS = 4
NODE_MEM_MB = 512000  # only an upper bound for --mem (CR_Core: memory is not consumable)
#: Machine-wide (not under /tmp: TMPDIR may differ between sessions; root only).
LOCK = Path("/run/lock/aeqa-slurm-tests.lock")
#: How long a session waits for another session's cluster (AEQA_SLURM_LOCK_WAIT, seconds).
LOCK_WAIT_S = float(os.environ.get("AEQA_SLURM_LOCK_WAIT", "3600"))
DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "munged", "munge")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 30), **kw)


@contextlib.contextmanager
def machine_lock(path: Path = LOCK, wait: float = LOCK_WAIT_S, poll: float = 1.0, say=None):
    """Hold an exclusive flock on ``path`` (waiting up to ``wait`` seconds for the
    session that holds it, then TimeoutError). The file names its holder; the lock
    goes with the process (the descriptor is not inherited by the daemons), so a
    killed session never leaves it taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is still held by {holder} after {wait:.0f} s "
                                       "(AEQA_SLURM_LOCK_WAIT sets how long to wait)") from None
                if not told and say is not None:
                    say(f"waiting for {path}, held by {holder} (another test session's SLURM cluster)")
                    told = True
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:200]}) since {time.strftime('%H:%M:%S')}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def why_unavailable(install: bool = True) -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if sys.platform != "linux":
        return "SLURM tests need Linux"
    if os.geteuid() != 0:
        return "SLURM tests need root (they start munged, slurmctld and slurmd)"
    missing = [c for c in DAEMONS if not shutil.which(c)]
    if missing and install:
        proc = _run(["bash", str(ROOT / "scripts/setup_slurm.sh")], timeout=900)
        sys.stderr.write(proc.stdout + proc.stderr)
        missing = [c for c in DAEMONS if not shutil.which(c)]
    if missing:
        return f"SLURM is not installed and could not be installed ({', '.join(missing)} missing; see scripts/setup_slurm.sh)"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text(errors="replace"):
        return f"{conf} exists and was not written by this test: not touching a real SLURM installation"
    busy = _running("slurmctld", "slurmd")
    if busy:
        return f"slurmctld/slurmd already running (pids {busy}): not starting a second cluster"
    return None


def _running(*names: str) -> list[int]:
    """Pids of processes with one of these names (/proc; pgrep may not be installed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in names:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class LocalSlurm:
    def __init__(self, workdir: str | Path | None = None, kill_wait: int = 10):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="aeqa-slurm-"))
        self.kill_wait = kill_wait
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.written: list[Path] = []

    # ------------------------------------------------------------ config --
    def slurm_conf(self, ctld_port: int, slurmd_port: int) -> str:
        d = self.dir
        return f"""{MARKER}; removed when the test cluster stops
ClusterName=aeqatest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue (the profile's status command) and to the
# tests' scontrol this long: the time-limited training's first job must still be
# known when its last one ends, which took 800 s on a 2-core machine under load.
MinJobAge=3600
KillWait={self.kill_wait}
SchedulerParameters=sched_interval=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEM_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=NO MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={self.node} Default=NO MaxTime=INFINITE State=UP
"""

    def gres_conf(self) -> str:
        # Stand-in device files: harmless character devices (see the module doc).
        devices = self.dir / "dev"
        devices.mkdir(parents=True, exist_ok=True)
        for i in range(NODE_GPUS):
            link = devices / f"gpu{i}"
            if not link.is_symlink():
                link.symlink_to("/dev/null" if i % 2 == 0 else "/dev/zero")
        return f"{MARKER}\nNodeName={self.node} Name=gpu File={devices}/gpu[0-{NODE_GPUS - 1}]\n"

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.written.append(path)

    # ------------------------------------------------------------- start --
    def _munge_works(self) -> bool:
        try:
            cred = _run(["munge", "-n"], timeout=10)
            return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        if self._munge_works():
            return  # a munged is already serving the default socket: use it, leave it alone
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run(["mungekey", "--create", "--keyfile", str(key)]).check_returncode()
            shutil.chown(key, "munge", "munge")
            key.chmod(0o600)
        for path in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "munge", "munge")
        log = open(self.dir / "munged.out", "w")
        self.procs["munged"] = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground"],
                                                stdout=log, stderr=subprocess.STDOUT)
        self._wait(self._munge_works, 20, "munged did not answer")

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"{what} within {timeout:.0f}s\n{self.logs()}")

    def node_state(self) -> str:
        """The node's state as sinfo prints it (one line per partition: all the same)."""
        proc = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
        states = sorted(set(proc.stdout.split())) if proc.returncode == 0 else []
        return ",".join(states)

    def _node_ready(self) -> bool:
        state = self.node_state()
        if "inval" in state or "drain" in state:
            reason = _run(["sinfo", "-h", "-N", "-o", "%E"], timeout=10).stdout.strip()
            raise RuntimeError(f"node {self.node} is {state}: {reason}\n{self.logs()}")
        return state == "idle"

    def start(self) -> "LocalSlurm":
        try:
            for sub in ("state", "spool"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            self._write(CONF_DIR / "slurm.conf", self.slurm_conf(_free_port(), _free_port()))
            self._write(CONF_DIR / "gres.conf", self.gres_conf())
            self._start_munge()
            for daemon in ("slurmctld", "slurmd"):
                out = open(self.dir / f"{daemon}.out", "w")
                # -D: foreground (our child); slurmctld -c: start from empty state.
                args = [daemon, "-D"] + (["-c"] if daemon == "slurmctld" else [])
                self.procs[daemon] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
                if daemon == "slurmctld":
                    self._wait(lambda: _run(["scontrol", "ping"], timeout=10).stdout.count("UP") > 0,
                               60, "slurmctld did not answer scontrol ping")
            self._wait(self._node_ready, 90, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        return self

    # -------------------------------------------------------------- stop --
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            for part in (PARTITION, GPU_PARTITION):
                _run(["scancel", "--full", f"--partition={part}"], timeout=30)
            deadline = time.time() + self.kill_wait + 20
            while time.time() < deadline and _run(["squeue", "-h", "-t", "PD,R,CG,S"]).stdout.strip():
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()

    # ----------------------------------------------------------- helpers --
    def logs(self, tail: int = 40) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = self.dir / name
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)

    def ctld_log(self) -> str:
        path = self.dir / "slurmctld.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _main() -> None:
    root = sys.platform == "linux" and os.geteuid() == 0
    # a cluster started by hand takes its turn like the test sessions
    with machine_lock(say=print) if root else contextlib.nullcontext():
        reason = why_unavailable()
        if reason:
            sys.exit(reason)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the daemons on kill too
        with LocalSlurm() as cluster:
            print(f"SLURM up: partition {PARTITION}, node {cluster.node}, logs in {cluster.dir}. Ctrl-C stops it.",
                  flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    _main()
