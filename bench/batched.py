"""K runs for the price of one: members that share a model, data and budget train as one batched
model through torch.func (`functional_call` under `vmap`), as in PyTorch's model-ensembling recipe.

`fit_batched(configs, reporters)` returns one RunResult per config, each the run `train.fit(config)`
would have produced; it raises `NotBatchable(reason)` before any training when the configs cannot
be trained as one (the caller then runs them one by one and records the reason).

What makes it exact:
- every member is built exactly as `fit` builds it (seeded from its own seed), and draws its own
  mini-batch order (the same permutations as `TensorBatches` with its seed);
- the loss summed over members has, for each member's weights, exactly that member's gradient
  (vmap keeps members independent); a network that is a plain stack of Linear layers and
  elementwise activations runs as batched matrix products instead of under vmap, the same
  arithmetic at a fraction of the dispatch (bench.stacked);
- the optimizer is torch.optim's own, on the stacked weights: an elementwise update (SGD, BGD,
  Adam, Adagrad, the AdamW family) of a stacked tensor is K independent updates. Members with
  different hyper-parameters (a tuning batch) get one parameter group each, over their own leaf
  tensors, stacked again for every forward pass (`_Grouped`); identical ones (evaluation seeds)
  share one group over stacked leaves (`_Stacked`, fewer optimizer calls);
- evaluation, early stopping and the test split use the model's own code on a template module into
  which the member's weights are copied, so the metrics are computed by the same lines as in `fit`.
- a member that diverges, is pruned or stops early is frozen (its weights restored after every
  step) and masked out of the loss; the others go on.
Dropout draws different masks per member (`randomness="different"`): each member's run is a valid
run with its own seeded randomness, but its dropout masks are not those of the sequential run.

Not elementwise, so never batched (the reason is returned): gradient-norm clipping (the norm is per
member), closure optimizers (L-BFGS), schedule-free optimizers (eval/train weight swap), plateau
schedules, seconds budgets (a clock per run), BatchNorm running statistics, random batch
transforms and augmentation, loss penalties over the module's parameters, models that step their
optimizers themselves (the GAN) or declare `batchable = False`, several devices, mixed precision.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from bench import interrupt
from bench.data import load_dataset
from bench.optim import regularization, torch_optimizers
from bench.registry import OptimizerInfo
from bench.spec.config import RunConfig, direction_of
from bench.stacked import stacked_losses
from bench.train import TRUE_DTYPES, Reporter, RunResult, Status, build_module, resolve_device, seed_everything

# vmap has no batching rule for CPU flash attention yet: it loops over members (correct, slower).
warnings.filterwarnings("ignore", message=r".*not yet implemented the batching rule for aten::_scaled_dot_product")

# torch.optim classes whose update of each coordinate reads only that coordinate's gradient and state
ELEMENTWISE_TORCH = ("SGD", "Adam", "AdamW", "Adagrad", "NAdam", "RAdam", "Adamax", "RMSprop")
BATCH_PRECISIONS = ("32-true", "64-true")
# what a batch's members may differ in: per-member values reach torch.optim through parameter
# groups (optimizer) and LambdaLR's per-group multipliers (schedule); everything else is shared
PER_MEMBER_OWNERS = ("optimizer", "schedule")


SINGLE = "a single run"  # why_not's answer for one config: nothing to batch, nothing to record


class NotBatchable(Exception):
    """The configs cannot train as one batched model; str(err) says why (one line)."""


def elementwise(info: OptimizerInfo) -> bool:
    factory = info.load()
    return info.elementwise or (isinstance(factory, type) and factory.__module__.startswith("torch.optim")
                                and factory.__name__ in ELEMENTWISE_TORCH)


def why_not(configs: Sequence[RunConfig]) -> str | None:
    """The reason these configs cannot train as one batched model, judged from the configs alone
    (None: they may; `fit_batched` still checks the built model)."""
    if len(configs) < 2:
        return SINGLE
    first = configs[0]
    # what no batch can do comes first: it is the reason whatever the members' values
    owners = first.owners()
    if first.world_size > 1:
        return f"{first.world_size} processes (each run trains in its own process group)"
    if first.precision not in BATCH_PRECISIONS:
        return f"precision {first.precision} (batched runs train in full precision)"
    if first.budget.kind == "seconds":
        return "a seconds budget (each run counts its own training clock)"
    if owners.model.own_steps:
        return f"model {owners.model.name} steps its optimizers itself"
    if owners.optimizer.closure:
        return f"optimizer {owners.optimizer.name} re-evaluates the loss in its step (closure)"
    if owners.optimizer.mode_switch:
        return f"optimizer {owners.optimizer.name} swaps weights between train and eval mode"
    if not elementwise(owners.optimizer):
        return f"optimizer {owners.optimizer.name} is not declared elementwise (its update may couple coordinates)"
    for info in owners.regularizers:
        if info.name == "grad_clip":
            return "gradient-norm clipping (the norm is per member)"
    shared = ("model", "dataset", "data_args", "data_seed", "optimizer", "schedule", "regularizers", "epochs",
              "steps", "samples", "seconds", "eval_every", "objective", "evaluate_test", "accelerator", "devices",
              "num_nodes", "strategy", "precision")
    for config in configs[1:]:
        differ = [name for name in shared if getattr(config, name) != getattr(first, name)]
        if differ:
            return f"the runs differ in {differ[0]}"
        a, b = first.owners().split(first.params), config.owners().split(config.params)
        differ = [name for name in ("model", "training", "regularizers") if getattr(a, name) != getattr(b, name)]
        if differ:
            keys = _differing(getattr(a, differ[0]), getattr(b, differ[0]))
            return f"the runs differ in {differ[0]} values ({', '.join(keys) or differ[0]})"
    return None


def _differing(a: Any, b: Any) -> list[str]:
    """The hyper-parameter names whose values differ (regularizers: (info, values) pairs)."""
    if isinstance(a, tuple):
        a, b = ({k: v for _info, kw in side for k, v in kw.items()} for side in (a, b))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class _Loss(nn.Module):
    """The module's training loss as a forward pass, for functional_call."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.m.training_loss(x, y)


class _Stacked:
    """Identical hyper-parameters: one leaf tensor per parameter, members along dim 0."""

    def __init__(self, members: list[dict[str, torch.Tensor]]) -> None:
        self.leaves = {n: torch.stack([m[n].detach() for m in members]).requires_grad_() for n in members[0]}

    def forward_params(self) -> dict[str, torch.Tensor]:
        return self.leaves

    def member(self, k: int) -> dict[str, torch.Tensor]:
        return {n: p[k] for n, p in self.leaves.items()}

    def optimizer(self, info: OptimizerInfo, values: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return torch_optimizers.build(info, list(self.leaves.values()), values[0])


class _Grouped:
    """Per-member hyper-parameters: each member's own leaves (one parameter group each), stacked
    for every forward pass so that gradients flow back to the members' leaves."""

    def __init__(self, members: list[dict[str, torch.Tensor]]) -> None:
        self.leaves = [{n: p.detach().clone().requires_grad_() for n, p in m.items()} for m in members]

    def forward_params(self) -> dict[str, torch.Tensor]:
        return {n: torch.stack([m[n] for m in self.leaves]) for n in self.leaves[0]}

    def member(self, k: int) -> dict[str, torch.Tensor]:
        return self.leaves[k]

    def optimizer(self, info: OptimizerInfo, values: list[dict[str, Any]]) -> torch.optim.Optimizer:
        # each member's optimizer built by the registry's own factory, then its group (and any
        # state the constructor initialised, e.g. Adagrad's accumulator) moved into the first one
        combined = torch_optimizers.build(info, list(self.leaves[0].values()), values[0])
        for leaves, member_values in zip(self.leaves[1:], values[1:]):
            own = torch_optimizers.build(info, list(leaves.values()), member_values)
            combined.add_param_group(own.param_groups[0])
            combined.state.update(own.state)
        return combined


class _Member:
    """What one member accumulates: its config, reporter, regularizers and outcome."""

    def __init__(self, config: RunConfig, reporter: Reporter | None, regularizers: list) -> None:
        self.config, self.reporter, self.regularizers = config, reporter, regularizers
        self.history: list[dict[str, float]] = []
        self.status: Status = "completed"
        self.reason = ""
        self.active = True
        self.frozen: dict[str, torch.Tensor] | None = None
        self.stopper = next((r for r in regularizers if isinstance(r, regularization.EarlyStopping)), None)


def fit_batched(configs: Sequence[RunConfig], reporters: Sequence[Reporter | None]) -> list[RunResult]:
    """Train `configs` as one batched model; one RunResult per config, in order."""
    reason = why_not(configs)
    if reason:
        raise NotBatchable(reason)
    start = time.perf_counter()
    first = configs[0]
    device = resolve_device(first.accelerator)
    owners = first.owners()
    modules, members = [], []
    for config, reporter in zip(configs, reporters):
        seed_everything(config.seed)  # the same RNG stream up to the model's initial weights as fit's
        data = load_dataset(config.dataset, config.data_seed, **config.data_args)
        data = data.to(device, TRUE_DTYPES.get(config.precision))
        routed = owners.split(config.params)
        regularization.check_data(owners.regularizers, data.input_shape, config.dataset)
        regs = [info.load()(**kw) for info, kw in routed.regularizers]
        modules.append(_plain_module(config, data, routed, regs))
        members.append(_Member(config, reporter, regs))
    template = modules[0]
    if (reason := _module_reason(template, data, first)) is not None:
        raise NotBatchable(reason)
    routed0 = owners.split(first.params)
    loss_of = _Loss(template).train()
    names = [n for n, _ in loss_of.named_parameters()]
    per_member = [dict(_Loss(m).named_parameters()) for m in modules]
    identical = all(c.params == first.params for c in configs)
    layout = (_Stacked if identical else _Grouped)(per_member)
    values = [owners.split(c.params).optimizer for c in configs]
    optimizer = layout.optimizer(owners.optimizer, values)
    for reg in members[0].regularizers:
        reg.wrap_optimizer(optimizer)  # decoupled weight decay: shared values, the group's own lr
    batches = _MemberBatches(data.train, owners.optimizer, routed0.training, [c.seed for c in configs], device)
    budget = first.budget
    total_steps = int(budget.value) * math.ceil(batches.n_chunks / batches.accumulate) \
        if budget.kind == "epochs" else 1
    counter = {"steps": 0, "samples": 0}
    progress = None if budget.kind == "epochs" else (lambda: counter[budget.kind] / budget.value)
    multipliers = [owners.schedule.load()(**owners.split(c.params).schedule) for c in configs]
    if any(hasattr(m, "on_epoch_end") for m in multipliers):
        raise NotBatchable(f"schedule {owners.schedule.name} depends on each run's objective (plateau)")
    groups = len(optimizer.param_groups)
    lambdas = [_lambda(multipliers[k if groups > 1 else 0], total_steps, progress) for k in range(groups)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    buffers = dict(loss_of.named_buffers())
    x_dim = None if not batches.shuffle else 0
    # a plain stack of layers runs as batched matrix products (bench.stacked), anything else under vmap
    member_losses = stacked_losses(template, "m.", shared_batch=x_dim is None) or \
        vmap(lambda p, x, y: functional_call(loss_of, (p, buffers), (x, y)), in_dims=(0, x_dim, x_dim),
             randomness="different")
    K = len(configs)
    zero = torch.zeros((), device=device, dtype=TRUE_DTYPES.get(first.precision, torch.float32))
    _probe(member_losses, layout, optimizer, batches)
    seed_everything(first.seed)  # the members' dropout masks: one seeded stream for the batch
    run = _BatchRun(members, template, names, layout, optimizer, data, budget, start)
    with _default_dtype(TRUE_DTYPES.get(first.precision)):  # as Lightning's 64-true forward context
        _train(run, batches, member_losses, scheduler, counter, zero)
    return run.results(counter, device, K)


def _probe(member_losses, layout, optimizer: torch.optim.Optimizer, batches: _MemberBatches) -> None:
    """One forward and backward pass on two examples, gradients discarded: an operation torch.func
    cannot batch (e.g. aten::gru) fails here, before any member has trained."""
    x, y = batches.x[:2], batches.y[:2]
    if batches.shuffle:  # every member's batch is its own: the leading dimension is the member's
        x, y = (t.expand(len(batches.seeds), *t.shape) for t in (x, y))
    try:
        member_losses(layout.forward_params(), x, y).sum().backward()
    except Exception as err:  # noqa: BLE001 - any failure here means: train them one by one
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotBatchable(f"torch.func cannot batch the model ({first})") from None
    finally:
        optimizer.zero_grad(set_to_none=True)


def _train(run: _BatchRun, batches: _MemberBatches, member_losses, scheduler, counter: dict, zero) -> None:
    """The training loop of all members: the steps of `BenchModule.training_step` under `fit`
    (loss x chunk weight / accumulate, a step per `accumulate` chunks and at the epoch's end, then
    the scheduler), the evaluation points of `train._Run` (epochs at epoch ends, other budgets at
    the first step boundary past each mark)."""
    budget, optimizer, layout = run.budget, run.optimizer, run.layout
    active = run.active_mask(zero.device)
    run.clock_zero = time.perf_counter()
    mark, epoch = min(budget.eval_every, budget.value), 0
    every = budget.eval_every
    while not run.stopped:
        epoch_start = time.perf_counter()
        chunks = list(batches.epoch())
        for i, (xb, yb, weight, n) in enumerate(chunks):
            losses = member_losses(layout.forward_params(), xb, yb)
            run.step_losses.append((losses.detach(), n))
            counter["samples"] += n
            scale = weight / batches.accumulate
            total = torch.where(active, losses, zero).sum()  # stopped members are masked out
            (total * scale if scale != 1.0 else total).backward()
            if (i + 1) % batches.accumulate and i + 1 < len(chunks):
                continue
            interrupt.check()  # a signal whose KeyboardInterrupt was lost on its way stops here
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            counter["steps"] += 1  # before the scheduler, which reads it as fit's global_step
            scheduler.step()
            run.restore_frozen()
            if budget.kind == "epochs" or counter[budget.kind] < mark:
                continue
            value = counter[budget.kind]
            end = value >= budget.value
            k = budget.points if end else max(math.floor(value / every + 1e-9), run.point + 1)
            run.evaluate(k, epoch + (i + 1) / len(chunks), counter, None)
            run.stopped |= end
            mark = min((math.floor(value / every + 1e-9) + 1) * every, budget.value)
            active = run.active_mask(zero.device)
            if run.stopped:
                break
        epoch += 1
        if budget.kind != "epochs":
            continue
        if not run.stopped and (epoch % every == 0 or epoch >= budget.value):
            run.evaluate(math.ceil(epoch / every - 1e-9), epoch, counter, time.perf_counter() - epoch_start)
            active = run.active_mask(zero.device)
        run.stopped |= epoch >= budget.value


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None):
    previous = torch.get_default_dtype()
    if dtype is not None and dtype.is_floating_point:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _lambda(multiplier, total_steps: int, progress):
    if progress is not None:
        return lambda step: multiplier(min(progress(), 1.0))
    total = max(total_steps, 1)
    return lambda step: multiplier(min(step / total, 1.0))


def _plain_module(config: RunConfig, data, routed, regs: list) -> nn.Module:
    """The run's module as `fit` builds it (the same construction, so the same initial weights)."""
    from bench.train import _Run

    module = build_module(config, data, routed, _Run(config, None, data.val, regs), total_steps=1)
    # where Lightning would put it: on the data's device, in a true precision's dtype (64-true)
    return module.to(device=data.train.x.device, dtype=TRUE_DTYPES.get(config.precision))


def _module_reason(module: nn.Module, data, config: RunConfig) -> str | None:
    if getattr(module, "batchable", True) is False:
        return f"model {config.model} declares itself not batchable"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in module.modules()):
        return "BatchNorm running statistics (per member)"
    if module.batch_transforms:
        return "random batch transforms or augmentation (per-run randomness outside the model)"
    if module.loss_penalties:
        return "a loss penalty computed over the module's parameters"
    return None


class _MemberBatches:
    """Each member's mini-batches, stacked: the permutations `TensorBatches` draws for each seed
    (mini-batches), or the shared full-set chunks (BGD: no shuffle, one step per epoch)."""

    def __init__(self, train, optimizer: OptimizerInfo, training: dict, seeds: list[int], device) -> None:
        self.x, self.y, self.seeds, self.device = train.x, train.y, seeds, device
        n = len(train)
        if optimizer.full_batch:
            chunk = min(n, training["bgd_max_chunk"])
            self.batch_size, self.shuffle, self.accumulate = chunk, False, math.ceil(n / chunk)
        else:
            self.batch_size, self.shuffle, self.accumulate = max(1, min(training["batch_size"], n)), True, 1
        self.bounds = [(a, min(a + self.batch_size, n)) for a in range(0, n, self.batch_size)]
        self.n_chunks = len(self.bounds)
        self.epoch_no = 0

    def epoch(self):
        n = len(self.x)
        if self.shuffle:
            gens = [torch.Generator().manual_seed(seed * 1_000_003 + self.epoch_no) for seed in self.seeds]
            orders = torch.stack([torch.randperm(n, generator=gen) for gen in gens]).to(self.device)
        self.epoch_no += 1
        for start, stop in self.bounds:
            step_examples = n if self.accumulate > 1 else stop - start
            weight = (stop - start) * self.accumulate / step_examples
            if self.shuffle:
                idx = orders[:, start:stop]
                yield self.x[idx], self.y[idx], weight, stop - start
            else:
                yield self.x[start:stop], self.y[start:stop], weight, stop - start


class _BatchRun:
    """Evaluation points of all members: metrics from the model's own evaluate on the template
    module holding the member's weights; divergence, pruning and early stopping per member."""

    def __init__(self, members: list[_Member], template: nn.Module, names: list[str], layout, optimizer,
                 data, budget, start: float) -> None:
        self.members, self.template, self.layout, self.optimizer = members, template, layout, optimizer
        self.data, self.budget, self.start = data, budget, start
        # _Loss names parameters "m.<name>"; the template's own names drop that prefix
        own = dict(template.named_parameters())
        self.targets = [own[n.removeprefix("m.")] for n in names]
        self.names = names
        self.step_losses: list[tuple[torch.Tensor, int]] = []
        self.point = 0
        self.stopped = False
        self.clock_zero = 0.0

    def load(self, k: int) -> nn.Module:
        """The template module with member k's weights."""
        weights = self.layout.member(k)
        with torch.no_grad():
            for name, target in zip(self.names, self.targets):
                target.copy_(weights[name])
        return self.template

    def freeze(self, member: _Member, k: int) -> None:
        member.active = False
        member.frozen = {n: p.detach().clone() for n, p in self.layout.member(k).items()}

    def restore_frozen(self) -> None:
        """Undo the last update of every frozen member (an elementwise optimizer still moves
        weights with zero gradient, through momentum or its running averages)."""
        for k, member in enumerate(self.members):
            if member.frozen is not None:
                with torch.no_grad():
                    for name, p in self.layout.member(k).items():
                        p.copy_(member.frozen[name])

    def active_mask(self, device) -> torch.Tensor:
        return torch.tensor([m.active for m in self.members], dtype=torch.bool, device=device)

    def pop_train_losses(self) -> list[float]:
        losses, self.step_losses = self.step_losses, []
        if not losses:
            return [0.0] * len(self.members)
        values = torch.stack([loss for loss, _ in losses])  # (chunks, K)
        counts = [n for _, n in losses]
        weights = torch.tensor(counts, dtype=torch.promote_types(values.dtype, torch.float32), device=values.device)
        return ((weights @ values.to(weights.dtype)) / sum(counts)).tolist()

    def evaluate(self, k: int, epochs: float, counter: dict, epoch_time: float | None) -> None:
        started = time.perf_counter()
        train_time = started - self.clock_zero
        self.point = k
        train_losses = self.pop_train_losses()
        for i, member in enumerate(self.members):
            if not member.active:
                continue
            module = self.load(i)
            metrics = {"train/loss": train_losses[i]}
            metrics.update({f"val/{key}": v for key, v in module.evaluate(self.data.val).items()})
            group = self.optimizer.param_groups[i if len(self.optimizer.param_groups) > 1 else 0]
            metrics["lr"] = group["lr"]
            if epoch_time is not None:
                metrics["epoch_time_s"] = epoch_time
            metrics.update(epoch=float(epochs), steps=float(counter["steps"]), samples=float(counter["samples"]),
                           train_time_s=train_time, wall_time_s=time.perf_counter() - self.start)
            member.history.append(metrics)
            where = f"epoch {epochs:g}" if self.budget.kind == "epochs" else f"step {counter['steps']}"
            bad = [key for key in ("train/loss", "val/loss") if not math.isfinite(metrics[key])]
            if bad:
                self.stop(member, i, "diverged", f"{bad[0]}={metrics[bad[0]]} at {where}")
                continue
            reason = member.reporter(k, metrics) if member.reporter is not None else None
            if reason:
                self.stop(member, i, "pruned", reason)
                continue
            value = metrics.get(member.config.objective)
            if member.stopper is not None and (
                    reason := member.stopper.update(len(member.history), value, direction_of(member.config.objective),
                                                    module)):
                self.stop(member, i, "completed", reason)
        if not any(m.active for m in self.members):
            self.stopped = True
        self.clock_zero += time.perf_counter() - started

    def stop(self, member: _Member, k: int, status: Status, reason: str) -> None:
        member.status, member.reason = status, reason
        self.freeze(member, k)

    def results(self, counter: dict, device, K: int) -> list[RunResult]:
        out = []
        wall = time.perf_counter() - self.start
        for i, member in enumerate(self.members):
            config, b = member.config, self.budget
            final = dict(member.history[-1]) if member.history else {}
            extra: dict = {"budget": f"{b.kind}={b.value:g}", "eval_every": b.eval_every, "world_size": 1,
                           "strategy": config.strategy, "precision": config.precision, "batched": K}
            if not config.owners().optimizer.full_batch:
                extra.update(effective_batch_size=config.params["batch_size"], lr_scaling="none (global batch fixed)")
            module = self.load(i)
            if member.stopper is not None and member.status != "diverged" and (best := member.stopper.restore(module)):
                final.update({k: v for k, v in member.history[best - 1].items() if k.startswith(("val/", "train/"))})
                final["best_epoch"] = float(best)
                extra.update(best_epoch=best, early_stopped=member.stopper.stopped_epoch is not None)
            if config.evaluate_test and member.status != "diverged":
                final.update({f"test/{k}": v for k, v in module.evaluate(self.data.test).items()})
            value = final.get(config.objective) if member.status != "diverged" else None
            last = member.history[-1] if member.history else {}
            out.append(RunResult(
                status=member.status, reason=member.reason, history=member.history, final=final,
                epochs=last.get("epoch", 0.0), steps=int(last.get("steps", counter["steps"])),
                samples=int(last.get("samples", counter["samples"])), train_time_s=last.get("train_time_s", 0.0),
                wall_time_s=wall, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                objective=value if value is not None and math.isfinite(value) else None, extra=extra,
            ))
        return out
