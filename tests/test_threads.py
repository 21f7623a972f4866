"""threads: auto — physical cores, capped, split among parallel jobs; the job records what it used."""

from harness.threads import AUTO_MAX, auto_threads, job_threads, physical_cores, usable_cpus


def _topology(root, siblings: dict[int, str]):
    for cpu, text in siblings.items():
        (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(text + "\n")
    return root


def test_hyperthreads_of_one_core_count_once(tmp_path):
    sysfs = _topology(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert physical_cores([0, 1, 2, 3], sysfs) == 2
    assert physical_cores([0, 2], sysfs) == 1  # an affinity of one core's two threads


def test_unreadable_topology_counts_every_cpu(tmp_path):
    assert physical_cores([0, 1, 2], tmp_path / "absent") == 3


def test_auto_is_capped_and_split_among_parallel_jobs():
    alone = auto_threads()
    assert 1 <= alone <= min(AUTO_MAX, len(usable_cpus()))
    assert auto_threads(parallel_jobs=len(usable_cpus())) == 1  # joblib n_jobs=-1: one job per CPU
    assert auto_threads(parallel_jobs=10**6) == 1  # never 0
    assert job_threads("auto") == job_threads(None) == alone
    assert job_threads(3) == 3
