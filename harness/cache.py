"""Artifact cache: entries are directories keyed by a hash of exactly the config that determines them.

Layout: ``root/<kind>/<key>/`` holds the files a builder wrote plus ``_manifest.json`` (sizes and sha256 of
every file). An entry only ever appears by an atomic rename of a finished temp directory, so a reader sees
either nothing or a complete entry; the manifest catches what a crash or a stray write damaged afterwards.

Keys hash content, never locations: a spec holds configs and content fingerprints (``content_fingerprint`` of
model files, sha256 of data files), not paths, so a cache moved, remounted or copied elsewhere is reused as is.
Reading an entry takes no lock; a read-only cache (a copy, a read-only mount) serves every entry it has and
builds a missing one in a temporary directory, with a warning, instead of failing on the lock file.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Bump when the on-disk layout or the meaning of a spec changes: old entries then simply stop matching.
# 2: a spec's "seed" is the job seed that harness.seeds derives every stream from (was: ad-hoc offsets).
CACHE_FORMAT_VERSION = 2
MANIFEST = "_manifest.json"
# What a write into a read-only cache (a read-only mount or copy, no permission) fails with.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)

# Hashing a multi-GB entry on every hit would dominate warm runs, so each entry's sha256s are checked once
# per process. Keyed by the manifest's inode and mtime too, so an entry rebuilt in place is checked again.
_VERIFIED: set[tuple[str, int, int]] = set()


def _plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _canonical(kind: str, spec: Mapping) -> str:
    # No `default=`: an object json cannot encode must fail loudly rather than be hashed by its repr.
    doc = {"kind": kind, "spec": _plain(spec), "version": CACHE_FORMAT_VERSION}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Content fingerprints already computed in this process, keyed by every file's (path, size, mtime, inode):
# a model directory is hashed once per process, and again as soon as any file in it is replaced.
_FINGERPRINTS: dict[tuple, str] = {}


def _fingerprinted_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    # Python's bytecode caches and dotfiles (.gitattributes, .cache/) are not part of a model's content.
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def content_fingerprint(path: str | os.PathLike) -> str:
    """A sha256 over the names and contents of a file or of every file under a directory: what a model IS,
    for cache keys, never where it lies (a moved or copied model keeps its fingerprint; one replaced in place
    gets a new one)."""
    root = Path(path).expanduser().resolve()
    files = _fingerprinted_files(root)
    if not files:
        raise FileNotFoundError(f"{path}: no files to fingerprint")
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) for f in files)
    if stats not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in files:
            rel = "" if f == root else f.relative_to(root).as_posix()  # a single file: its content alone
            h.update(f"{rel}\0{sha256_file(f)}\n".encode())
        _FINGERPRINTS[stats] = h.hexdigest()
    return _FINGERPRINTS[stats]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    # Serialise first so an unencodable object never touches the disk.
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def default_cache_dir() -> Path:
    if os.environ.get("RMHARNESS_CACHE_DIR"):
        return Path(os.environ["RMHARNESS_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rmharness"


def _build_in_temp(build: Callable[[Path], None], prefix: str) -> Path:
    """Run ``build`` into a new temporary directory, removed at exit (or at once when the build fails)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, True)
    try:
        build(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return tmp


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self._stats = {"hits": 0, "builds": 0}

    @property
    def stats(self) -> dict:
        return dict(self._stats)

    @staticmethod
    def key(kind: str, spec: Mapping) -> str:
        """The entry's name: a hash of (kind, spec) alone, so a cache moved elsewhere keeps its keys."""
        return hashlib.sha256(_canonical(kind, spec).encode()).hexdigest()[:16]

    def path(self, kind: str, spec: Mapping) -> Path:
        return self.root / kind / self.key(kind, spec)

    def has(self, kind: str, spec: Mapping) -> bool:
        return self._problem(self.path(kind, spec), kind, spec) is None

    def _problem(self, entry: Path, kind: str, spec: Mapping) -> str | None:
        """None if `entry` is complete and valid, else what is wrong with it."""
        mpath = entry / MANIFEST
        try:
            st = mpath.stat()
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            files = manifest["files"]
            stored = _canonical(manifest["kind"], manifest["spec"])
        except FileNotFoundError:
            return "missing" if not entry.exists() else f"no {MANIFEST}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"unreadable {MANIFEST}: {e!r}"
        # Guards against a truncated-hash collision and against a directory copied under the wrong name.
        if stored != _canonical(kind, spec):
            return "manifest spec does not match the requested spec"
        check_sha = (str(entry), st.st_ino, st.st_mtime_ns) not in _VERIFIED
        for rec in files:
            f = entry / rec["path"]
            if not f.is_file():
                return f"missing file {rec['path']}"
            if f.stat().st_size != rec["size"]:
                return f"size mismatch for {rec['path']}: {f.stat().st_size} != {rec['size']}"
            if check_sha and sha256_file(f) != rec["sha256"]:
                return f"sha256 mismatch for {rec['path']}"
        _VERIFIED.add((str(entry), st.st_ino, st.st_mtime_ns))
        return None

    @contextmanager
    def _locked(self, fd: int):
        # The lock file is never deleted: unlinking a flock'ed file lets a third process lock a fresh inode
        # while a second still waits on the old one.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _build_uncached(self, kind: str, build: Callable[[Path], None], why: OSError) -> Path:
        """A read-only cache that lacks an entry: build it in a temporary directory (removed at exit)."""
        log.warning("cache %s cannot be written (%s): building %s without caching it", self.root, why, kind)
        tmp = _build_in_temp(build, prefix=f"rmharness-{kind}-")
        self._stats["builds"] += 1
        return tmp

    def _write_manifest(self, tmp: Path, kind: str, spec: Mapping) -> None:
        files = []
        for dirpath, _, names in os.walk(tmp):
            for name in names:
                f = Path(dirpath) / name
                rel = f.relative_to(tmp).as_posix()
                if rel != MANIFEST:
                    files.append({"path": rel, "size": f.stat().st_size, "sha256": sha256_file(f)})
        manifest = {"kind": kind, "spec": _plain(spec), "version": CACHE_FORMAT_VERSION,
                    "created": time.time(), "files": sorted(files, key=lambda r: r["path"])}
        atomic_write_json(tmp / MANIFEST, manifest)

    def directory(self, kind: str, spec: Mapping, build: Callable[[Path], None]) -> Path:
        final = self.path(kind, spec)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of several data-parallel processes (torchrun)
            return self._directory_data_parallel(final, kind, spec, build)
        return self._directory(final, kind, spec, build)

    def _directory_data_parallel(self, final: Path, kind: str, spec: Mapping, build: Callable[[Path], None]) -> Path:
        """The processes of one data-parallel job (harness/parallel.py) ask for the same entries in the same order.
        They agree whether an entry is there; if not, every one of them builds it (a build may train a model, and
        training is a collective all processes join), rank 0 alone writes it, and the others use rank 0's."""
        from .parallel import all_agree, barrier, is_writer, rank  # torch: only for data-parallel jobs

        if all_agree(self._problem(final, kind, spec) is None):
            self._stats["hits"] += 1
            return final
        if is_writer():
            path = self._directory(final, kind, spec, build)
            barrier()  # rank 0's entry is complete before anyone reads it
            return path
        scratch = _build_in_temp(build, prefix=f"rmharness-{kind}-rank{rank()}-")
        barrier()
        if self._problem(final, kind, spec) is None:
            _remove(scratch)
            return final
        return scratch  # a read-only cache: rank 0 could not write the entry either; this process's own build

    def _directory(self, final: Path, kind: str, spec: Mapping, build: Callable[[Path], None]) -> Path:
        # Lock-free fast path: safe because entries only appear whole, via rename.
        if self._problem(final, kind, spec) is None:
            self._stats["hits"] += 1
            return final
        # Reads above need no lock file; only a build does, so a read-only cache serves every entry it has.
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(final.parent / f"{final.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in READ_ONLY_ERRNOS:
                raise
            return self._build_uncached(kind, build, e)
        with self._locked(lock_fd):
            problem = self._problem(final, kind, spec)
            if problem is None:  # another process built it while we waited for the lock
                self._stats["hits"] += 1
                return final
            if problem != "missing":
                log.warning("cache entry %s is corrupt (%s); removing and rebuilding", final, problem)
                _remove(final)
            # Holding the lock, any temp dir for this key is the leftover of a killed builder.
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                _remove(stale)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            try:
                build(tmp)
                self._write_manifest(tmp, kind, spec)
                try:
                    os.rename(tmp, final)
                except OSError:
                    # Only reachable where flock is not honoured (some network filesystems): someone else
                    # finished first. Keep theirs if it is sound, else put ours in its place.
                    if self._problem(final, kind, spec) is None:
                        _remove(tmp)
                        self._stats["hits"] += 1
                        return final
                    _remove(final)
                    os.rename(tmp, final)
            except BaseException:
                _remove(tmp)
                raise
            # Just hashed while writing the manifest; no need to hash again on the first hit.
            st = (final / MANIFEST).stat()
            _VERIFIED.add((str(final), st.st_ino, st.st_mtime_ns))
            self._stats["builds"] += 1
            return final

    def tensors(
        self, kind: str, spec: Mapping, build: Callable[[], tuple[dict[str, torch.Tensor], dict]]
    ) -> tuple[dict[str, torch.Tensor], dict]:
        # Imported here so that code using only directories does not pay for importing torch.
        from safetensors.torch import load_file, save_file

        def build_dir(tmp: Path) -> None:
            tensors, meta = build()
            meta_text = json.dumps(meta)  # fail before writing anything if meta is not JSON
            tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "meta.json").write_text(meta_text, encoding="utf-8")

        entry = self.directory(kind, spec, build_dir)
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        return load_file(str(entry / "tensors.safetensors")), meta
