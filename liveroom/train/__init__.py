"""The sales model: data (tensors on the device), model (network and fast
step), loss (MSE + KL, debias weight), loop (epochs, selection, checkpoints),
predict (inference for new pitches), cli (``bin/train``)."""
