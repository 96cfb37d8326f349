"""Arms over seeds in one run (``bin/experiment``): arms (what is trained), kstep (K networks' step with a
model axis), group (models trained together), run (epochs, selection, resume), stats (mean ± std, paired
t-test), tables (results.csv, summary.csv/.md), report (report.html), cli."""
