"""``bin/batch``: score through an OpenAI-compatible Batch API into a run directory.

The same run directory as ``bin/score`` (same manifest, same per-stage JSONL
records), so the bulk can go by batch at the provider's batch price and the
stragglers be finished with ``bin/score``; ``bin/collect`` reads either.

::

    bin/batch prepare --pitches P.csv --goods G.json --run RUN_DIR [--model M] [--stages ...]
    bin/batch submit  --run RUN_DIR      # upload + create one batch per prepared file
    bin/batch status  --run RUN_DIR      # one line per file
    bin/batch fetch   --run RUN_DIR [--wait]   # poll, download, import
    bin/batch import  --run RUN_DIR FILE...    # output/error files obtained by hand
    bin/batch import  --run RUN_DIR --id-scheme reference --pitches P.csv --goods G.json FILE...
                                         # the reference's own output files, one per stage
    bin/batch cancel  --run RUN_DIR      # cancel the batches still running
    bin/batch prepare --provider vllm --shards N ...   # no Batch API: N files and the
                                         # `vllm run-batch` command of each (stdout); their
                                         # outputs come back through bin/batch import

Layout under ``RUN_DIR/batch/``:

* ``requests-NNNN.jsonl``: request lines ``{"custom_id", "method": "POST",
  "url", "body"}``, the body being exactly what direct mode sends;
* ``requests-NNNN.meta.jsonl``: per request the record fields direct mode
  keeps beside the reply (stage, index, persona, n_items), read by import;
* ``requests-NNNN.output.jsonl`` / ``.errors.jsonl``: the provider's files;
* ``state.json`` (written atomically): per file its upload id, batch id,
  status and request counts, so ``submit`` never makes a second batch for a
  file and resumes an upload that has no batch yet.

A file whose batch has ended (completed, failed, expired, cancelled) and has
been imported is *finished*: ``prepare`` asks again for whatever of it is
still not ok; an unusable reply's next try is the re-ask conversation (the
bad reply and the reason, as direct mode asks it), up to ``--max-reasks``
per id across rounds. Paths, file limits, the completion window and whether
the file-status call exists come from the ``--provider`` profile
(:mod:`liveroom.async_client.providers`). The requests of files submitted and not yet finished are left
out of ``prepare`` (they are still on their way) unless ``--include-submitted``.

Import matches lines by ``custom_id`` in any order, parses replies with the
stage's parser, as direct mode does, and appends one record per request:
``ok``, ``invalid`` (an unusable reply, re-asked by the next ``prepare``) or
``error`` (the provider's error). Requests already ok are skipped, duplicate
lines and unknown ids are reported, never imported twice. A file counts as
imported for the lines taken from it: one whose lines of another model were
refused is read again by an import with ``--accept-model``, which takes those
and nothing taken before. With ``--id-scheme reference`` the ids are the
reference's (``s{stage}_v{version}_i{row}_c{persona}``), rows mapped through the
run's pitches file.

The rooms: :mod:`.state` (state.json, typed shards, the run directory's lock), :mod:`.prepare`
(request files), :mod:`.runner` (the commands of a provider without a Batch API),
:mod:`.importer` (provider lines -> records), :mod:`.reference`
(the reference's ids -> this run's), :mod:`.flows`
(submit, status, fetch, cancel, import: results, no printing) and :mod:`.cli`
(flags, words, exit status).
"""

from .cli import main

__all__ = ["main"]
