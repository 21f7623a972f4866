import json
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.cache as cache_mod
from harness.cache import ArtifactCache, atomic_write_json, atomic_write_text, default_cache_dir

SPEC = {"model": {"d": 8, "layers": 2}, "lr": 1e-3, "seeds": [0, 1], "name": "x", "flag": True, "none": None}
PAYLOAD = b"hello cache " * 100


class CountingBuild:
    def __init__(self, payload=PAYLOAD):
        self.calls = 0
        self.payload = payload

    def __call__(self, tmp: Path) -> None:
        self.calls += 1
        (tmp / "sub").mkdir()
        (tmp / "data.bin").write_bytes(self.payload)
        (tmp / "sub" / "note.txt").write_text("nested")


def only_locks(kind_dir: Path) -> bool:
    return all(p.name.endswith(".lock") and p.is_file() for p in kind_dir.iterdir())


# ---------------------------------------------------------------- keys


def test_key_is_canonical_and_stable(tmp_path):
    c = ArtifactCache(tmp_path)
    reordered = {"none": None, "flag": True, "name": "x", "seeds": [0, 1], "lr": 1e-3,
                 "model": {"layers": 2, "d": 8}}
    k = c.key("world", SPEC)
    assert k == c.key("world", reordered)
    assert k == ArtifactCache(tmp_path / "elsewhere").key("world", dict(SPEC))
    assert k == c.key("world", OmegaConf.create(SPEC))
    assert k == c.key("world", {**SPEC, "model": OmegaConf.create(SPEC["model"])})
    assert len(k) >= 16 and all(ch in "0123456789abcdef" for ch in k)
    assert c.path("world", SPEC) == tmp_path / "world" / k


def test_key_resolves_interpolations(tmp_path):
    c = ArtifactCache(tmp_path)
    cfg = OmegaConf.create({"d": 8, "model": {"d": "${d}"}})
    assert c.key("k", cfg) == c.key("k", {"d": 8, "model": {"d": 8}})


@pytest.mark.parametrize("change", [
    {"lr": 2e-3}, {"name": "y"}, {"flag": False}, {"seeds": [1, 0]}, {"model": {"d": 8, "layers": 3}},
    {"extra": 1},
])
def test_changing_spec_changes_key(tmp_path, change):
    c = ArtifactCache(tmp_path)
    assert c.key("world", SPEC) != c.key("world", {**SPEC, **change})


def test_kind_is_part_of_key(tmp_path):
    c = ArtifactCache(tmp_path)
    assert c.key("world", SPEC) != c.key("sft", SPEC)


def test_unencodable_spec_is_rejected(tmp_path):
    with pytest.raises(TypeError):
        ArtifactCache(tmp_path).key("k", {"x": object()})


# ---------------------------------------------------------------- hits and builds


def test_hit_does_not_rebuild(tmp_path):
    c = ArtifactCache(tmp_path)
    build = CountingBuild()
    assert not c.has("world", SPEC)
    p1 = c.directory("world", SPEC, build)
    p2 = c.directory("world", dict(SPEC), build)
    assert p1 == p2 == c.path("world", SPEC)
    assert build.calls == 1
    assert c.stats == {"hits": 1, "builds": 1}
    assert (p1 / "data.bin").read_bytes() == PAYLOAD
    assert (p1 / "sub" / "note.txt").read_text() == "nested"
    manifest = json.loads((p1 / "_manifest.json").read_text())
    assert manifest["kind"] == "world" and manifest["spec"] == SPEC
    assert sorted(r["path"] for r in manifest["files"]) == ["data.bin", "sub/note.txt"]
    assert only_locks(tmp_path / "world") is False  # the entry dir itself is there
    assert [p.name for p in (tmp_path / "world").iterdir() if p.is_dir()] == [p1.name]

    # A fresh cache object on the same root (as a later run would have) hits too.
    c2 = ArtifactCache(tmp_path)
    assert c2.directory("world", SPEC, build) == p1
    assert build.calls == 1 and c2.stats == {"hits": 1, "builds": 0}


def test_different_spec_builds_separately(tmp_path):
    c = ArtifactCache(tmp_path)
    b = CountingBuild()
    p1 = c.directory("world", SPEC, b)
    p2 = c.directory("world", {**SPEC, "lr": 0.5}, b)
    assert p1 != p2 and b.calls == 2


def test_sha_checked_once_per_process(tmp_path, monkeypatch):
    c = ArtifactCache(tmp_path)
    c.directory("world", SPEC, CountingBuild())
    calls = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(5):
        c.directory("world", SPEC, CountingBuild())
    assert calls == []
    cache_mod._VERIFIED.clear()  # as if a new process
    for _ in range(3):
        c.directory("world", SPEC, CountingBuild())
    assert len(calls) == 2  # data.bin and sub/note.txt, once


# ---------------------------------------------------------------- corruption


def _truncate(entry: Path):
    with open(entry / "data.bin", "r+b") as f:
        f.truncate(5)


def _delete_manifest(entry: Path):
    (entry / "_manifest.json").unlink()


def _garble_manifest(entry: Path):
    (entry / "_manifest.json").write_text("{not json")


def _delete_file(entry: Path):
    (entry / "sub" / "note.txt").unlink()


def _flip_bytes(entry: Path):
    data = bytearray((entry / "data.bin").read_bytes())
    data[3] ^= 0xFF
    (entry / "data.bin").write_bytes(bytes(data))
    cache_mod._VERIFIED.clear()  # sha256 is only re-read by a process that has not verified the entry yet


def _replace_with_file(entry: Path):
    import shutil

    shutil.rmtree(entry)
    entry.write_text("not a directory")


@pytest.mark.parametrize("corrupt", [_truncate, _delete_manifest, _garble_manifest, _delete_file, _flip_bytes,
                                     _replace_with_file])
def test_corrupt_entry_is_rebuilt(tmp_path, caplog, corrupt):
    c = ArtifactCache(tmp_path)
    build = CountingBuild()
    entry = c.directory("world", SPEC, build)
    assert c.has("world", SPEC)
    corrupt(entry)
    assert not c.has("world", SPEC)
    with caplog.at_level(logging.WARNING, logger="harness.cache"):
        again = c.directory("world", SPEC, build)
    assert again == entry and build.calls == 2 and c.stats["builds"] == 2
    assert (entry / "data.bin").read_bytes() == PAYLOAD
    assert c.has("world", SPEC)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0].getMessage()
    assert [p.name for p in (tmp_path / "world").iterdir() if p.is_dir()] == [entry.name]


def test_stale_tmp_dirs_are_swept(tmp_path):
    c = ArtifactCache(tmp_path)
    key = c.key("world", SPEC)
    stale = tmp_path / "world" / f".{key}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "half").write_text("x")
    c.directory("world", SPEC, CountingBuild())
    assert not stale.exists()


# ---------------------------------------------------------------- failing builds


def test_failing_build_leaves_nothing(tmp_path):
    c = ArtifactCache(tmp_path)

    def bad(tmp: Path):
        (tmp / "data.bin").write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        c.directory("world", SPEC, bad)
    assert only_locks(tmp_path / "world")
    assert not c.has("world", SPEC) and c.stats == {"hits": 0, "builds": 0}
    build = CountingBuild()
    c.directory("world", SPEC, build)
    assert build.calls == 1 and c.has("world", SPEC)


# ---------------------------------------------------------------- concurrency


def _concurrent_worker(root: str, counter: str, tag: str, barrier, results) -> None:
    def build(tmp: Path) -> None:
        time.sleep(0.5)
        (tmp / "who.txt").write_text(tag)
        with open(counter, "a") as f:
            f.write(tag + "\n")

    c = ArtifactCache(root)
    barrier.wait()
    entry = c.directory("members", {"seed": 7}, build)
    results.put((tag, (entry / "who.txt").read_text(), c.has("members", {"seed": 7}), c.stats))


def test_concurrent_builders_build_once(tmp_path):
    n = 4
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    counter = tmp_path / "counter.txt"
    procs = [ctx.Process(target=_concurrent_worker, args=(str(tmp_path / "c"), str(counter), f"p{i}",
                                                         barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    # Join before draining (results are tiny) so a crashed worker fails fast rather than by get() timeout.
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    got = [results.get(timeout=10) for _ in range(n)]
    builders = counter.read_text().splitlines()
    assert len(builders) == 1
    assert {content for _, content, _, _ in got} == {builders[0]}
    assert all(valid for _, _, valid, _ in got)
    assert sum(s["builds"] for *_, s in got) == 1 and sum(s["hits"] for *_, s in got) == n - 1
    c = ArtifactCache(tmp_path / "c")
    assert c.has("members", {"seed": 7})
    assert only_locks(tmp_path / "c" / "members") is False
    assert len([p for p in (tmp_path / "c" / "members").iterdir() if p.is_dir()]) == 1


# ---------------------------------------------------------------- tensors


def test_tensors_round_trip(tmp_path):
    import torch

    calls = []
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)

    def build():
        calls.append(1)
        return {"w_t": w.t(), "ids": torch.tensor([1, 2, 3]), "h": torch.ones(2, dtype=torch.bfloat16)}, \
            {"n": 3, "names": ["a", "b"], "score": 0.5}

    c = ArtifactCache(tmp_path)
    t1, m1 = c.tensors("bon", SPEC, build)
    t2, m2 = c.tensors("bon", SPEC, build)
    assert len(calls) == 1
    for t in (t1, t2):
        assert torch.equal(t["w_t"], w.t()) and torch.equal(t["ids"], torch.tensor([1, 2, 3]))
        assert t["h"].dtype == torch.bfloat16 and torch.equal(t["h"], torch.ones(2, dtype=torch.bfloat16))
    assert m1 == m2 == {"n": 3, "names": ["a", "b"], "score": 0.5}
    assert sorted(p.name for p in c.path("bon", SPEC).iterdir()) == ["_manifest.json", "meta.json",
                                                                     "tensors.safetensors"]


def test_tensors_rejects_unserialisable_meta(tmp_path):
    import torch

    c = ArtifactCache(tmp_path)
    with pytest.raises(TypeError):
        c.tensors("bon", SPEC, lambda: ({"x": torch.zeros(2)}, {"bad": object()}))
    assert only_locks(tmp_path / "bon")


# ---------------------------------------------------------------- atomic writes and defaults


def test_atomic_write_json(tmp_path):
    target = tmp_path / "out" / "results.json"
    atomic_write_json(target, {"a": 1, "b": [1.5, None]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1.5, None]}
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 2}
    assert os.listdir(target.parent) == ["results.json"]


def test_atomic_write_text_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    atomic_write_text(target, "old")

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RMHARNESS_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("RMHARNESS_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "rmharness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "rmharness"


# ---------------------------------------------------------------- content keys, moved and read-only caches


def test_content_fingerprint_follows_content_not_location(tmp_path):
    from harness.cache import content_fingerprint

    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "weights.bin").write_bytes(b"\x00" * 64)
    (a / "sub" / "config.json").write_text("{}")
    b = tmp_path / "elsewhere" / "b"
    b.parent.mkdir()
    os.rename(a, b)  # a model directory moved (or a cache remounted elsewhere)
    moved = content_fingerprint(b)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "x.pyc").write_bytes(b"bytecode")  # not part of a model's content
    assert content_fingerprint(b) == moved
    (b / "weights.bin").write_bytes(b"\x01" + b"\x00" * 63)  # replaced in place: same name, same size
    assert content_fingerprint(b) != moved
    (b / "weights.bin").write_bytes(b"\x00" * 64)
    assert content_fingerprint(b) == moved
    assert content_fingerprint(b / "weights.bin") != moved  # a single file: its content alone


def test_moved_cache_is_reused(tmp_path):
    build = CountingBuild()
    first = ArtifactCache(tmp_path / "here").directory("world", SPEC, build)
    os.rename(tmp_path / "here", tmp_path / "there")
    again = ArtifactCache(tmp_path / "there").directory("world", SPEC, build)
    assert build.calls == 1 and again == tmp_path / "there" / "world" / first.name


@pytest.fixture
def read_only(monkeypatch):
    """Make writes below a root fail as on a read-only mount. (Monkeypatched rather than chmod'ed: the tests may
    run as root, whom file modes do not stop.) Returns the roots made read-only and the paths opened for write."""
    roots: list[Path] = []
    attempts: list[str] = []
    real_open, real_mkdir = os.open, Path.mkdir

    def inside(path) -> bool:
        return any(Path(path).resolve().is_relative_to(r.resolve()) for r in roots)

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            attempts.append(str(path))
            raise OSError(30, "Read-only file system", str(path))  # errno 30 = EROFS
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(self, *args, **kwargs):
        if inside(self) and not self.is_dir():
            raise OSError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(cache_mod.os, "open", fake_open)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
    return roots, attempts


def test_read_only_cache_reads_without_a_lock_and_builds_misses_uncached(tmp_path, read_only, caplog):
    roots, attempts = read_only
    build = CountingBuild()
    entry = ArtifactCache(tmp_path).directory("world", SPEC, build)
    for lock in tmp_path.rglob("*.lock"):
        lock.unlink()  # a copy made without the lock files
    roots.append(tmp_path)
    c = ArtifactCache(tmp_path)
    assert c.directory("world", SPEC, build) == entry and build.calls == 1 and not attempts  # no lock for a hit
    with caplog.at_level(logging.WARNING):
        other = c.directory("world", {**SPEC, "lr": 0.5}, build)  # a miss: built, but not into the cache
    assert build.calls == 2 and attempts and "cannot be written" in caplog.text
    assert not other.is_relative_to(tmp_path) and (other / "data.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "world").iterdir() if p.is_dir()) == [entry.name]
    with caplog.at_level(logging.WARNING):
        new_kind = c.directory("other_kind", SPEC, build)  # even the kind's directory cannot be made
    assert build.calls == 3 and (new_kind / "data.bin").exists() and not (tmp_path / "other_kind").exists()
