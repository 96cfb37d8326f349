"""bin/train and bin/predict read a pitches CSV in another encoding (``--encoding gb18030``).

The same synthetic pitches are written as UTF-8 and re-encoded as GB18030;
what is built from the second, with ``--encoding gb18030``, must be what is
built from the first, and without the flag the GB18030 file is refused in one
line that says what to pass.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kit import one_line_main
from liveroom.cli import collect_main, predict_main, train_main
from liveroom.data.inputs import ENCODING_HELP, check_encoding, load_pitches
from liveroom.data.layout import TEXT_COLUMNS
from liveroom.errors import InputError
from liveroom.synthetic import make_synthetic, write_synthetic
from liveroom.train.config import TrainConfig
from liveroom.train.data import load_training_data, raw_inputs, read_pitches

ROOT = Path(__file__).resolve().parent.parent
HINT = "looks like GB18030/GBK: pass --encoding gb18030"


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """Synthetic pitches (Chinese titles and transcripts) as pitches.csv (UTF-8) and gbk.csv (GB18030)."""
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(200, seed=4))
    text = (d / "pitches.csv").read_text(encoding="utf-8")
    raw = text.encode("gb18030")
    with pytest.raises(UnicodeDecodeError):  # else the file would prove nothing
        raw.decode("utf-8")
    (d / "gbk.csv").write_bytes(raw)
    # a UTF-8 file with a byte-order mark, converted as `iconv -f utf-8 -t gb18030` does: the mark stays
    (d / "gbk-bom.csv").write_bytes(("\ufeff" + text).encode("gb18030"))
    return d


@pytest.fixture(scope="module")
def model(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    assert train_main(_train_args(syn / "pitches.csv", syn, out)) == 0
    return out


def _train_args(pitches, features, out, *extra):
    return ["--pitches", str(pitches), "--features", str(features), "--out", str(out),
            "--epochs", "2", "--hidden", "8", *extra]


def _predict_args(model, pitches, features, out, *extra):
    return ["--model", str(model), "--pitches", str(pitches), "--features", str(features), "--out", str(out), *extra]




@pytest.mark.parametrize("name", ["gbk.csv", "gbk-bom.csv"])
def test_gb18030_copy_loads_the_same_frame_and_dataset(syn, name):
    utf8 = read_pitches(syn / "pitches.csv", with_targets=True)
    gbk = read_pitches(syn / name, with_targets=True, encoding="gb18030")
    pd.testing.assert_frame_equal(gbk, utf8)
    assert np.array_equal(raw_inputs(gbk, None), raw_inputs(utf8, None))
    # the Chinese text itself comes back unchanged
    texts = load_pitches(syn / "pitches.csv", need=TEXT_COLUMNS)
    assert texts["title"].str.contains("[\u4e00-\u9fff]").all()
    pd.testing.assert_frame_equal(load_pitches(syn / name, need=TEXT_COLUMNS, encoding="gb18030"), texts)

    cpu = torch.device("cpu")
    want = load_training_data(TrainConfig(str(syn / "pitches.csv"), "", features=str(syn)), cpu)
    got = load_training_data(TrainConfig(str(syn / name), "", features=str(syn), encoding="gb18030"), cpu)
    assert torch.equal(got.rows, want.rows) and got.bounds == want.bounds and got.names == want.names
    assert torch.equal(got.x_mean, want.x_mean) and torch.equal(got.x_std, want.x_std)


def test_train_with_encoding_fits_the_same_model(syn, model, tmp_path, capsys):
    out = tmp_path / "m"
    capsys.readouterr()
    assert train_main(_train_args(syn / "gbk.csv", syn, out, "--encoding", "gb18030")) == 0
    assert "best epoch" in capsys.readouterr().out
    got = torch.load(out / "best.pt", weights_only=True)
    want = torch.load(model / "best.pt", weights_only=True)
    assert got["config"]["encoding"] == "gb18030" and want["config"]["encoding"] is None
    assert got["model"].keys() == want["model"].keys()
    for k in want["model"]:
        assert torch.equal(got["model"][k], want["model"][k]), k
    assert torch.equal(got["x_mean"], want["x_mean"]) and torch.equal(got["x_std"], want["x_std"])

    # --resume reads the file in the encoding given now, as it reads the paths given now
    assert train_main(_train_args(syn / "gbk.csv", syn, out, "--encoding", "gb18030", "--resume", "--epochs", "3")) == 0
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    err = one_line_main(capsys, train_main, _train_args(syn / "gbk.csv", syn, out, "--resume", "--epochs", "4"))
    assert "gbk.csv line 2: not UTF-8" in err and HINT in err


def test_train_gb18030_without_encoding_is_one_line_with_the_hint(syn, tmp_path):
    out = tmp_path / "m"
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "train"), *_train_args(syn / "gbk.csv", syn, out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("train: error: gbk.csv line 2: not UTF-8 (byte 0x"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert HINT in r.stderr and "iconv -f gb18030 -t utf-8 gbk.csv" in r.stderr
    assert not out.exists()


def test_predict_with_encoding_writes_the_same_forecasts(syn, model, tmp_path):
    want, got = tmp_path / "utf8.csv", tmp_path / "gbk.csv"
    assert predict_main(_predict_args(model, syn / "pitches.csv", syn, want)) == 0
    assert predict_main(_predict_args(model, syn / "gbk.csv", syn, got, "--encoding", "gb18030")) == 0
    assert got.read_bytes() == want.read_bytes()
    assert len(pd.read_csv(got)) == 200


def test_predict_gb18030_without_encoding_is_one_line_with_the_hint(syn, model, tmp_path):
    out = tmp_path / "pred.csv"
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "predict"), *_predict_args(model, syn / "gbk.csv", syn, out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("predict: error: gbk.csv line 2: not UTF-8 (byte 0x"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and HINT in r.stderr
    assert not out.exists()


def test_unknown_encoding_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(InputError) as e:  # what bin/score and bin/collect say for it
        check_encoding("nope")
    nowhere = tmp_path / "nope"  # nothing here exists: reading anything first would fail otherwise
    train = one_line_main(capsys, train_main, _train_args(nowhere / "p.csv", nowhere, tmp_path / "m", "--resume",
                                                      "--encoding", "nope"))
    predict = one_line_main(capsys, predict_main, _predict_args(nowhere, nowhere / "p.csv", nowhere, tmp_path / "p.csv",
                                                            "--encoding", "nope"))
    assert train == f"train: error: {e.value}\n" and predict == f"predict: error: {e.value}\n"
    assert str(e.value) == "--encoding: unknown encoding 'nope' (e.g. utf-8, gb18030)"
    assert not (tmp_path / "m").exists() and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("main", [collect_main, train_main, predict_main])
def test_encoding_help_is_the_same_everywhere(main, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert " ".join(ENCODING_HELP.split()) in " ".join(capsys.readouterr().out.split())
