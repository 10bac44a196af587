"""The GPU inventory against a fake of pynvml (and the real pynvml where it can run)."""

from __future__ import annotations

import inspect
import json
import os
import re
import threading
from pathlib import Path

import psutil
import pynvml
import pytest
from fakes.nvml import (
    DRIVER_NOT_LOADED,
    FUNCTION_NOT_FOUND,
    GIB,
    GPU_IS_LOST,
    LIB_RM_VERSION_MISMATCH,
    LIBRARY_NOT_FOUND,
    NO_PERMISSION,
    NOT_SUPPORTED,
    FakeDevice,
    FakeNvml,
)
from hypothesis import given
from hypothesis import strategies as st

from loradeck.core.errors import GpuError
from loradeck.core.gpu import (
    GpuInventory,
    GpuProcess,
    GpuRing,
    GpuSample,
    GpuSnapshot,
    GpuSpec,
    InventorySnapshot,
    foreign_usage_gb,
    format_inventory,
    inventory_json,
    parse_gpu_spec,
)

REPO = Path(__file__).resolve().parent.parent
HINT = "to simulate GPUs use --gpus sim:4 (or sim:4x24 for 24 GiB each)"


def four_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeDevice(
                name=f"NVIDIA A100-SXM4-80GB #{i}",
                uuid=f"GPU-{i}",
                total_bytes=80 * GIB,
                used_bytes=i * GIB,
                utilization=10 * i,
                temperature=30 + i,
                power_mw=100_000 + i * 500,
                power_limit_mw=400_000,
            )
            for i in range(4)
        ],
        topology={(0, 1): 0, (0, 2): 20, (0, 3): 50, (1, 2): 20, (1, 3): 50, (2, 3): 10},
    )


def clock() -> float:
    return 1234.5


# --------------------------------------------------------------------------- the fake itself


def test_every_nvml_name_the_inventory_uses_exists_in_pynvml_and_in_the_fake() -> None:
    # catches a misspelt or renamed pynvml function that the fake alone would hide
    source = (REPO / "core" / "gpu.py").read_text(encoding="utf-8")
    used = set(re.findall(r"\bnvml\.(\w+)", source))
    assert "nvmlDeviceGetEnforcedPowerLimit" in used
    for name in sorted(used):
        assert hasattr(pynvml, name), f"pynvml has no {name}"
        assert hasattr(FakeNvml, name), f"the fake has no {name}"


def _required(fn: object) -> int:
    params = inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    return sum(1 for p in params if p.default is inspect.Parameter.empty)


def test_the_fake_takes_the_arguments_pynvml_takes() -> None:
    fake = FakeNvml()
    for name in dir(FakeNvml):
        if name.startswith("nvml"):
            assert _required(getattr(fake, name)) == _required(getattr(pynvml, name)), name


# --------------------------------------------------------------------------- --gpus


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("auto", GpuSpec("auto"), "auto"),
        (" AUTO ", GpuSpec("auto"), "auto"),
        ("0,2,3", GpuSpec("list", indices=(0, 2, 3)), "0,2,3"),
        ("1 , 0", GpuSpec("list", indices=(1, 0)), "1,0"),
        ("7", GpuSpec("list", indices=(7,)), "7"),
        ("sim:4", GpuSpec("sim", sim_count=4, sim_memory_gb=24.0), "sim:4x24"),
        ("sim:2x80", GpuSpec("sim", sim_count=2, sim_memory_gb=80.0), "sim:2x80"),
        ("SIM:1X40.5", GpuSpec("sim", sim_count=1, sim_memory_gb=40.5), "sim:1x40.5"),
    ],
)
def test_parse_gpu_spec(text: str, expected: GpuSpec, canonical: str) -> None:
    spec = parse_gpu_spec(text)
    assert spec == expected
    assert str(spec) == canonical
    assert parse_gpu_spec(canonical) == spec


def test_bad_spec_says_what_is_expected() -> None:
    with pytest.raises(GpuError) as info:
        parse_gpu_spec("sim:x")
    assert info.value.message == (
        "--gpus 'sim:x': expected auto, a list like 0,2,3, or sim:N / sim:NxG (e.g. sim:4x24)"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected auto"),
        ("0,,1", "expected auto"),
        ("0,", "expected auto"),
        ("-1", "expected auto"),
        ("gpu0", "expected auto"),
        ("²", "expected auto"),
        ("sim", "expected auto"),
        ("sim:4x", "expected auto"),
        ("sim:-1", "expected auto"),
        ("sim:0", "sim:N needs N from 1 to 64"),
        ("sim:65", "sim:N needs N from 1 to 64"),
        ("sim:2x0", "needs G (GiB per GPU) above 0"),
        ("sim:2x5000", "at most 4096"),
        ("0,1,0", "GPU 0 is listed twice"),
    ],
)
def test_bad_specs(text: str, fragment: str) -> None:
    with pytest.raises(GpuError, match=re.escape(fragment)):
        parse_gpu_spec(text)


def test_error_names_where_the_value_came_from() -> None:
    with pytest.raises(GpuError) as info:
        parse_gpu_spec("nope", source="resources.gpus in config.toml")
    assert info.value.message.startswith("resources.gpus in config.toml 'nope': expected auto")


@given(st.text(max_size=40))
def test_parse_never_crashes_with_anything_but_gpu_error(text: str) -> None:
    try:
        spec = parse_gpu_spec(text)
    except GpuError as err:
        message = err.message
    else:
        assert parse_gpu_spec(str(spec)) == spec
        return
    assert repr(text) in message


@given(st.from_regex(r"\A(sim:[0-9]{1,3}(x[0-9]{1,4}(\.[0-9])?)?|[0-9]{1,2}(,[0-9]{1,2}){0,4})\Z"))
def test_parse_near_valid_text(text: str) -> None:
    try:
        spec = parse_gpu_spec(text)
    except GpuError:
        return
    assert parse_gpu_spec(str(spec)) == spec


# --------------------------------------------------------------------------- simulated


def test_sim_inventory_needs_no_nvml() -> None:
    fake = FakeNvml(init_error=LIBRARY_NOT_FOUND)
    inv = GpuInventory("sim:8x40", nvml=fake, clock=clock)
    snap = inv.snapshot()
    assert fake.calls == {}
    assert snap.source == "sim:8x40"
    assert snap.message is None
    assert snap.taken_at == 1234.5
    assert [g.index for g in snap.gpus] == list(range(8))
    gpu = snap.gpus[5]
    assert gpu.simulated
    assert gpu.memory_total_gb == 40.0
    assert gpu.memory_used_gb == 0.0
    assert gpu.memory_free_gb == 40.0
    assert gpu.processes == ()
    assert gpu.name == "Simulated GPU (40 GiB)"
    assert len({g.uuid for g in snap.gpus}) == 8


def test_sim_distances_pair_gpus() -> None:
    snap = GpuInventory("sim:8").snapshot()
    d = snap.distance
    assert d[0, 1] == d[1, 0] == 10
    assert d[2, 3] == 10
    assert d[0, 2] == d[3, 1] == 30
    assert d[0, 4] == d[7, 3] == 50
    assert len(d) == 8 * 7
    assert all(d[a, b] == d[b, a] for a, b in d)


def test_sim_usage_reports_declared_memory_as_processes() -> None:
    inv = GpuInventory(parse_gpu_spec("sim:2x24"))
    snap = inv.snapshot({1: [(111, 10.0), (222, 6.5)]})
    assert snap.gpus[0].processes == ()
    gpu = snap.gpus[1]
    assert gpu.processes == (GpuProcess(111, 10.0), GpuProcess(222, 6.5))
    assert gpu.memory_used_gb == 16.5
    assert gpu.memory_free_gb == 7.5
    assert foreign_usage_gb(gpu, loradeck_pids=()) == 0.0
    samples = inv.sample({1: [(111, 10.0)]})
    assert [s.memory_used_gb for s in samples] == [0.0, 10.0]


def test_sim_usage_for_a_gpu_that_does_not_exist() -> None:
    with pytest.raises(GpuError, match=r"simulated GPU 2 does not exist \(sim:2x24 has 0-1\)"):
        GpuInventory("sim:2").snapshot({2: [(1, 1.0)]})


# --------------------------------------------------------------------------- NVML


def test_nvml_snapshot_values_and_units() -> None:
    me = os.getpid()
    fake = FakeNvml(
        [
            FakeDevice(
                name=b"NVIDIA GeForce RTX 4090",
                uuid="GPU-aaa",
                total_bytes=24 * GIB,
                used_bytes=6 * GIB + GIB // 2,
                utilization=87,
                temperature=65,
                power_mw=312_500,
                power_limit_mw=450_000,
                processes=[(me, 4 * GIB), (99999, None)],
            )
        ]
    )
    snap = GpuInventory("auto", nvml=fake, clock=clock).snapshot()
    assert snap.source == "nvml"
    assert snap.message is None
    assert snap.taken_at == 1234.5
    assert snap.distance == {}
    assert snap.gpus == (
        GpuSnapshot(
            index=0,
            uuid="GPU-aaa",
            name="NVIDIA GeForce RTX 4090",
            memory_total_gb=24.0,
            memory_used_gb=6.5,
            utilization=87.0,
            temperature_c=65.0,
            power_w=312.5,
            power_limit_w=450.0,
            processes=(GpuProcess(me, 4.0), GpuProcess(99999, 0.0)),
            simulated=False,
        ),
    )
    assert snap.gpus[0].memory_free_gb == 17.5
    assert snap.gpu(0) is snap.gpus[0]
    with pytest.raises(GpuError, match="GPU 3 is not in the inventory"):
        snap.gpu(3)


def test_nvml_is_initialised_once_and_handles_are_reused() -> None:
    fake = four_gpus()
    inv = GpuInventory("auto", nvml=fake)
    for _ in range(3):
        assert len(inv.snapshot().gpus) == 4
    inv.sample()
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 4
    assert fake.calls["nvmlDeviceGetName"] == 4
    assert fake.calls["nvmlDeviceGetTopologyCommonAncestor"] == 6
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 16
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 12
    inv.close()
    assert fake.initialised == 0
    inv.close()  # closing twice is harmless
    assert fake.calls["nvmlShutdown"] == 1
    inv.snapshot()  # a reading after close starts NVML again
    assert fake.calls["nvmlInit"] == 2
    inv.close()


def test_concurrent_first_readings_initialise_once() -> None:
    fake = four_gpus()
    inv = GpuInventory("auto", nvml=fake)
    barrier = threading.Barrier(6)
    results: list[int] = []

    def read() -> None:
        barrier.wait()
        results.append(len(inv.snapshot().gpus))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [4] * 6
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 4


def test_sample_reads_only_the_fast_changing_values() -> None:
    fake = four_gpus()
    inv = GpuInventory("auto", nvml=fake, clock=clock)
    inv.snapshot()
    before = fake.calls.copy()
    samples = inv.sample()
    new = fake.calls - before
    assert set(new) == {
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
    }
    assert samples[2] == GpuSample(
        index=2,
        taken_at=1234.5,
        utilization=20.0,
        memory_used_gb=2.0,
        temperature_c=32.0,
        power_w=101.0,
    )


@pytest.mark.parametrize("code", [NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION])
def test_unsupported_readings_are_none(code: int) -> None:
    optional = [
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetComputeRunningProcesses",
    ]
    fake = FakeNvml(
        [FakeDevice(processes=[(1, GIB)], errors=dict.fromkeys(optional, code)), FakeDevice()]
    )
    gpu = GpuInventory("auto", nvml=fake).snapshot().gpus[0]
    assert gpu.utilization is None
    assert gpu.temperature_c is None
    assert gpu.power_w is None
    assert gpu.power_limit_w is None
    assert gpu.processes == ()


@pytest.mark.parametrize(
    ("function", "what"),
    [
        ("nvmlDeviceGetMemoryInfo", "memory"),
        ("nvmlDeviceGetTemperature", "temperature"),
        ("nvmlDeviceGetComputeRunningProcesses", "processes"),
    ],
)
def test_a_lost_gpu_is_an_error_not_a_none(function: str, what: str) -> None:
    fake = FakeNvml([FakeDevice(), FakeDevice(errors={function: GPU_IS_LOST})])
    with pytest.raises(
        GpuError, match=f"GPU 1: NVML could not read its {what}: GPU is lost"
    ) as info:
        GpuInventory("auto", nvml=fake).snapshot()
    assert isinstance(info.value.__cause__, pynvml.NVMLError_GpuIsLost)


def test_processes_fall_back_to_v2_on_an_old_driver() -> None:
    fake = FakeNvml([FakeDevice(processes=[(42, 3 * GIB)], old_driver=True)])
    gpu = GpuInventory("auto", nvml=fake).snapshot().gpus[0]
    assert gpu.processes == (GpuProcess(42, 3.0),)
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1


def test_list_spec_keeps_only_those_gpus_and_their_distances() -> None:
    fake = four_gpus()
    snap = GpuInventory("3,0,2", nvml=fake).snapshot()
    assert [g.index for g in snap.gpus] == [3, 0, 2]
    assert [g.uuid for g in snap.gpus] == ["GPU-3", "GPU-0", "GPU-2"]
    assert snap.gpus[0].memory_used_gb == 3.0
    assert dict(snap.distance) == {
        (0, 2): 20,
        (2, 0): 20,
        (0, 3): 50,
        (3, 0): 50,
        (2, 3): 10,
        (3, 2): 10,
    }
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 3


def test_topology_levels_and_unknown_pairs() -> None:
    fake = FakeNvml([FakeDevice(), FakeDevice(), FakeDevice()], topology={(1, 0): 0})
    d = GpuInventory("auto", nvml=fake).snapshot().distance
    assert d[0, 1] == d[1, 0] == 0
    # NVML cannot tell: never prefer the pair
    assert d[0, 2] == d[2, 1] == 50
    assert (0, 0) not in d


def test_list_spec_with_an_index_that_does_not_exist() -> None:
    fake = four_gpus()
    with pytest.raises(GpuError) as info:
        GpuInventory("0,5", nvml=fake).snapshot()
    assert info.value.message == "--gpus '0,5': GPU 5 does not exist; NVML found 4 GPUs (0-3)"
    assert fake.initialised == 0  # NVML was shut down again


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
        (DRIVER_NOT_LOADED, "Driver Not Loaded"),
    ],
)
def test_auto_without_nvml_is_empty_with_a_message(code: int, reason: str) -> None:
    fake = FakeNvml([FakeDevice()], init_error=code)
    inv = GpuInventory("auto", nvml=fake)
    snap = inv.snapshot()
    assert snap.gpus == ()
    assert snap.distance == {}
    assert snap.source == "nvml"
    assert snap.message == (
        f"no NVIDIA GPU found (NVML: {reason}); jobs with gpus = 0 still run; {HINT}"
    )
    inv.snapshot()
    assert fake.calls["nvmlInit"] == 1  # not retried every tick
    assert inv.sample() == ()
    inv.close()
    assert "nvmlShutdown" not in fake.calls


def test_auto_with_zero_devices() -> None:
    fake = FakeNvml([])
    snap = GpuInventory("auto", nvml=fake).snapshot()
    assert snap.gpus == ()
    assert snap.message is not None
    assert snap.message.startswith("no NVIDIA GPU found (NVML: no devices); ")
    assert fake.initialised == 0


def test_list_without_nvml_is_an_error_with_the_hint() -> None:
    fake = FakeNvml(init_error=LIBRARY_NOT_FOUND)
    with pytest.raises(GpuError) as info:
        GpuInventory("0,1", nvml=fake).snapshot()
    assert info.value.message == (
        f"--gpus '0,1': no NVIDIA GPU found (NVML: NVML Shared Library Not Found); {HINT}"
    )
    assert isinstance(info.value.__cause__, pynvml.NVMLError_LibraryNotFound)


def test_a_failing_device_count_is_an_error_and_nvml_is_shut_down() -> None:
    fake = FakeNvml([FakeDevice()], count_error=pynvml.NVML_ERROR_UNKNOWN)
    with pytest.raises(GpuError, match="NVML could not read the GPU count: Unknown Error"):
        GpuInventory("auto", nvml=fake).snapshot()
    assert fake.initialised == 0


def test_a_broken_driver_is_an_error_even_with_auto() -> None:
    fake = FakeNvml([FakeDevice()], init_error=LIB_RM_VERSION_MISMATCH)
    with pytest.raises(GpuError, match=r"NVML failed to start: .*check the NVIDIA driver"):
        GpuInventory("auto", nvml=fake).snapshot()


def _real_nvml_loads() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_real_nvml_loads(), reason="this machine has NVML")
def test_real_pynvml_without_a_gpu() -> None:
    with GpuInventory("auto") as inv:
        snap = inv.snapshot()
    assert snap.gpus == ()
    assert snap.message == (
        "no NVIDIA GPU found (NVML: NVML Shared Library Not Found); "
        f"jobs with gpus = 0 still run; {HINT}"
    )
    with pytest.raises(GpuError, match=r"--gpus '0': no NVIDIA GPU found"):
        GpuInventory("0").snapshot()


@pytest.mark.skipif(not _real_nvml_loads(), reason="no NVML on this machine")
def test_real_pynvml_with_gpus() -> None:
    with GpuInventory("auto") as inv:
        snap = inv.snapshot()
    assert snap.message is None
    for gpu in snap.gpus:
        assert gpu.memory_total_gb > 0
        assert gpu.uuid.startswith(("GPU-", "MIG-"))
    json.dumps(inventory_json(snap))


# --------------------------------------------------------------------------- foreign memory


def real_gpu(used: float, processes: list[tuple[int, float]], simulated: bool = False):
    return GpuSnapshot(
        index=0,
        uuid="GPU-x",
        name="X",
        memory_total_gb=24.0,
        memory_used_gb=used,
        utilization=None,
        temperature_c=None,
        power_w=None,
        power_limit_w=None,
        processes=tuple(GpuProcess(pid, gb) for pid, gb in processes),
        simulated=simulated,
    )


@pytest.mark.parametrize(
    ("used", "processes", "ours", "foreign"),
    [
        (0.0, [], set(), 0.0),
        # idle GPU: the driver's reserve is taken
        (0.5, [], set(), 0.5),
        # only foreign processes: they and the unlisted remainder
        (10.5, [(1, 6.0), (2, 4.0)], set(), 10.5),
        # a loradeck job and a foreign one: the remainder is the job's context
        (10.5, [(1, 6.0), (2, 4.0)], {1}, 4.0),
        # only loradeck's jobs
        (8.0, [(1, 6.0), (2, 1.0)], {1, 2}, 0.0),
        # NVML lists processes it cannot size (0.0): their memory is in the remainder
        (7.0, [(5, 0.0)], set(), 7.0),
        # NVML may list more than "used" (rounding): never negative
        (3.0, [(5, 4.0)], {5}, 0.0),
    ],
)
def test_foreign_usage(
    used: float, processes: list[tuple[int, float]], ours: set[int], foreign: float
) -> None:
    assert foreign_usage_gb(real_gpu(used, processes), ours) == pytest.approx(foreign)


def test_simulated_gpus_have_no_foreign_usage() -> None:
    assert foreign_usage_gb(real_gpu(9.0, [(7, 9.0)], simulated=True), ()) == 0.0


# --------------------------------------------------------------------------- `loradeck gpus`


def names(pid: int) -> str | None:
    return {100: "python", 300: "X"}.get(pid)


def mixed_snapshot() -> InventorySnapshot:
    fake = FakeNvml(
        [
            FakeDevice(
                name="RTX 4090",
                used_bytes=13 * GIB,
                utilization=87,
                temperature=65,
                power_mw=300_000,
                processes=[(100, 10 * GIB), (300, 2 * GIB)],
            ),
            FakeDevice(
                name="RTX A6000",
                total_bytes=48 * GIB,
                used_bytes=GIB // 2,
                errors={
                    "nvmlDeviceGetTemperature": NOT_SUPPORTED,
                    "nvmlDeviceGetPowerUsage": NOT_SUPPORTED,
                },
                processes=[(400, None)],
            ),
        ],
        topology={(0, 1): 40},
    )
    return GpuInventory("auto", nvml=fake, clock=clock).snapshot()


def test_format_inventory_table() -> None:
    text = format_inventory(
        mixed_snapshot(), {0: ["sdxl", "flux"]}, loradeck_pids={100}, name_of=names
    )
    assert text.splitlines() == [
        "2 GPUs (nvml)",
        "GPU  NAME              MEMORY  UTIL  TEMP      POWER  LORADECK JOBS  FOREIGN",
        "  0  RTX 4090   13.0/24.0 GiB   87%  65°C  300/450 W  sdxl, flux     2.0 GiB (300 X 2.0G)",
        "  1  RTX A6000   0.5/48.0 GiB    0%     -          -  -              0.5 GiB (400 ? 0.0G)",
    ]


def test_format_inventory_names_foreign_processes_through_psutil() -> None:
    me = os.getpid()
    fake = FakeNvml([FakeDevice(used_bytes=2 * GIB, processes=[(me, 2 * GIB)])])
    text = format_inventory(GpuInventory("auto", nvml=fake).snapshot())
    assert f"({me} {psutil.Process(me).name()} 2.0G)" in text


def test_format_empty_and_simulated() -> None:
    fake = FakeNvml(init_error=LIBRARY_NOT_FOUND)
    empty = GpuInventory("auto", nvml=fake).snapshot()
    assert format_inventory(empty) == empty.message
    sim = GpuInventory("sim:2x24").snapshot({0: [(5, 12.0)]})
    assert format_inventory(sim, {0: ["demo-1"]}).splitlines() == [
        "2 simulated GPUs (sim:2x24)",
        "GPU  NAME                           MEMORY  UTIL  TEMP  POWER  LORADECK JOBS  FOREIGN",
        "  0  Simulated GPU (24 GiB)  12.0/24.0 GiB     -     -      -  demo-1         -",
        "  1  Simulated GPU (24 GiB)   0.0/24.0 GiB     -     -      -  -              -",
    ]


def test_inventory_json_shape() -> None:
    data = inventory_json(mixed_snapshot(), {0: ["sdxl-a"]}, loradeck_pids={100}, name_of=names)
    assert json.loads(json.dumps(data)) == data
    assert data["source"] == "nvml"
    assert data["taken_at"] == 1234.5
    assert data["message"] is None
    assert data["distance"] == [{"a": 0, "b": 1, "level": 40}]
    first = data["gpus"][0]
    assert first == {
        "index": 0,
        "uuid": "GPU-00000000-0000-0000-0000-000000000000",
        "name": "RTX 4090",
        "simulated": False,
        "memory_total_gb": 24.0,
        "memory_used_gb": 13.0,
        "memory_free_gb": 11.0,
        "utilization": 87.0,
        "temperature_c": 65.0,
        "power_w": 300.0,
        "power_limit_w": 450.0,
        "jobs": ["sdxl-a"],
        "processes": [
            {"pid": 100, "used_gb": 10.0, "loradeck": True, "name": "python"},
            {"pid": 300, "used_gb": 2.0, "loradeck": False, "name": "X"},
        ],
        "foreign_gb": 2.0,
    }
    second = data["gpus"][1]
    assert second["temperature_c"] is None
    assert second["jobs"] == []
    assert second["foreign_gb"] == 0.5


def test_inventory_json_of_sim_and_of_nothing() -> None:
    sim = inventory_json(GpuInventory("sim:2").snapshot({1: [(9, 3.0)]}))
    assert sim["distance"] == [{"a": 0, "b": 1, "level": 10}]
    assert sim["gpus"][1]["processes"] == [
        {"pid": 9, "used_gb": 3.0, "loradeck": True, "name": None}
    ]
    empty = inventory_json(
        GpuInventory("auto", nvml=FakeNvml(init_error=DRIVER_NOT_LOADED)).snapshot()
    )
    assert empty["gpus"] == []
    assert "Driver Not Loaded" in empty["message"]


# --------------------------------------------------------------------------- rings


def sample(i: int, *, index: int = 0) -> GpuSample:
    return GpuSample(
        index=index,
        taken_at=float(i),
        utilization=float(i % 100),
        memory_used_gb=i / 10,
        temperature_c=None if i % 2 else 50.0,
        power_w=100.0 + i,
    )


def test_ring_keeps_the_last_capacity_samples() -> None:
    ring = GpuRing(0, capacity=5)
    assert len(ring) == 0
    assert ring.series("utilization") == []
    for i in range(12):
        ring.append(sample(i))
    assert len(ring) == 5
    assert ring.series("taken_at") == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ring.series("utilization") == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ring.series("memory_used_gb") == [0.7, 0.8, 0.9, 1.0, 1.1]
    assert ring.series("temperature_c") == [None, 50.0, None, 50.0, None]
    assert ring.series("power_w") == [107.0, 108.0, 109.0, 110.0, 111.0]


def test_ring_from_snapshots() -> None:
    inv = GpuInventory("auto", nvml=four_gpus(), clock=clock)
    rings = {i: GpuRing(i, capacity=3) for i in range(4)}
    for _ in range(4):
        for s in inv.snapshot().samples():
            rings[s.index].append(s)
    for s in inv.sample():
        rings[s.index].append(s)
    assert len(rings[3]) == 3
    assert rings[3].series("power_w") == [101.5] * 3


def test_ring_refuses_bad_use() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        GpuRing(0, capacity=0)
    ring = GpuRing(1)
    with pytest.raises(ValueError, match="sample of GPU 0 appended to the ring of GPU 1"):
        ring.append(sample(0, index=0))
    with pytest.raises(ValueError, match="unknown GPU metric 'fan'"):
        ring.series("fan")  # type: ignore[arg-type]
