"""The run database's health: an integrity check at start-up, rolling backups, restore and reset.

* `check_database(path)`: None when the file is sound (or absent: a fresh start), else what is wrong.
  Reads the header itself (an empty, truncated or overwritten file), then asks SQLite
  (`PRAGMA quick_check` on a read-only connection, which reads every page).
* `take_backup(...)`: SQLite's online backup API into `<user>/backups/runs-YYYYmmdd-HHMMSS.sqlite`
  (local time), written under a temporary name, verified, then renamed; the newest `keep` are kept.
  A backup identical to the newest one is not kept twice, so restarts and idle hours do not push
  older backups out; one whose check fails is dropped and the live database checked (a failure
  there marks the store damaged). Skipped, with a warning, when the disk is nearly full.
* `BackupScheduler`: a thread of the server that backs up at start-up and every interval.
* `prepare_database(config)`: what `serve` does before opening the database: restore or reset on
  request, then check; a damaged file raises `DatabaseDamaged`, whose message says what to do.
* `restore_backup` / `reset_database`: the damaged (or current) file and its -wal/-shm are moved
  aside as `runs.sqlite.damaged-<time>` (`.replaced-` / `.reset-` when it was sound), never deleted.
* `WatchedConnection`: the store's connection notes the first sign of damage SQLite reports while
  the server runs, so the API can answer 503 `store_damaged` and /api/health say so.
"""

from __future__ import annotations

import filecmp
import logging
import os
import re
import shutil
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from latentgraph.server.config import ServerConfig

log = logging.getLogger(__name__)

DEFAULT_KEEP = 5
DEFAULT_INTERVAL_MINUTES = 60.0
FREE_SPACE_MARGIN = 64 << 20  # a backup needs the database's size plus this much free space
SIDE_FILES = ("-wal", "-shm")  # SQLite's companions of a WAL database, moved along with it
HEADER = b"SQLite format 3\x00"
_BACKUP_NAME = re.compile(r"^runs-(\d{8})-(\d{6})(?:-(\d+))?\.sqlite$")
_STAMP = "%Y%m%d-%H%M%S"


class DatabaseProblem(Exception):
    """The run database cannot be used as it is; the message says why and what to do."""


class DatabaseDamaged(DatabaseProblem):
    """The run database failed its check at start-up."""

    def __init__(self, message: str, *, path: Path, problem: str, backup: "Backup | None") -> None:
        super().__init__(message)
        self.path, self.problem, self.backup = path, problem, backup


class RestoreFailed(DatabaseProblem):
    """--restore-backup found no good backup, or could not put it in place."""


# --- checking ------------------------------------------------------------------------------------

def _uri(path: Path, mode: str = "ro") -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _header_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes), where a run database holds at least its tables"
    with open(path, "rb") as file:
        header = file.read(100)
    if len(header) < 100:
        return f"the file is truncated: {size} bytes, shorter than SQLite's 100-byte header"
    if header[:16] != HEADER:
        return "the file does not start with SQLite's header: its first bytes were overwritten, or it is not a database"
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"the header is damaged (page size {page_size})"
    changes, pages, valid_for = (struct.unpack(">I", header[i:i + 4])[0] for i in (24, 28, 92))
    wal = path.with_name(path.name + "-wal")
    wal_has_frames = wal.exists() and wal.stat().st_size > 0  # a checkpoint may have been cut off
    if pages and changes == valid_for and not wal_has_frames and size < pages * page_size:
        return f"the file is truncated: {size} bytes where its header says {pages * page_size}"
    return None


def check_database(path: Path, *, table: str | None = None) -> str | None:
    """What is wrong with the SQLite file at `path`, or None when it is sound. A missing file is
    sound (it is created empty). `table`: also require that table (backups hold `runs`)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        problem = _header_problem(path)
        if problem:
            return problem
        db = sqlite3.connect(_uri(path), uri=True)
        try:
            rows = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if table is not None:
                db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"SQLite says: {exc}"
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    if rows != ["ok"]:
        more = f" (and {len(rows) - 3} more problems)" if len(rows) > 3 else ""
        return "SQLite's integrity check found: " + "; ".join(rows[:3]) + more
    return None


def count_runs(path: Path) -> int | None:
    try:
        db = sqlite3.connect(_uri(Path(path)), uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


# --- damage while serving ------------------------------------------------------------------------

_DAMAGE_NAMES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE_TEXTS = ("malformed", "file is not a database", "could not decode to utf-8")


def is_damage(exc: BaseException) -> bool:
    """True when SQLite (or the sqlite3 module reading its text) says the file is damaged, as
    opposed to busy, full, or a statement's own mistake."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith(_DAMAGE_NAMES) or any(text in str(exc).lower() for text in _DAMAGE_TEXTS)


class WatchedCursor(sqlite3.Cursor):
    def _seen(self, exc: sqlite3.DatabaseError) -> None:
        connection = self.connection
        if isinstance(connection, WatchedConnection):
            connection.seen(exc)

    def execute(self, *args: Any) -> "WatchedCursor":
        try:
            return super().execute(*args)
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def executemany(self, *args: Any) -> "WatchedCursor":
        try:
            return super().executemany(*args)
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def executescript(self, *args: Any) -> "WatchedCursor":
        try:
            return super().executescript(*args)
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def fetchmany(self, *args: Any) -> list[Any]:
        try:
            return super().fetchmany(*args)
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            self._seen(exc)
            raise


class WatchedConnection(sqlite3.Connection):
    """`sqlite3.connect(..., factory=WatchedConnection)`: every statement goes through a
    WatchedCursor, and the first error that means damage is kept in `damage`."""

    damage: str | None = None

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        return super().cursor(factory or WatchedCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:  # type: ignore[override]
        return self.cursor().executescript(script)

    def seen(self, exc: BaseException) -> None:
        if self.damage is None and is_damage(exc):
            self.mark_damaged(str(exc))

    def mark_damaged(self, reason: str) -> None:
        if self.damage is None:
            self.damage = reason
            log.error("the run database is damaged (%s): stop the server and start it again with "
                      "`latentgraph serve --restore-backup` to restore the newest backup", reason)


# --- backups -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backup:
    path: Path
    taken: datetime  # from its name: local time, to the second

    @property
    def when(self) -> str:
        return self.taken.strftime("%Y-%m-%d %H:%M:%S")


def _parse(path: Path) -> tuple[datetime, int] | None:
    match = _BACKUP_NAME.match(path.name)
    if not match:
        return None
    try:
        taken = datetime.strptime(f"{match.group(1)}-{match.group(2)}", _STAMP)
    except ValueError:
        return None
    return taken, int(match.group(3) or 0)


def list_backups(folder: Path) -> list[Backup]:
    """The backups in `folder`, newest first (by the time in their names)."""
    if not Path(folder).is_dir():
        return []
    found = []
    for path in Path(folder).iterdir():
        parsed = _parse(path)
        if parsed and path.is_file():
            found.append((parsed, Backup(path, parsed[0])))
    return [backup for _, backup in sorted(found, key=lambda item: item[0], reverse=True)]


def newest_good_backup(folder: Path) -> Backup | None:
    """The newest backup that passes the integrity check (older ones are tried in turn)."""
    for backup in list_backups(folder):
        problem = check_database(backup.path, table="runs")
        if problem is None:
            return backup
        log.warning("backup %s is damaged too (%s)", backup.path, problem)
    return None


def _fsync_dir(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # e.g. pruned meanwhile
        return 0


def _database_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _new_backup_path(folder: Path, now: datetime) -> Path:
    """`runs-<now>.sqlite`, numbered `-2`, `-3`... after others of the same second, so that names
    sort in the order backups were made; a clock set back does not make a new backup look older."""
    newest = max((parsed for p in folder.iterdir() if (parsed := _parse(p))), default=None)
    taken, n = now.replace(microsecond=0), 1
    if newest is not None and newest[0] >= taken:
        taken, n = newest[0], max(newest[1], 1) + 1
    stamp = taken.strftime(_STAMP)
    return folder / (f"runs-{stamp}.sqlite" if n == 1 else f"runs-{stamp}-{n}.sqlite")


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups; returns the deleted paths."""
    removed = []
    for backup in list_backups(folder)[max(keep, 0):]:
        try:
            backup.path.unlink()
            removed.append(backup.path)
        except OSError as exc:
            log.warning("could not delete the old backup %s: %s", backup.path, exc.strerror or exc)
    return removed


class BackupFailed(Exception):
    """The backup could not be made (the message says why); older backups are untouched."""


def take_backup(database: Path, folder: Path, keep: int = DEFAULT_KEEP, *,
                margin: int = FREE_SPACE_MARGIN, on_damage: Callable[[str], None] | None = None) -> Backup | None:
    """Back `database` up into `folder` and keep the newest `keep` backups. Returns the backup
    (the newest one, unchanged, when nothing changed since), or None when skipped: backups off,
    no database yet, or too little free space. Raises BackupFailed when it went wrong."""
    database, folder = Path(database), Path(folder)
    if keep <= 0 or not database.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    needed = _database_bytes(database) + margin
    free = shutil.disk_usage(folder).free
    if free < needed:
        log.warning("skipping the backup of %s: %d MiB free in %s, a backup needs %d MiB (the database plus "
                    "%d MiB to spare); free some space", database, free >> 20, folder, needed >> 20, margin >> 20)
        return None
    for stale in folder.glob(".runs-*.tmp"):  # left by a backup that was cut off
        stale.unlink(missing_ok=True)
    now = datetime.now()
    temporary = folder / f".runs-{now.strftime(_STAMP)}-{os.getpid()}.tmp"
    try:
        source = sqlite3.connect(_uri(database), uri=True)
        try:
            target = sqlite3.connect(temporary, isolation_level=None)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # a backup is one self-contained file
            finally:
                target.close()
        finally:
            source.close()
        problem = check_database(temporary, table="runs")
        if problem is not None:
            live = check_database(database)
            if live is not None and on_damage is not None:
                on_damage(live)
            raise BackupFailed(f"the backup of {database} failed its check ({problem}); the database itself "
                               f"{'is damaged: ' + live if live else 'passes its check'}")
        newest = next(iter(list_backups(folder)), None)
        if newest is not None and filecmp.cmp(temporary, newest.path, shallow=False):
            temporary.unlink()
            log.debug("the run database is unchanged since backup %s", newest.path.name)
            return newest
        _fsync_file(temporary)
        path = _new_backup_path(folder, now)
        os.replace(temporary, path)
        _fsync_dir(folder)
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise BackupFailed(f"the backup of {database} failed: {exc}") from None
        if on_damage is not None:
            on_damage(str(exc))
        raise BackupFailed(f"the backup of {database} failed: the database is damaged: {exc}") from None
    except OSError as exc:
        raise BackupFailed(f"the backup of {database} into {folder} failed: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    removed = prune_backups(folder, keep)
    log.info("backed up the run database to %s%s", path, f" (removed {len(removed)} older)" if removed else "")
    return Backup(path, _parse(path)[0])


class BackupScheduler:
    """Backs the database up at start-up, then every `interval` seconds (0: only at start-up),
    from a thread of its own. `keep` 0 turns backups off."""

    def __init__(self, database: Path, folder: Path, keep: int = DEFAULT_KEEP,
                 interval: float = DEFAULT_INTERVAL_MINUTES * 60, *, margin: int = FREE_SPACE_MARGIN,
                 on_damage: Callable[[str], None] | None = None) -> None:
        self.database, self.folder, self.keep, self.interval = Path(database), Path(folder), keep, interval
        self.margin, self.on_damage = margin, on_damage
        self.last: Backup | None = None
        self.last_error: str | None = None
        self.attempts = 0  # finished attempts, successful or not (tests wait on it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.keep <= 0:
            log.info("backups of the run database are off (--backups 0)")
            return
        self._thread = threading.Thread(target=self._loop, name="latentgraph-backups", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """For /api/system: how many backups there are, the newest, and the last failure if any."""
        found = list_backups(self.folder)
        newest = found[0] if found else None
        return {"keep": self.keep, "interval_minutes": self.interval / 60, "count": len(found),
                "bytes": sum(_size(b.path) for b in found),
                "newest": newest.path.name if newest else None, "newest_taken": newest.when if newest else None,
                "last_error": self.last_error}

    def run_once(self) -> Backup | None:
        try:
            backup = take_backup(self.database, self.folder, self.keep, margin=self.margin, on_damage=self.on_damage)
            if backup is not None:
                self.last, self.last_error = backup, None
            return backup
        except BackupFailed as exc:
            self.last_error = str(exc)
            log.error("%s", exc)
        except Exception as exc:  # a backup must never take the server down
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("the backup of the run database failed")
        finally:
            self.attempts += 1
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            if self.interval <= 0 or self._stop.wait(self.interval):
                return


# --- restore, reset, and the start-up step ----------------------------------------------------------

def move_aside(database: Path, label: str) -> list[Path]:
    """Rename the database and its -wal/-shm to `<name>.<label>-<time>` (+ the same suffixes, so
    SQLite still reads the set together). Returns the new paths; nothing is deleted."""
    database = Path(database)
    stamp = datetime.now().strftime(_STAMP)
    base, n = database.with_name(f"{database.name}.{label}-{stamp}"), 1
    while any(base.with_name(base.name + s).exists() for s in ("", *SIDE_FILES)):
        n += 1
        base = database.with_name(f"{database.name}.{label}-{stamp}-{n}")
    moved = []
    for suffix in ("", *SIDE_FILES):
        source = database.with_name(database.name + suffix)
        if source.exists():
            target = base.with_name(base.name + suffix)
            os.replace(source, target)
            moved.append(target)
    _fsync_dir(database.parent)
    return moved


@dataclass
class Restored:
    backup: Backup
    runs: int | None
    moved: list[Path]  # where the previous file (and its -wal/-shm) went


def restore_backup(database: Path, folder: Path, *,
                   reset_command: str = "latentgraph serve --reset-database") -> Restored:
    """Put the newest good backup in place of `database`, whose files are moved aside first
    (as `.damaged-<time>` when it fails its check, else `.replaced-<time>`)."""
    database, folder = Path(database), Path(folder)
    backup = newest_good_backup(folder)
    if backup is None:
        raise RestoreFailed(f"cannot restore the run database {database}: there is no good backup in {folder}; "
                            f"nothing was changed. Start with `{reset_command}` to move the current file aside "
                            "(kept, never deleted) and start with an empty run history")
    runs = count_runs(backup.path)
    problem = check_database(database) if database.exists() else None
    temporary = database.with_name(database.name + ".restoring")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backup.path, temporary)
        _fsync_file(temporary)
        moved = move_aside(database, "damaged" if problem else "replaced")
        os.replace(temporary, database)
        _fsync_dir(database.parent)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise RestoreFailed(f"cannot restore {backup.path} to {database}: {exc.strerror or exc}") from None
    kept = f"; the previous file is kept as {moved[0]}" if moved else ""
    log.warning("restored the run database %s from the backup %s taken %s (%s runs)%s", database, backup.path.name,
                backup.when, "?" if runs is None else runs, kept)
    return Restored(backup, runs, moved)


def reset_database(database: Path) -> list[Path]:
    """Move the database aside (as `.damaged-<time>`, or `.reset-<time>` when sound) so the
    server starts with an empty one. Returns where its files went."""
    database = Path(database)
    if not database.exists():
        return []
    moved = move_aside(database, "damaged" if check_database(database) else "reset")
    log.warning("moved the run database %s aside as %s; starting with an empty run history", database, moved[0])
    return moved


def _command(config: "ServerConfig", flag: str) -> str:
    from latentgraph.server.config import ServerConfig

    user = "" if Path(config.user_dir) == ServerConfig().user_dir else f" --user-dir {config.user_dir}"
    return f"latentgraph serve{user} {flag}"


def damaged_message(config: "ServerConfig", problem: str) -> DatabaseDamaged:
    """The error for a damaged database, naming the file, what was found and what to do."""
    path = config.database_path
    backup = newest_good_backup(config.backups_dir)
    lines = [f"the run database {path} is damaged: {problem}."]
    aside = f"{path.name}.damaged-<time>"
    reset = (f"start again with `{_command(config, '--reset-database')}` to move the damaged file aside (kept as "
             f"{aside}, never deleted) and start with an empty run history (images in the output folder stay)")
    if backup is not None:
        runs = count_runs(backup.path)
        lines.append(f"The newest good backup is {backup.path} from {backup.when} "
                     f"({'?' if runs is None else runs} runs); runs recorded after it are not in it.")
        lines.append(f"To restore it, start again with `{_command(config, '--restore-backup')}`: the damaged file "
                     f"is moved aside (kept as {aside}, never deleted) and the backup from {backup.when} takes "
                     f"its place.")
        lines.append(f"Or {reset}.")
    else:
        lines.append(f"There is no good backup to restore in {config.backups_dir}.")
        lines.append(f"To go on, {reset}.")
    return DatabaseDamaged("\n".join(lines), path=path, problem=problem, backup=backup)


def prepare_database(config: "ServerConfig") -> None:
    """Before the store opens the database: restore or reset when asked, then check it.
    Raises DatabaseDamaged (with what to do) or RestoreFailed."""
    path = config.database_path
    if getattr(config, "restore_backup", False):
        restore_backup(path, config.backups_dir, reset_command=_command(config, "--reset-database"))
    elif getattr(config, "reset_database", False):
        reset_database(path)
    started = time.monotonic()
    problem = check_database(path)
    if problem is not None:
        raise damaged_message(config, problem)
    if path.exists():
        log.debug("checked the run database %s in %.2fs", path, time.monotonic() - started)


__all__ = ["Backup", "BackupFailed", "BackupScheduler", "DatabaseDamaged", "DatabaseProblem",
           "DEFAULT_INTERVAL_MINUTES", "DEFAULT_KEEP", "FREE_SPACE_MARGIN", "RestoreFailed", "Restored",
           "WatchedConnection", "check_database", "count_runs", "damaged_message", "is_damage", "list_backups",
           "move_aside", "newest_good_backup", "prepare_database", "prune_backups", "reset_database",
           "restore_backup", "take_backup"]
