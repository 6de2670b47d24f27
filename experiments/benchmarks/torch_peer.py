"""The PyTorch peer of the FixMatch train step: WRN-28-2 as in kekmodel/FixMatch-pytorch.

Written for this benchmark after that reference implementation's model and train loop
(its `models/wideresnet.py` and `train.py`), not copied: a pre-activation WRN-28-2
(BatchNorm momentum 0.001 in PyTorch's convention, i.e. 0.999 in Flax's, leaky ReLU 0.1,
the first block activating before its shortcut, Kaiming-normal convolutions, a
Xavier-normal head), and one step: the labeled batch and the weak and strong views of
μB unlabeled images interleaved into one forward pass, CE on the labeled logits plus the
thresholded pseudo-label CE (τ = 0.95, λu = 1), SGD Nesterov (lr 0.03, momentum 0.9,
weight decay 5e-4 except on biases and BatchNorm), a cosine LambdaLR step, and the EMA
(0.999) of the parameters with the buffers copied.

What is not timed: the reference augments on the CPU in DataLoader workers (RandAugment on
PIL images), so the views here are ready tensors; crc_jax's step augments inside the
jitted step, so the comparison counts augmentation against crc_jax only.

Used by experiments/benchmarks/train_step.py when torch is importable.
"""

from __future__ import annotations

import copy
import math
import time


def build(num_classes: int = 10, depth: int = 28, widen: int = 2):
    """A WRN-depth-widen torch module (imports torch here only)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, activate_before_residual=False):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.act = nn.LeakyReLU(0.1, inplace=True)
            self.equal = cin == cout
            self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.activate_before_residual = activate_before_residual

        def forward(self, x):
            if not self.equal and self.activate_before_residual:
                x = self.act(self.bn1(x))
                h = x
            else:
                h = self.act(self.bn1(x))
            h = self.conv2(self.act(self.bn2(self.conv1(h if self.equal else x))))
            return (x if self.equal else self.shortcut(x)) + h

    class WideResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 4) // 6
            widths = [16, 16 * widen, 32 * widen, 64 * widen]
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            blocks = []
            for g in range(3):
                for i in range(n):
                    blocks.append(Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                        (1 if g == 0 else 2) if i == 0 else 1,
                                        activate_before_residual=(g == 0 and i == 0)))
            self.blocks = nn.Sequential(*blocks)
            self.bn = nn.BatchNorm2d(widths[3], momentum=0.001)
            self.act = nn.LeakyReLU(0.1, inplace=True)
            self.fc = nn.Linear(widths[3], num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.data.fill_(1.0)
                    m.bias.data.zero_()
                elif isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    m.bias.data.zero_()

        def forward(self, x):
            h = self.act(self.bn(self.blocks(self.conv1(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))

    return WideResNet()


def interleave(x, size: int):
    s = list(x.shape)
    return x.reshape([-1, size] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def de_interleave(x, size: int):
    s = list(x.shape)
    return x.reshape([size, -1] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


class FixMatchStep:
    """step(x_l, y_l, x_weak, x_strong) -> loss: one FixMatch update of model + EMA."""

    def __init__(self, model, *, mu: int, total_steps: int = 1 << 20, lr: float = 0.03,
                 threshold: float = 0.95, lambda_u: float = 1.0, ema_decay: float = 0.999):
        import torch

        self.torch, self.model, self.mu = torch, model, mu
        self.threshold, self.lambda_u, self.ema_decay = threshold, lambda_u, ema_decay
        no_decay = ("bias", "bn")
        groups = [
            {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
             "weight_decay": 5e-4},
            {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
             "weight_decay": 0.0}]
        self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
        cosine = lambda k: max(0.0, math.cos(math.pi * 7 / 16 * k / total_steps))  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)
        self.ema = copy.deepcopy(model)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        model.train()

    def __call__(self, x_l, y_l, x_weak, x_strong):
        torch, F = self.torch, self.torch.nn.functional
        b, size = x_l.shape[0], 2 * self.mu + 1
        logits = de_interleave(self.model(interleave(torch.cat((x_l, x_weak, x_strong)), size)), size)
        logits_x = logits[:b]
        logits_w, logits_s = logits[b:].chunk(2)
        supervised = F.cross_entropy(logits_x, y_l)
        probs = torch.softmax(logits_w.detach(), dim=-1)
        confidence, pseudo = torch.max(probs, dim=-1)
        mask = confidence.ge(self.threshold).float()
        unlabeled = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()
        loss = supervised + self.lambda_u * unlabeled
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
                ema_p.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)
            for ema_b, b_ in zip(self.ema.buffers(), self.model.buffers()):
                ema_b.copy_(b_)
        self.model.zero_grad()
        return loss.detach()


def time_fixmatch(*, batch_size: int, mu: int, steps: int, num_classes: int = 10,
                  image_size: int = 32, seed: int = 0) -> dict:
    """Warm up one step, then time `steps` FixMatch steps; same keys as train_step.time_step."""
    import torch

    torch.manual_seed(seed)
    shape = (3, image_size, image_size)
    x_l = torch.rand(batch_size, *shape)
    y_l = torch.randint(0, num_classes, (batch_size,))
    x_weak, x_strong = torch.rand(mu * batch_size, *shape), torch.rand(mu * batch_size, *shape)
    step = FixMatchStep(build(num_classes), mu=mu)
    start = time.perf_counter()
    step(x_l, y_l, x_weak, x_strong)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x_l, y_l, x_weak, x_strong)
    loss = float(loss)
    elapsed = time.perf_counter() - start
    images = batch_size * (1 + 2 * mu)
    return {"algorithm": f"pytorch fixmatch (torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads)",
            "images_per_step": images, "compile_s": warmup_s, "step_s": elapsed / steps,
            "steps_per_s": steps / elapsed, "images_per_s": images * steps / elapsed,
            "loss": loss}
