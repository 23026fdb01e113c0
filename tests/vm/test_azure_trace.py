"""Reading the Azure V1 trace: the real files' documented counts, and malformed files reported by file, line and token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digital_twin.vm.azure_trace import AzureV1Trace, TraceFormatError
from tests.vm.conftest import GOOD_D, GOOD_F, write_trace


# ---------------------------------------------------------------------- parsing the real files
def test_real_files_parse_with_documented_counts():
    dev = AzureV1Trace.load("dev")
    test = AzureV1Trace.load("test")
    assert (len(dev.line_time), dev.num_vms) == (1000, 259_159)
    assert (dev.line_time[0], dev.line_time[-1], dev.cut_s) == (1_800_000, 2_099_700, 2_100_000)
    assert (len(test.line_time), test.num_vms) == (1638, 410_276)
    assert test.cut_s == 2_591_400 and test.line_time[0] == 2_100_000
    assert dev.flavour_letters == tuple("abcdefghijklmnop")
    assert dev.flavour_cpu[3] == 16 and dev.flavour_mem_mb[3] == 112 * 1024
    assert dev.flavour_mem_mb[0] == 768.0  # 0.75 GB
    assert len(dev.bucket_lo_s) == 46 and dev.bucket_hi_s[-1] == 1_728_000
    assert dev.bucket_lo_s[13] == 3900 and dev.bucket_hi_s[13] == 7500  # 3900..7200 listed, +300
    assert dev.batch[0] == 0 and dev.batch[-1] == dev.num_batches - 1
    assert np.all(np.diff(dev.batch) >= 0) and np.all(np.diff(dev.time) >= 0)
    assert AzureV1Trace.load("dev") is dev  # cached per (data_dir, split)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_censored_buckets_match_time_to_cut(split):
    # C<k> encodes how long the VM had run at the cut, measured from its line's timestamp: this is
    # what pins a line's bin to [T, T + 300) and the replay window to [first line, cut).
    tr = AzureV1Trace.load(split)
    c = tr.censored
    ran = (tr.cut_s - tr.time[c]).astype(float)
    k = tr.bucket[c]
    assert np.all((tr.bucket_lo_s[k] <= ran) & ((ran < tr.bucket_hi_s[k]) | (k == len(tr.bucket_lo_s) - 1)))


# ---------------------------------------------------------------------- malformed files
def test_good_tiny_trace_parses(tmp_path):
    tr = AzureV1Trace.load("dev", write_trace(tmp_path, GOOD_F, GOOD_D, 600))
    np.testing.assert_array_equal(tr.flavour, [0, 1, 1, 2])
    np.testing.assert_array_equal(tr.batch, [0, 1, 1, 2])
    np.testing.assert_array_equal(tr.bucket, [0, 1, 2, 2])
    np.testing.assert_array_equal(tr.censored, [False, False, True, True])
    np.testing.assert_array_equal(tr.line, [1, 1, 1, 2])
    assert tr.num_batches == 3 and tr.span_s == 600


@pytest.mark.parametrize(
    "flav, dur, bad_file, line, needle",
    [
        (GOOD_F, ["0 U0,|,U1,C2,|", "600 C2,|"], "v1.dev.c600.txt", 2, "timestamp"),
        (GOOD_F, ["0 U0,|,U1,|", "300 C2,|"], "v1.dev.c600.txt", 1, "token count"),
        (GOOD_F, ["0 U0,U1,|,C2,|", "300 C2,|"], "v1.dev.c600.txt", 1, "token 2 'U1'"),
        (GOOD_F, ["0 U0,|,X3,C2,|", "300 C2,|"], "v1.dev.c600.txt", 1, "token 3 'X3'"),
        (GOOD_F, ["0 U0,|,U,C2,|", "300 C2,|"], "v1.dev.c600.txt", 1, "token 3 'U'"),
        (GOOD_F, ["0 U0,|,U1,C2,|", "300 U7,|"], "v1.dev.c600.txt", 2, "token 1 'U7'"),
        (["0 a,|,z,b,|", "300 c,|"], GOOD_D, "v1.dev.txt", 1, "token 3 'z'"),
        (["0 a,|,b,b,|", "3x0 c,|"], GOOD_D, "v1.dev.txt", 2, "timestamp"),
        (["0 a,|,b,b,|", "0 c,|"], GOOD_D, "v1.dev.txt", 2, "does not increase"),
        (GOOD_F, GOOD_D[:1], "v1.dev.c600.txt", 2, "missing"),
        (GOOD_F, ["0 U0,|,U1,,C2,|", "300 C2,|"], "v1.dev.c600.txt", 1, "token count"),
    ],
    ids=["timestamp", "count", "batch", "X3", "U-no-number", "bucket-range", "unknown-flavour",
         "bad-timestamp", "not-increasing", "missing-line", "empty-token"],
)
def test_malformed_files_name_file_line_and_token(tmp_path, flav, dur, bad_file, line, needle):
    with pytest.raises(TraceFormatError) as info:
        AzureV1Trace.load("dev", write_trace(tmp_path, flav, dur, 600))
    err = info.value
    assert Path(err.file).name == bad_file
    assert err.line == line
    text = str(err)
    assert f"{bad_file}:{line}:" in text and needle in text


def test_empty_token_in_both_files_is_reported(tmp_path):
    with pytest.raises(TraceFormatError, match=r"v1\.dev\.txt:1: token 2 '': empty token"):
        AzureV1Trace.load("dev", write_trace(tmp_path, ["0 a,,|"], ["0 U0,,|"], 300))


def test_cut_before_last_bin_is_an_error(tmp_path):
    with pytest.raises(TraceFormatError, match=r"v1\.dev\.c500\.txt:2: timestamp"):
        AzureV1Trace.load("dev", write_trace(tmp_path, GOOD_F, GOOD_D, 500))
