"""The hand-written training step against autograd through the plain nn.Module."""

import copy

import pytest
import torch

from liveroom.train.loss import batch_loss, debias_weight, per_sample_loss, ylogy
from liveroom.train.model import FastStep, SalesNet


def _batch(n_in=40, batch=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_in, generator=g, dtype=dtype)
    reg = torch.randn(batch, 4, generator=g, dtype=dtype) + 5
    shares = [torch.softmax(2 * torch.randn(batch, 8, generator=g, dtype=dtype), 1) for _ in range(2)]
    shares[1][0, 3] = 0.0  # a zero share: 0 log 0 = 0
    y = torch.cat([reg, *shares], 1)
    w = debias_weight(torch.randint(1, 6, (batch, 8), generator=g).to(dtype),
                      torch.randint(1, 6, (batch, 8), generator=g).to(dtype))
    return x, y, w


def _autograd(net, x, y, w, w_kl, masks):
    loss = batch_loss(per_sample_loss(*net(x, masks), y, w_kl), w)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("temperature", [1.0, 500.0])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("w_kl", [1.0, 0.4, 0.0])
def test_fast_step_matches_autograd(temperature, dropout, w_kl):
    torch.manual_seed(1)
    net = SalesNet(40, hidden=32, dropout=dropout, temperature=temperature).double()
    ref = copy.deepcopy(net)
    x, y, w = _batch()
    fast = FastStep(net)
    masks = fast.masks(len(x), dropout, torch.Generator().manual_seed(3))
    masks = None if masks is None else tuple(m.double() for m in masks)
    loss = fast.loss_and_grad(x, y, w, torch.stack([ylogy(y[:, 4:12]), ylogy(y[:, 12:])], 1), w_kl, masks)
    ref_loss, ref_grads = _autograd(ref, x, y, w, w_kl, masks)
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-10)
    for name, p in net.named_parameters():  # views of fast.flat.grad
        grad = fast.flat.grad[p.storage_offset():p.storage_offset() + p.numel()].view_as(p)
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-10, rtol=1e-7, msg=name)


def test_fast_step_float32_within_1e5_and_same_adam_update():
    torch.manual_seed(2)
    net = SalesNet(40, hidden=64, dropout=0.0, temperature=1.0)
    ref = copy.deepcopy(net)
    x, y, w = (t.float() for t in _batch(dtype=torch.float32))
    fast = FastStep(net)
    opt = torch.optim.Adam([fast.flat], lr=1e-2, fused=True)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ly = torch.stack([ylogy(y[:, 4:12]), ylogy(y[:, 12:])], 1)
    for _ in range(3):
        loss = fast.loss_and_grad(x, y, w, ly, 1.0, None)
        opt.step()
        ref_opt.zero_grad()
        ref_loss, _ = _autograd(ref, x, y, w, 1.0, None)
        ref_opt.step()
        assert abs(loss.item() - ref_loss.item()) < 1e-5
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=name)


def test_net_parameters_are_views_of_flat():
    net = SalesNet(8, hidden=16)
    fast = FastStep(net)
    with torch.no_grad():
        fast.flat.zero_()
    assert all((p == 0).all() for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == fast.flat.numel()
    net.load_state_dict({k: torch.ones_like(v) for k, v in net.state_dict().items()})
    assert (fast.flat == 1).all()


def test_eval_forward_shapes_and_shares_sum_to_one():
    net = SalesNet(40, hidden=16, temperature=1.0).eval()
    reg, watch, pay = net(torch.randn(5, 40))
    assert reg.shape == (5, 4) and watch.shape == pay.shape == (5, 8)
    torch.testing.assert_close(watch.sum(1), torch.ones(5))
