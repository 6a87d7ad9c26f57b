"""Memory guard: size parsing, estimates checked against hand-computed bytes, available memory, refusals."""

from __future__ import annotations

import pytest

from cnncheck import memory
from cnncheck import catalog
from cnncheck.errors import CnnCheckError


@pytest.mark.parametrize("text, expected", [
    ("2G", 2 * 1024**3),
    ("512M", 512 * 1024**2),
    ("512m", 512 * 1024**2),
    ("1.5GiB", 3 * 1024**3 // 2),
    ("2GB", 2 * 1024**3),
    ("1k", 1024),
    ("100", 100),
    ("100B", 100),
    (" 3 T ", 3 * 1024**4),
    (4096, 4096),
])
def test_parse_size(text, expected):
    assert memory.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "2X", "G", "iB", "-1G", "0", "0M", "1.2.3G", True])
def test_parse_size_rejects(text):
    with pytest.raises(CnnCheckError, match="memory size"):
        memory.parse_size(text)


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (3 * 1024**2, "3.0 MiB"), (5 * 1024**3 // 2, "2.5 GiB"), (2 * 1024**4, "2.0 TiB"),
                                     (3 * 1024**4 * 10**9, "3e+09 TiB")])
def test_format_bytes(n, text):
    assert memory.format_bytes(n) == text


CONV, POOL, AFFINE, RELU = (catalog.spec(n) for n in ("conv", "pool", "affine", "relu"))


def test_conv_gradcheck_estimate_by_hand():
    # The notebook's conv check: x (4, 3, 5, 5), w (2, 3, 3, 3), b (2,), stride 2, pad 1 -> out (4, 2, 3, 3).
    params = CONV.resolve({})
    est = memory.estimate_gradcheck(CONV, params, "float64")
    n_in, n_out = 300 + 54 + 2, 72
    workspace = 2 * (3 * 3 * 3) * (4 * 3 * 3) + 2 * 4 * 3 * 7 * 7   # im2col and its gradient, x padded and its gradient
    assert est.parts == {
        "inputs": (n_in + n_out) * 8,
        "outputs": 2 * n_out * 8 + 2 * n_out * 8,
        "gradients": 2 * n_in * 8 + n_in * 8,
        "copies": 3 * n_in * 8,
        "probes": 2 * n_in * n_out * 8,
        "workspace": workspace * 8,
    }
    assert est.total == sum(est.parts.values())


def test_float32_halves_the_array_parts():
    params = CONV.resolve({})
    e64 = memory.estimate_gradcheck(CONV, params, "float64")
    e32 = memory.estimate_gradcheck(CONV, params, "float32")
    for part in ("inputs", "copies", "workspace"):
        assert e32.parts[part] * 2 == e64.parts[part]
    assert e32.parts["probes"] == e64.parts["probes"]       # probed outputs are float64


def test_every_layer_has_an_estimate():
    for spec in catalog.specs():
        params = spec.resolve({})
        assert memory.estimate_gradcheck(spec, params).total > 0
        assert memory.estimate_bench(spec, spec.resolve({}, purpose="bench")).total > 0


def test_pool_and_relu_estimates():
    pool = memory.estimate_gradcheck(POOL, POOL.resolve({}))
    # x (3, 2, 8, 8) -> out (3, 2, 4, 4); the window matrix holds 2x2 per output, twice.
    assert pool.parts["workspace"] == 2 * 3 * 2 * 4 * 4 * 4 * 8
    relu = memory.estimate_gradcheck(RELU, RELU.resolve({"shape": (10, 10)}))
    assert relu.parts["inputs"] == 200 * 8 and "workspace" not in relu.parts


def test_bench_estimate_by_hand():
    params = AFFINE.resolve({"shape": (10, 20), "filters": 5})
    est = memory.estimate_bench(AFFINE, params, "float64")
    n_in, n_out = 200 + 100 + 5, 50
    assert est.parts == {"inputs": (n_in + n_out) * 8, "outputs": 2 * n_out * 8, "gradients": 2 * n_in * 8}


def test_a_huge_shape_is_refused_in_words():
    params = CONV.resolve({"shape": (10**6, 10**3, 10**3, 10**3)})
    with pytest.raises(CnnCheckError) as info:
        memory.guard([(CONV, params)], available=10**9)
    assert "TiB but only" in str(info.value) and "e+" in str(info.value) and len(str(info.value)) < 120


def test_estimate_grows_with_the_input():
    small = memory.estimate_gradcheck(CONV, CONV.resolve({"shape": (2, 3, 8, 8)}))
    large = memory.estimate_gradcheck(CONV, CONV.resolve({"shape": (8, 3, 8, 8)}))
    assert large.total > 3 * small.total


def test_describe_lists_largest_part_first():
    text = memory.MemoryEstimate.from_parts(inputs=1024, im2col=3 * 1024**3).describe()
    assert text == "about 3.0 GiB (im2col 3.0 GiB, inputs 1.0 KiB)"


def test_check_fits_refuses_with_one_clear_line():
    with pytest.raises(CnnCheckError) as info:
        memory.check_fits(3 * 1024**3, available=1024**3)
    assert str(info.value) == ("needs about 3.0 GiB but only 1.0 GiB is available; "
                               "use a smaller --shape or --force")


def test_check_fits_passes_and_force_skips():
    memory.check_fits(memory.MemoryEstimate.from_parts(inputs=100), available=100)
    memory.check_fits(10**15, force=True, available=1)


def test_check_fits_with_unknown_memory_refuses_nothing(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    memory.check_fits(10**15)


def test_check_fits_reads_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    with pytest.raises(CnnCheckError, match="only 1000 B is available"):
        memory.check_fits(1001)


def test_meminfo(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n")
    assert memory._meminfo_available(str(path)) == 2048 * 1024
    path.write_text("MemTotal:       16000 kB\n")
    assert memory._meminfo_available(str(path)) is None
    assert memory._meminfo_available(str(tmp_path / "absent")) is None


def test_cgroup_limit(tmp_path):
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/job.slice\n")
    base = tmp_path / "fs" / "job.slice"
    base.mkdir(parents=True)
    (base / "memory.max").write_text("1000\n")
    (base / "memory.current").write_text("400\n")
    assert memory._cgroup_available(str(tmp_path / "fs"), str(cgroup)) == 600
    (base / "memory.max").write_text("max\n")
    assert memory._cgroup_available(str(tmp_path / "fs"), str(cgroup)) is None
    assert memory._cgroup_available(str(tmp_path / "fs"), str(tmp_path / "absent")) is None


def test_available_memory_takes_the_tighter_bound(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 8000)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: 3000)
    assert memory.available_memory() == 3000
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    assert memory.available_memory() == 8000


def test_available_memory_falls_back_to_sysconf(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    monkeypatch.setattr(memory, "_sysconf_available", lambda: 1234)
    assert memory.available_memory() == 1234
    monkeypatch.setattr(memory, "_sysconf_available", lambda: None)
    monkeypatch.setattr(memory, "_windows_available", lambda: None)
    assert memory.available_memory() is None


def test_available_memory_on_this_machine_is_positive():
    value = memory.available_memory()
    assert value is None or value > 0


def test_guard_uses_the_largest_check():
    pairs = [(CONV, CONV.resolve({})), (RELU, RELU.resolve({}))]
    largest = memory.guard(pairs, available=10**9)
    assert largest == memory.estimate_gradcheck(CONV, CONV.resolve({}))


def test_guard_counts_parallel_runs():
    pairs = [(CONV, CONV.resolve({}))]
    need = memory.estimate_gradcheck(CONV, CONV.resolve({})).total
    memory.guard(pairs, available=2 * need, parallel=2)
    with pytest.raises(CnnCheckError, match="needs about"):
        memory.guard(pairs, available=2 * need, parallel=3)


def test_guard_respects_the_memory_limit_and_force():
    pairs = [(CONV, CONV.resolve({"shape": (64, 3, 32, 32)}))]
    with pytest.raises(CnnCheckError, match="--memory-limit allows 1.0 MiB"):
        memory.guard(pairs, memory_limit=1024**2, available=10**12)
    assert memory.guard(pairs, memory_limit=1024**2, available=1, force=True).total > 1024**2


def test_guard_for_bench_and_nothing():
    pairs = [(CONV, CONV.resolve({}, purpose="bench"))]
    assert memory.guard(pairs, purpose="bench", available=10**12) == \
        memory.estimate_bench(CONV, CONV.resolve({}, purpose="bench"))
    assert memory.guard([], available=1) is None
    with pytest.raises(ValueError):
        memory.guard(pairs, purpose="train")
