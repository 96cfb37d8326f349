"""The sales model: config (settings, presets), data (tensors on the device),
model (network and fast step), loss (MSE + KL, debias weight), metrics
(evaluation, metrics.csv), checkpoint (best.pt / last.pt I/O), loop (epochs,
selection), predict (inference for new pitches), cli (``bin/train``)."""
