"""The served model is checked on import (issue row F6), and import is as safe as direct mode.

``bin/batch import`` refuses a line whose ``response.body.model`` is neither
the run's model nor a dated version of it unless ``--accept-model`` names it;
each record keeps the model; a looping model's reply is refused quickly; the
key is masked out of reply text.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit import batch, make_inputs, records

KEY = "sk-batch-echo-0123456789"


def prepared(tmp_path: Path) -> tuple[Path, list[str]]:
    pitches, goods = make_inputs(tmp_path, 2)
    run = tmp_path / "run"
    p = batch("prepare", "--pitches", str(pitches), "--goods", str(goods), "--out", str(run), "--stages", "entry",
              "--base-url", "http://127.0.0.1:9/v1", key=KEY)
    assert p.returncode == 0, p.stderr
    ids = [json.loads(line)["custom_id"] for line in (run / "batch" / "requests-0001.jsonl").read_text().splitlines()]
    assert len(ids) == 16
    return run, ids


def line(cid: str, model: str, text: str = '{"want_to_enter": 4, "reason": "好"}') -> str:
    body = {"id": "c", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}
    return json.dumps({"id": f"r-{cid}", "custom_id": cid, "response": {"status_code": 200, "body": body},
                       "error": None}, ensure_ascii=False)


def test_import_refuses_another_model_unless_accepted_and_keeps_the_model(tmp_path):
    run, ids = prepared(tmp_path)
    out = tmp_path / "output.jsonl"
    out.write_text("\n".join(
        [line(c, "gpt-4o-mini") for c in ids[:4]]
        + [line(c, "gpt-4o-mini-2024-07-18") for c in ids[4:8]]
        + [line(c, "gpt-4o") for c in ids[8:12]]
        + [line(c, "gpt-4o-mini", "{" * 20_000) for c in ids[12:14]]
        + [line(c, "gpt-4o-mini", f'{{"want_to_enter": 2, "reason": "echo {KEY}"}}') for c in ids[14:]]) + "\n")
    p = batch("import", "--run", str(run), str(out), key=KEY)  # the looping replies do not stall it (kit's timeout)
    assert p.returncode == 1, p.stderr
    assert "4 line(s) of another model not imported (pass --accept-model NAME to import them)" in p.stderr
    assert f"{ids[8]}: gpt-4o (output.jsonl line 9; the run is for gpt-4o-mini)" in p.stderr
    recs = {r["id"]: r for r in records(run)}
    assert set(recs) == set(ids[:8] + ids[12:])  # the other model's lines are not in the run
    assert {recs[c]["model"] for c in ids[:4]} == {"gpt-4o-mini"}
    assert {recs[c]["model"] for c in ids[4:8]} == {"gpt-4o-mini-2024-07-18"}
    assert [recs[c]["status"] for c in ids[12:14]] == ["invalid", "invalid"]
    assert all(recs[c]["status"] == "ok" and "echo ***" in recs[c]["reply"] for c in ids[14:])
    assert KEY.encode() not in b"".join(f.read_bytes() for f in run.glob("*.jsonl"))

    again = tmp_path / "other-model.jsonl"
    again.write_text("\n".join(line(c, "gpt-4o-2024-08-06") for c in ids[8:12]) + "\n")
    p = batch("import", "--run", str(run), str(again), key=KEY)
    assert p.returncode == 1 and "4 line(s) of another model" in p.stderr  # still refused without the flag
    again.write_text(again.read_text() + "\n")  # another file (import skips one it has seen by its hash)
    p = batch("import", "--run", str(run), str(again), "--accept-model", "gpt-4o", key=KEY)
    assert p.returncode == 0, p.stderr
    recs = {r["id"]: r for r in records(run)}
    assert {recs[c]["model"] for c in ids[8:12]} == {"gpt-4o-2024-08-06"}
    assert all(recs[c]["status"] == "ok" for c in ids[8:12])
