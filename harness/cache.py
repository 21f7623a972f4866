"""Artifact cache: entries are directories keyed by a hash of exactly the config that determines them.

Layout: ``root/<kind>/<key>/`` holds the files a builder wrote plus ``_manifest.json`` (sizes and sha256 of
every file). An entry only ever appears by an atomic rename of a finished temp directory, so a reader sees
either nothing or a complete entry; the manifest catches what a crash or a stray write damaged afterwards.
"""

from __future__ import annotations

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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self._stats = {"hits": 0, "builds": 0}

    @property
    def stats(self) -> dict:
        return dict(self._stats)

    def key(self, kind: str, spec: Mapping) -> str:
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
            if check_sha and _sha256_file(f) != rec["sha256"]:
                return f"sha256 mismatch for {rec['path']}"
        _VERIFIED.add((str(entry), st.st_ino, st.st_mtime_ns))
        return None

    @contextmanager
    def _locked(self, lock_path: Path):
        # The lock file is never deleted: unlinking a flock'ed file lets a third process lock a fresh inode
        # while a second still waits on the old one.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_manifest(self, tmp: Path, kind: str, spec: Mapping) -> None:
        files = []
        for dirpath, _, names in os.walk(tmp):
            for name in names:
                f = Path(dirpath) / name
                rel = f.relative_to(tmp).as_posix()
                if rel != MANIFEST:
                    files.append({"path": rel, "size": f.stat().st_size, "sha256": _sha256_file(f)})
        manifest = {"kind": kind, "spec": _plain(spec), "version": CACHE_FORMAT_VERSION,
                    "created": time.time(), "files": sorted(files, key=lambda r: r["path"])}
        atomic_write_json(tmp / MANIFEST, manifest)

    def directory(self, kind: str, spec: Mapping, build: Callable[[Path], None]) -> Path:
        final = self.path(kind, spec)
        # Lock-free fast path: safe because entries only appear whole, via rename.
        if self._problem(final, kind, spec) is None:
            self._stats["hits"] += 1
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(final.parent / f"{final.name}.lock"):
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
