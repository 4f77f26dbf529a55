"""Where member shards run: in the driver's process, in worker processes, or on Ray.

Every backend does the same thing per step: each shard serves its member blocks for the
windows of the step with the current (frozen) models, writes their log rows to its own Parquet
parts (:class:`sim.logs.LogTarget`), and returns per-block statistics and counts; the driver
(:class:`sim.engine.Simulation`) reduces them in block order, trains,
and hands the next model version to the shards. Shards outside the driver's process draw the
catalog and their own blocks' members from the config (a pure function of config and seed:
:func:`sim.world.build_world`) and receive each model version
as a pickle that names, rather than copies, the world it refers to (:func:`sim.shard.dump_models`).

* ``local``: shards in this process, sharing the driver's models (``shards > 1`` only tests
  shard-count invariance: they run one after the other).
* ``processes``: one worker process per shard on this machine (``multiprocessing``, spawned:
  never a fork of the driver, which may run threads by then).
* ``ray``: one Ray actor per shard; ``engine.ray_address`` null starts a local Ray, ``auto``
  or ``ray://head:10001`` joins a cluster (every node needs this package installed, and the
  run directory on a file system every node mounts: the shards write the logs there).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import traceback
from typing import Callable

from sim.rundir import pid_alive
from sim.shard import ShardServer, ShardTotals, StepResult, block_ranges

#: Builds a shard from the config alone: ``build_shard(config, blocks, log)``, ``log`` a
#: :class:`sim.logs.LogTarget` or None. The driver passes it in (:func:`sim.engine.build_shard`),
#: so this module never imports the engine; worker processes and Ray receive it by reference
#: (module and name), so it must be a module-level function.
ShardFactory = Callable[..., ShardServer]


class LocalBackend:
    """Shards in the driver's process, sharing its world and models."""

    needs_models = False

    def __init__(self, shards: list[ShardServer]):
        self.shards = shards

    def step(self, t0: float, t1: float, drift_requests, models: bytes | None) -> list[StepResult]:
        return [s.serve_step(t0, t1, drift_requests) for s in self.shards]

    def finish(self) -> list[ShardTotals]:
        return [s.finish() for s in self.shards]

    def close(self) -> None:
        pass


def _run_message(shard: ShardServer, message):
    kind = message[0]
    if kind == "step":
        _, t0, t1, drift_requests, models = message
        if models is not None:
            shard.load_models(models)
        return shard.serve_step(t0, t1, drift_requests)
    if kind == "finish":
        return shard.finish()
    raise ValueError(f"unknown shard message {kind!r}")


def _die_with_parent() -> None:
    """On Linux the kernel kills this worker the moment the driver dies, however it dies: an
    orphan finishing its step would otherwise write log parts into a run directory that a rerun
    may already have taken over. Elsewhere the worker ends at its next message (a closed pipe)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():        # the driver died before the call
        os._exit(1)


def _process_worker(conn, build_shard: ShardFactory, config, blocks: range, log) -> None:
    """Worker-process main loop: answer each message with ("ok", result) or ("error", text)."""
    _die_with_parent()
    try:
        shard = build_shard(config, blocks, log)
        conn.send(("ok", None))
        while True:
            message = conn.recv()
            if message[0] == "close":
                return
            conn.send(("ok", _run_message(shard, message)))
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException:      # report it to the driver, which raises it with the shard's traceback
        conn.send(("error", traceback.format_exc()))


@contextlib.contextmanager
def _sigint_blocked_while_children_start():
    """Worker processes started inside never see SIGINT: it is blocked in this thread while they
    start, and a new process keeps the blocked set it was started with. Ctrl-C reaches the whole
    process group, and the driver alone should answer it: it then closes its workers, and the
    kernel ends any it leaves (:func:`_die_with_parent`). (Without this, a worker still importing
    printed its own traceback.) A Ctrl-C that arrives meanwhile waits, blocked, and reaches the
    driver as the block ends (ignoring SIGINT instead would lose it)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker blocks SIGINT while it starts and then unblocks it:
    # started first, it cannot undo this block (it starts with the first spawned process anyway).
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def process_context():
    """Worker processes are spawned (a fresh interpreter each), never forked from the driver:
    forking a process that runs threads (BLAS, Ray, a progress bar) can deadlock the child, and
    Python 3.12+ warns about it. The worker builds its shard from the config, as a Ray actor
    does; like any spawned process it imports the caller's main module, so a script that runs
    this backend needs the usual ``if __name__ == "__main__":`` guard."""
    return multiprocessing.get_context("spawn")


class ProcessBackend:
    """One worker process per shard on this machine."""

    needs_models = True

    def __init__(self, config, log, build_shard: ShardFactory):
        eng = config.engine
        ctx = process_context()
        self.conns, self.procs = [], []
        try:
            with _sigint_blocked_while_children_start():
                for blocks in block_ranges(config.world.n_members, eng.member_block, eng.shards):
                    parent, child = ctx.Pipe()
                    p = ctx.Process(target=_process_worker, args=(child, build_shard, config, blocks, log),
                                    daemon=True)
                    p.start()
                    child.close()
                    self.conns.append(parent)
                    self.procs.append(p)
            self._gather()          # every shard has built its world
        except BaseException:
            self.close()
            raise

    def _gather(self) -> list:
        out = []
        for i, conn in enumerate(self.conns):
            try:
                status, value = conn.recv()
            except EOFError:
                self.procs[i].join(timeout=5)
                raise RuntimeError(f"shard {i}: its worker process exited "
                                   f"(exit code {self.procs[i].exitcode})") from None
            if status == "error":
                raise RuntimeError(f"shard {i} failed:\n{value}")
            out.append(value)
        return out

    def step(self, t0, t1, drift_requests, models):
        for conn in self.conns:
            conn.send(("step", t0, t1, list(drift_requests), models))
        return self._gather()

    def finish(self):
        for conn in self.conns:
            conn.send(("finish",))
        return self._gather()

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=2)
            if p.is_alive():        # e.g. still sending a result nobody will read
                p.terminate()
                p.join()


class ShardActor:
    """A shard as a Ray actor (wrapped with ``ray.remote`` by :class:`RayBackend`)."""

    def __init__(self, config, blocks: range, log, build_shard: ShardFactory):
        self.shard = build_shard(config, blocks, log)

    def ready(self) -> str:
        """The id of the Ray node this actor was placed on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def step(self, t0, t1, drift_requests, models):
        # ``models`` arrives as bytes: Ray resolves an object reference passed as an argument.
        return _run_message(self.shard, ("step", t0, t1, drift_requests, models))

    def finish(self):
        return self.shard.finish()


#: Seconds to wait for a Ray cluster's port before refusing ``engine.ray_address``.
RAY_CONNECT_TIMEOUT = 3.0


def check_ray_address(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Refuse an ``engine.ray_address`` that no Ray cluster answers at, within ``timeout`` seconds
    (``ray.init`` would retry for half a minute and end in a traceback). Null starts a local Ray."""
    import socket

    from sim.schema import ConfigError

    if address is None:
        return
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS", "")
        if not target:
            current = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")
            if not os.path.isfile(current):
                raise ConfigError("engine.ray_address", address,
                                  "null (start a local Ray), or the address of a running cluster: "
                                  "auto found none on this machine (no RAY_ADDRESS, no ray start)")
            return
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("engine.ray_address", address,
                          "null, auto, or host:port / ray://host:port of a running Ray cluster")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError("engine.ray_address", address,
                          f"the address of a reachable Ray cluster: nothing answered at {host}:{port} "
                          f"within {timeout:g} s ({err.strerror or type(err).__name__})") from None


#: Environment variable carrying the pid of the process that started a local Ray. Ray's
#: processes (raylet, GCS, dashboard and runtime-env agents, actor workers) inherit it, so the
#: next start finds and reaps those whose owner was killed before ``ray.shutdown``.
RAY_OWNER_ENV = "SIM_RAY_OWNER"


def _registry() -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), "sim-ray-owners")


def record_raylet(ray) -> None:
    """Note the raylet of the local Ray this process started: Ray's agents carry its pid
    (``RAY_RAYLET_PID``) but not this process's environment."""
    node = getattr(ray._private.worker, "_global_node", None) if hasattr(ray, "_private") else None
    infos = (getattr(node, "all_processes", None) or {}).get("raylet", [])
    pids = [str(getattr(i.process, "pid", "")) for i in infos if getattr(i, "process", None)]
    if pids:
        os.makedirs(_registry(), exist_ok=True)
        with open(os.path.join(_registry(), str(os.getpid())), "w") as fh:
            fh.write(" ".join(pids))


def reap_orphaned_ray() -> list[int]:
    """Kill the processes of local Rays whose owner (the run that started them) is dead: a run
    killed with SIGKILL cannot shut its Ray down, and Ray's agents outlive it. Only processes
    carrying :data:`RAY_OWNER_ENV` of a dead owner, or ``RAY_RAYLET_PID`` of a raylet such an
    owner started (:func:`record_raylet`), are killed. Returns the pids killed."""
    dead_raylets: set[bytes] = set()
    root = _registry()
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.isdigit() and not pid_alive(int(name)):
            try:
                with open(os.path.join(root, name)) as fh:
                    dead_raylets |= {p.encode() for p in fh.read().split()}
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
    killed = []
    owner_key, raylet_key = RAY_OWNER_ENV.encode() + b"=", b"RAY_RAYLET_PID="
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        owner = next((e[len(owner_key):] for e in env if e.startswith(owner_key)), None)
        raylet = next((e[len(raylet_key):] for e in env if e.startswith(raylet_key)), None)
        orphan = (owner is not None and owner.isdigit() and int(owner) != int(d)
                  and not pid_alive(int(owner))) or (raylet is not None and raylet in dead_raylets)
        if orphan:
            try:
                os.kill(int(d), signal.SIGKILL)
                killed.append(int(d))
            except OSError:
                pass
    return killed


class RayBackend:
    """One Ray actor per shard. ``ray.init(address=engine.ray_address)``: a local Ray instance
    when the address is null, a running cluster otherwise; a Ray this process already started
    is used as it is (and left running)."""

    needs_models = True
    #: Seconds to wait for the actors to be placed and build their worlds.
    START_TIMEOUT = 600

    def __init__(self, config, log, build_shard: ShardFactory):
        import ray

        self.ray = ray
        self.started = False
        self.actors = []
        try:
            self._start(config, log, build_shard)
        except BaseException:
            self.close()
            raise

    def _start(self, config, log, build_shard: ShardFactory) -> None:
        ray = self.ray
        eng = config.engine
        if not ray.is_initialized():
            kwargs = dict(address=eng.ray_address, include_dashboard=False, log_to_driver=True,
                          configure_logging=False)
            if eng.ray_address is None:
                # A local instance: enough CPUs that every shard's actor can be placed.
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int(eng.shards * eng.ray_cpus_per_shard + 0.999))
                reap_orphaned_ray()        # a killed earlier run's Ray (raylet, GCS, agents)
                os.environ[RAY_OWNER_ENV] = str(os.getpid())   # inherited by the Ray it starts
            ray.init(**kwargs)
            self.started = True
            if eng.ray_address is None:
                record_raylet(ray)
        blocks_of_shards = block_ranges(config.world.n_members, eng.member_block, eng.shards)
        # Every shard's actor must be alive at once (each step waits for all of them): on a Ray
        # with fewer CPUs than the actors reserve, the last ones would never be placed.
        need, have = len(blocks_of_shards) * eng.ray_cpus_per_shard, ray.cluster_resources().get("CPU", 0.0)
        if need > have:
            from sim.schema import ConfigError

            raise ConfigError("engine.ray_cpus_per_shard", eng.ray_cpus_per_shard,
                              f"{len(blocks_of_shards)} shard actors x {eng.ray_cpus_per_shard:g} CPUs = {need:g} "
                              f"CPUs, but this Ray has {have:g}; lower engine.ray_cpus_per_shard "
                              f"(e.g. {have / len(blocks_of_shards):g}) or engine.shards")
        actor = ray.remote(num_cpus=eng.ray_cpus_per_shard, max_restarts=0)(ShardActor)
        self.actors = [actor.remote(config, blocks, log, build_shard) for blocks in blocks_of_shards]
        try:
            nodes = ray.get([a.ready.remote() for a in self.actors], timeout=self.START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"engine.backend=ray: {len(self.actors)} shard actors were not ready after "
                f"{self.START_TIMEOUT} s; does the cluster have {len(self.actors)} x "
                f"engine.ray_cpus_per_shard={eng.ray_cpus_per_shard} free CPUs?") from None
        print(f"engine.backend=ray: {len(self.actors)} shard actors on {len(set(nodes))} Ray node(s)")

    def step(self, t0, t1, drift_requests, models):
        ref = None if models is None else self.ray.put(models)   # one copy in the object store
        return self.ray.get([a.step.remote(t0, t1, list(drift_requests), ref) for a in self.actors])

    def finish(self):
        return self.ray.get([a.finish.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False
            try:
                os.unlink(os.path.join(_registry(), str(os.getpid())))
            except OSError:
                pass
