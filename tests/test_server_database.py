"""A damaged run database: checked at start (a clear refusal that says what to do, never a traceback),
rolling backups with SQLite's backup API, --restore-backup and --reset-database (the damaged file is
always kept), and damage found while serving (503 store_damaged, /api/health degraded)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from latentgraph.cli import main
from latentgraph.server.backup import (BackupFailed, DatabaseDamaged, RestoreFailed, check_database, count_runs,
                           list_backups, restore_backup, take_backup)
from latentgraph.server.config import ConfigError
from latentgraph.server.store import SUCCEEDED, RunRecord, RunStore
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import DEADLINE, ROOT, server_config, show, submit, wait_for, wait_run

PAD = "x" * 3000  # a workflow of a few KiB, so 200 runs fill a few hundred pages


def client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False)


def add_runs(server, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        server.state.store.insert(RunRecord(id=f"run-{i:05d}", status=SUCCEEDED, finished=time.time(),
                                            workflow={"meta": {"name": f"run {i}"}, "pad": PAD}))


def first_backup_done(server) -> None:
    wait_for(lambda: server.state.backups.attempts >= 1)
    assert server.state.backups.last_error is None


def database(tmp_path: Path) -> Path:
    return tmp_path / "user" / "runs.sqlite"


def backups(tmp_path: Path) -> list[Path]:
    return [b.path for b in list_backups(tmp_path / "user" / "backups")]


def set_aside(tmp_path: Path, label: str) -> list[Path]:
    return sorted(p for p in (tmp_path / "user").iterdir() if p.name.startswith(f"runs.sqlite.{label}-")
                  and not p.name.endswith(("-wal", "-shm")))


def history_with_a_backup(start_server, tmp_path: Path, runs: int = 200) -> None:
    """A stopped server's database holding `runs` runs, and a backup of them made at a restart."""
    server = start_server()
    first_backup_done(server)
    add_runs(server, runs)
    server.stop()
    server = start_server()  # the start-up backup now holds the runs
    first_backup_done(server)
    server.stop()
    assert count_runs(backups(tmp_path)[0]) == runs


def garbage(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as file:
        if how == "header":  # garbage over SQLite's 100-byte header
            file.write(garbage(100))
        elif how == "half":  # cut off half-way, as by a full disk or a copy interrupted
            file.truncate(size // 2)
        elif how == "middle":  # garbage over pages in the middle (the header is intact)
            file.seek(size // 2 - 16384)
            file.write(garbage(32768))
        elif how == "empty":
            file.truncate(0)


# --- backups ------------------------------------------------------------------------------------

def test_a_backup_is_made_at_start_and_holds_the_runs_and_an_unchanged_database_is_not_backed_up_twice(
        start_server, tmp_path):
    server = start_server()
    first_backup_done(server)
    assert len(backups(tmp_path)) == 1  # the first start: the empty history
    with client(server) as api:
        ids = [submit(api, show(i))["id"] for i in range(3)]
        assert all(wait_run(api, run_id)["status"] == "succeeded" for run_id in ids)
    server.stop()

    server = start_server()
    first_backup_done(server)
    newest = backups(tmp_path)[0]
    assert len(backups(tmp_path)) == 2
    assert check_database(newest, table="runs") is None
    assert count_runs(newest) == 3
    assert not newest.with_name(newest.name + "-wal").exists()  # one self-contained file
    assert not list((tmp_path / "user" / "backups").glob("*.tmp"))
    with client(server) as api:
        listed = api.get("/api/system").json()["caches"]["database_backups"]
    assert listed["count"] == 2 and listed["newest"] == newest.name and listed["last_error"] is None
    server.stop()

    server = start_server()  # nothing changed: the newest backup stands, older ones are not pushed out
    first_backup_done(server)
    assert backups(tmp_path)[0] == newest and len(backups(tmp_path)) == 2
    server.stop()


def test_backups_roll_keeping_the_newest_n(tmp_path):
    store = RunStore(database(tmp_path))
    folder = tmp_path / "user" / "backups"
    made = []
    for i in range(5):
        store.insert(RunRecord(id=f"r{i}", status=SUCCEEDED, workflow={}))
        made.append(take_backup(database(tmp_path), folder, keep=3).path)
    store.close()
    assert backups(tmp_path) == made[:-4:-1]  # the three newest, newest first
    assert [count_runs(p) for p in backups(tmp_path)] == [5, 4, 3]
    assert take_backup(database(tmp_path), folder, keep=0) is None  # 0: backups are off


def test_the_server_backs_up_again_after_its_interval(start_server, tmp_path):
    server = start_server(backup_interval=0.002, backups=3)  # minutes: about every 0.1 s
    first_backup_done(server)
    add_runs(server, 5)
    wait_for(lambda: any(count_runs(p) == 5 for p in backups(tmp_path)))
    add_runs(server, 5, start=5)
    wait_for(lambda: count_runs(backups(tmp_path)[0]) == 10)
    assert len(backups(tmp_path)) == 3  # the newest three (of the empty start, 5 runs, 10 runs at least)


def test_no_backups_with_backups_0(start_server, tmp_path):
    server = start_server(backups=0)
    add_runs(server, 2)
    server.stop()
    assert backups(tmp_path) == []


def test_a_backup_is_skipped_with_a_warning_when_the_disk_is_nearly_full(tmp_path, monkeypatch, caplog):
    RunStore(database(tmp_path)).close()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    with caplog.at_level(logging.WARNING, logger="latentgraph.server.backup"):
        assert take_backup(database(tmp_path), tmp_path / "user" / "backups", keep=5) is None
    assert backups(tmp_path) == []
    assert "skipping the backup" in caplog.text and "MiB free" in caplog.text


def test_a_backup_of_a_damaged_database_is_dropped_and_the_damage_reported(start_server, tmp_path):
    history_with_a_backup(start_server, tmp_path)
    good = backups(tmp_path)
    store = RunStore(database(tmp_path))
    store.insert(RunRecord(id="one-more", status=SUCCEEDED, workflow={}))
    store.close()
    damage(database(tmp_path), "middle")
    found = []
    with pytest.raises(BackupFailed, match="is damaged"):
        take_backup(database(tmp_path), tmp_path / "user" / "backups", keep=1, on_damage=found.append)
    assert found and backups(tmp_path) == good  # the good backups are neither replaced nor pruned


# --- a damaged database at start ------------------------------------------------------------------

@pytest.mark.parametrize("how, found", [("header", "does not start with SQLite's header"), ("half", "truncated"),
                                        ("middle", ""), ("empty", "empty (0 bytes)")])
def test_a_damaged_database_stops_the_start_with_what_to_do_and_restore_brings_the_runs_back(
        start_server, tmp_path, how, found):
    history_with_a_backup(start_server, tmp_path)
    damage(database(tmp_path), how)
    damaged_bytes = database(tmp_path).read_bytes()

    with pytest.raises(DatabaseDamaged) as refused:
        start_server()
    message = str(refused.value)
    assert f"the run database {database(tmp_path)} is damaged" in message
    assert found in message
    assert backups(tmp_path)[0].name in message and "(200 runs)" in message
    assert "--restore-backup" in message and "--reset-database" in message
    assert "never deleted" in message
    assert database(tmp_path).read_bytes() == damaged_bytes  # the check changed nothing

    server = start_server(restore_backup=True)
    with client(server) as api:
        assert api.get("/api/runs").json()["total"] == 200
        assert api.get("/api/health").json()["status"] == "ok"
    [aside] = set_aside(tmp_path, "damaged")
    assert aside.read_bytes() == damaged_bytes  # kept as it was, beside the restored database


def test_reset_database_starts_empty_and_keeps_the_damaged_file(start_server, tmp_path):
    history_with_a_backup(start_server, tmp_path, runs=20)
    damage(database(tmp_path), "header")
    damaged_bytes = database(tmp_path).read_bytes()
    server = start_server(reset_database=True)
    with client(server) as api:
        assert api.get("/api/runs").json()["total"] == 0
    [aside] = set_aside(tmp_path, "damaged")
    assert aside.read_bytes() == damaged_bytes
    assert count_runs(backups(tmp_path)[-1]) is not None  # the backups stay too


def test_without_a_backup_the_message_says_how_to_start_fresh(start_server, tmp_path):
    server = start_server(backups=0)
    add_runs(server, 20)
    server.stop()
    damage(database(tmp_path), "half")
    with pytest.raises(DatabaseDamaged) as refused:
        start_server(backups=0)
    message = str(refused.value)
    assert str(database(tmp_path)) in message and "no good backup" in message
    assert "--reset-database" in message and "--restore-backup" not in message
    with pytest.raises(RestoreFailed, match="no good backup"):
        start_server(restore_backup=True)
    assert database(tmp_path).exists() and not set_aside(tmp_path, "damaged")  # nothing was moved


def test_restore_skips_a_damaged_backup_for_an_older_good_one(start_server, tmp_path):
    history_with_a_backup(start_server, tmp_path, runs=10)
    older = backups(tmp_path)[0]
    store = RunStore(database(tmp_path))
    store.insert(RunRecord(id="newer", status=SUCCEEDED, workflow={}))
    store.close()
    newest = take_backup(database(tmp_path), tmp_path / "user" / "backups").path
    damage(newest, "header")
    restored = restore_backup(database(tmp_path), tmp_path / "user" / "backups")
    assert restored.backup.path == older and restored.runs == 10 == count_runs(database(tmp_path))


def test_restore_backup_on_a_sound_database_rolls_back_and_keeps_the_current_file(start_server, tmp_path, caplog):
    history_with_a_backup(start_server, tmp_path, runs=10)
    server = start_server(backups=0)
    add_runs(server, 5, start=10)  # after the backup
    server.stop()
    with caplog.at_level(logging.WARNING, logger="latentgraph.server.backup"):
        server = start_server(restore_backup=True)
    assert "restored the run database" in caplog.text and "(10 runs)" in caplog.text
    with client(server) as api:
        assert api.get("/api/runs").json()["total"] == 10
    [aside] = set_aside(tmp_path, "replaced")
    assert count_runs(aside) == 15  # the newer history is kept, not lost
    assert not set_aside(tmp_path, "damaged")


def test_restore_and_reset_exclude_each_other():
    config = server_config(Path("/nonexistent"), restore_backup=True, reset_database=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        config.check()
    with pytest.raises(ConfigError, match="--backups"):
        server_config(Path("/nonexistent"), backups=-1).check()


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture
def serve_argv(tmp_path, monkeypatch):
    """`latentgraph serve` over tmp_path, where uvicorn returns at once instead of serving."""
    served = []

    class Server:  # server.app's uvicorn.Server only: test servers (ServerThread) still serve
        def __init__(self, config: uvicorn.Config) -> None:
            self.config = config

        def run(self) -> None:
            served.append(self.config.app)

    monkeypatch.setattr("latentgraph.server.app.uvicorn", SimpleNamespace(Server=Server, Config=uvicorn.Config))
    argv = ["serve", "--port", "0", "--user-dir", str(tmp_path / "user"), "--models-dir", str(tmp_path / "models"),
            "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "output"),
            "--temp-dir", str(tmp_path / "temp"), "--web-dir", str(tmp_path / "no-web")]
    yield argv, served
    for app in served:  # close the store the app opened (its lifespan never ran)
        app.state.latentgraph.store.close()


def test_serve_refuses_a_damaged_database_with_a_message_and_exit_2_then_restores(
        start_server, tmp_path, serve_argv, capsys):
    argv, served = serve_argv
    history_with_a_backup(start_server, tmp_path, runs=30)
    damage(database(tmp_path), "middle")

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentgraph: error: the run database {database(tmp_path)} is damaged")
    assert f"latentgraph serve --user-dir {tmp_path / 'user'} --restore-backup" in err
    assert "Traceback" not in err and not served

    assert main([*argv, "--restore-backup"]) == 0 and served
    assert count_runs(database(tmp_path)) == 30
    assert len(set_aside(tmp_path, "damaged")) == 1


def test_serve_flags(serve_argv, capsys):
    argv, served = serve_argv
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--restore-backup", "--reset-database"])
    assert exited.value.code == 2
    assert main([*argv, "--backups", "-1"]) == 2
    assert "--backups must be 0" in capsys.readouterr().err
    assert main([*argv, "--backups", "2", "--backup-interval", "15"]) == 0
    config = served[0].state.latentgraph.config
    assert (config.backups, config.backup_interval) == (2, 15.0)


# --- damage while serving -------------------------------------------------------------------------

def test_damage_while_serving_answers_503_store_damaged_and_health_says_degraded(start_server, tmp_path):
    server = start_server()
    first_backup_done(server)
    add_runs(server, 200)
    with client(server) as api:
        assert api.get("/api/runs").status_code == 200
        path = database(tmp_path)
        outside = sqlite3.connect(path, isolation_level=None)  # move every page into the file, then spoil it
        try:
            wait_for(lambda: outside.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0)
        finally:
            outside.close()
        page = int.from_bytes(path.read_bytes()[16:18], "big")
        size = path.stat().st_size
        with open(path, "r+b") as file:  # garbage over every page but the first (the schema stays readable)
            file.seek(page)
            file.write(garbage(size - page))

        response = api.get("/api/runs")
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "store_damaged"
        assert "--restore-backup" in body["detail"] and "damaged" in body["detail"]
        health = api.get("/api/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["store"].startswith("damaged: ") and "--restore-backup" in health.json()["store"]


# --- the real command, in a process of its own ---------------------------------------------------------

def serve_process(root: Path, port: int, *flags: str) -> subprocess.Popen:
    folders = ["--user-dir", root / "user", "--models-dir", root / "models", "--input-dir", root / "input",
               "--output-dir", root / "output", "--temp-dir", root / "temp", "--web-dir", root / "no-web"]
    env = {k: v for k, v in os.environ.items() if k != "LATENTGRAPH_TOKEN"}
    return subprocess.Popen([sys.executable, "-m", "latentgraph", "serve", "--port", str(port), "--log-level", "warning",
                             *map(str, folders), *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_latentgraph_serve_refuses_a_damaged_database_then_restores_it(start_server, tmp_path):
    history_with_a_backup(start_server, tmp_path, runs=50)
    damage(database(tmp_path), "header")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    refused = serve_process(tmp_path, port)
    try:
        _, err = refused.communicate(timeout=120)
    finally:
        if refused.poll() is None:
            refused.kill()
    assert refused.returncode == 2, err
    assert f"latentgraph: error: the run database {database(tmp_path)} is damaged" in err
    assert "--restore-backup" in err and "Traceback" not in err

    restored = serve_process(tmp_path, port, "--restore-backup")
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert restored.poll() is None, restored.stderr.read()
            try:
                return httpx.get(url + "/api/health", timeout=5, trust_env=False).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=120, interval=0.05)
        assert httpx.get(url + "/api/runs", trust_env=False).json()["total"] == 50
    finally:
        restored.send_signal(signal.SIGINT)
        try:
            restored.wait(60)
        except subprocess.TimeoutExpired:
            restored.kill()
            restored.wait(DEADLINE)
    assert len(set_aside(tmp_path, "damaged")) == 1
