"""``bin/report``: pictures of a trained model and a scoring run, in one HTML file.

gather (MODEL_DIR, RUN_DIR and the training data -> plain numbers), plots
(numbers -> matplotlib figures, Agg, no pyplot state), tables (numbers ->
rows of text), sections (a table and its captioned figures, for the models
and for a run), page (figures and tables -> one self-contained HTML file with
the PNGs also written beside it), cli (``bin/report``).
"""
