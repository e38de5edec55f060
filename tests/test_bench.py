import json

import pytest

from reasonlab.cli import main


def test_bench_reports_throughput_against_the_measured_peak(capsys):
    assert main(["bench", "--config", "cpu-tiny", "--model", "recursive", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "recursive" and result["steps"] == 2
    assert set(result["matmul_peak_flop_s"]) == {"fp32", "bf16"}
    assert result["mfu"] == result["model_flop_s"] / result["matmul_peak_flop_s"]["fp32"]
    assert result["tokens_per_s"] * result["step_ms"]["median"] / 1000 == pytest.approx(result["tokens_per_step"])
    assert main(["bench", "--config", "cpu-tiny", "--steps", "1"]) == 0
    assert "MFU" in capsys.readouterr().out
