import numpy as np
import pytest

from digital_twin.microservices import TraceError, build_load_curve, load_trace
from digital_twin.microservices.traces import (WORLDCUP98_HELDOUT_DAYS, WORLDCUP98_TRAIN_DAYS, load_azure_llm,
                                               load_huawei_requests, load_huawei_table, load_worldcup98)


def test_worldcup98_subset_and_split():
    trace = load_worldcup98()
    assert len(trace.counts) == 16 * 1440 and trace.filled_minutes == 0
    assert np.all(np.diff(trace.minutes.astype(np.int64)) == 1)
    assert (trace.split_of_minute == "train").sum() == len(WORLDCUP98_TRAIN_DAYS) * 1440
    assert (trace.split_of_minute == "heldout").sum() == len(WORLDCUP98_HELDOUT_DAYS) * 1440
    day = trace.select(day="1998-06-30")
    # First row of that day in the source file: "1998-06-30 00:00:00,...".
    assert len(day.counts) == 1440 and str(day.minutes[0]) == "1998-06-30T00:00"
    assert set(day.split_of_minute) == {"heldout"}


def test_load_curve_scaling_rule(boutique):
    trace = load_worldcup98()
    curve = build_load_curve(trace, boutique, trace.select(split="train"), step_seconds=15, peak_utilisation=0.5)
    # The train split's 99th-percentile minute maps to 0.5 x entry capacity at max replicas.
    assert np.percentile(curve.rates, 99) == pytest.approx(0.5 * boutique.entry_capacity(), rel=1e-3)  # percentile interpolation on 4x repeated minutes
    assert len(curve) == len(trace.select(split="train").counts) * 4
    held = build_load_curve(trace, boutique, trace.select(day="1998-06-29"), peak_utilisation=0.5)
    assert held.scale == curve.scale and len(held) == 1440 * 4


def test_huawei_and_azure_loaders():
    calls = load_huawei_table("request_call")
    assert calls.values.shape == (1440, 12)
    total = load_huawei_requests()
    assert len(total.counts) == 1440 and (total.split_of_minute == "heldout").sum() == 6 * 60
    one = load_huawei_requests(97)
    np.testing.assert_allclose(one.counts, calls.column(97))
    conv = load_azure_llm("conv")
    assert 50 <= len(conv.counts) <= 60 and conv.counts.sum() > 15000
    assert load_trace("azure_llm_code").source == "azure_llm_code"
    with pytest.raises(KeyError, match="available"):
        calls.column(5)


@pytest.mark.parametrize("body, line, field", [
    ("period,count\n1998-06-30 00:00:00,5\n1998-06-30 00:01:00,x\n", 3, "count"),
    ("period,count\n1998-06-30 00:00:00,5\n1998/06/30 00:01,7\n", 3, "period"),
    ("period,count\n1998-06-30 00:00:00,5\n1998-06-30 00:00:00,7\n", 3, "period"),
    ("period,count\n1998-06-30 00:00:00,-5\n", 2, "count"),
    ("period,count\n1998-06-30 00:00:00,5,9\n", 2, "<row>"),
    ("when,count\n1998-06-30 00:00:00,5\n", 1, "<header>"),
])
def test_malformed_worldcup_rows(tmp_path, body, line, field):
    path = tmp_path / "wc.csv"
    path.write_text(body)
    with pytest.raises(TraceError) as err:
        load_worldcup98(path)
    assert err.value.line == line and err.value.field == field
    assert f"{path}:{line}: field '{field}'" in str(err.value)


def test_worldcup_gap_is_interpolated(tmp_path):
    path = tmp_path / "wc.csv"
    path.write_text("period,count\n1998-06-30 00:00:00,10\n1998-06-30 00:03:00,40\n")
    trace = load_worldcup98(path)
    np.testing.assert_allclose(trace.counts, [10, 20, 30, 40])
    assert trace.filled_minutes == 2


def test_malformed_huawei_and_azure(tmp_path):
    (tmp_path / "request_call.csv").write_text("day,time,1,2\n0,0,5,\n0,60,5,abc\n")
    with pytest.raises(TraceError, match=r"request_call.csv:3: field '2'"):
        load_huawei_table("request_call", tmp_path)
    (tmp_path / "request_call.csv").write_text("day,time,1\n0,0,5\n0,61,5\n")
    with pytest.raises(TraceError, match=r":3: field 'time'"):
        load_huawei_table("request_call", tmp_path)
    (tmp_path / "AzureLLMInferenceTrace_conv.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\nnot-a-time,1,2\n")
    with pytest.raises(TraceError, match=r":3: field 'TIMESTAMP'"):
        load_azure_llm("conv", tmp_path)
