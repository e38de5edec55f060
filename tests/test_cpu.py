"""The CPU decides what bf16 costs: refused where the CPU has no bf16 instructions (measured, not
assumed), named in bench's header, never chosen by `auto`. An AVX2-only CPU is made for real
by keeping torch and oneDNN to AVX2 in a fresh process: bf16 matmuls then run in software there,
as on such a machine."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from reasonlab import runtime
from reasonlab.runtime import cpu_capability, cpu_has_native_bf16, matmul_peak, resolve_precision
from test_bench import FP32_CEILING_PER_THREAD

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="an x86 CPU's instruction sets")


def _reasonlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reasonlab", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


@x86
def test_the_capability_is_torchs_level_with_the_cpus_bf16_extensions():
    flags, isa = runtime._cpu_flags(), torch.backends.cpu.get_cpu_capability()
    cpuinfo = {line for line in open("/proc/cpuinfo") if line.startswith("flags")}
    assert flags == set(next(iter(cpuinfo)).partition(":")[2].split())
    if not isa.startswith("AVX512"):
        assert cpu_capability() == isa and not cpu_has_native_bf16()
    elif "amx_bf16" in flags:
        assert cpu_capability() == "AMX" and cpu_has_native_bf16()
    elif "avx512_bf16" in flags:
        assert cpu_capability() == "AVX512-BF16" and cpu_has_native_bf16()
    else:
        assert cpu_capability() == "AVX-512" and not cpu_has_native_bf16()


def test_auto_is_fp32_on_the_cpu_and_fp32_is_never_refused():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"


def test_the_matmul_peak_of_one_precision_is_a_physical_number():
    peak = matmul_peak("fp32", torch.device("cpu"), budget_s=0.3)
    assert 1e8 < peak < FP32_CEILING_PER_THREAD * torch.get_num_threads()


@x86
def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_with_its_measured_cost(tmp_path):
    out = tmp_path / "run"
    done = _reasonlab("train", "--config", "cpu-tiny", "--set", "train.precision=bf16", "--out", str(out),
                      env=AVX2_ONLY)
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "this CPU (AVX2) has no bf16 instructions" in err and "GFLOP/s" in err and "train.precision=fp32" in err
    assert not out.exists()


@x86
@pytest.mark.slow
def test_bench_on_an_avx2_cpu_names_it_and_times_only_its_own_precision():
    done = _reasonlab("bench", "--config", "cpu-tiny", "--steps", "1", "--json", env=AVX2_ONLY)
    result = json.loads(done.stdout)
    assert result["cpu"] == "AVX2" and list(result["matmul_peak_flop_s"]) == ["fp32"]
