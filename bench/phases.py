"""A roofline per phase: decode, the no-gradient pass and the update step, each against this machine's
matmul rate and memory bandwidth measured in the same run.

The model is bench/memory_estimate.py's (Qwen3-0.6B's widths and vocabulary, randomly initialised, float32,
`--layers` blocks) with LoRA on every block, built by bench/passes.py's `trainer_for`; one prompt's group
of random tokens (`passes.group`). Per repeat, in turn, so a busy machine slows all alike:

- decode: `sample_groups` for the group (`--group` rows, one prompt), prefill excluded
  (bench/roofline.py's `decode_rate`: two lengths, difference of times); one step decodes `--group` tokens;
- pass: `Trainer._pass_logprobs` over the group (the pi_old pass: the prompt once, the rows together);
- update: `Trainer._update` over the group (one minibatch, micro-batch 1, the default).

The bandwidth, the matmul rate (better of 1024^3 and 2048^3) and MLX's exp rate come from
bench/roofline.py, taken before and after the phases; each phase is set against the best of each.

What each phase must do is counted from the model's shapes (`Ledger`): every matmul as 2 m k n, LoRA's
two thin products, attention's QK and AV over the causal context (4 x query width x context per position
and layer; MLX computes the masked rectangle, a little more), the output head over the whole vocabulary.
A pass is one forward. The update (varro.engine.train.trainer: Trainer._chunk_grads) runs the prompt forward,
then per row a forward with the chunked head gathering E_p[W] (two vocabulary-wide matmuls: the logits and
softmax(z) W, varro.engine.model.head) and a backward that, for frozen weights, computes only the
activations' gradient (dx = dy W, the forward's FLOPs again) and no weight gradient, skips the first
block's q/k/v (their input, the embedding, depends on nothing that trains) and the head (its gradient is
g (W[target] - E_p[W]), gathered); then the prompt's vjp: its forward again and its backward. LoRA's
backward is 4 x its parameters per position, attention's 2 x its forward. Elementwise work (norms, RoPE,
SiLU, the softmaxes) is not counted as FLOPs; the vocabulary's exp is (`exps`), against MLX's measured
exp rate, because at 151,936 ids it costs as much as the head's matmul here.

Hand check, per completion position and block (D 1024, q 2048, kv 1024, MLP 3072): the linears hold
1024 (2048 + 1024 + 1024) + 2048 x 1024 + 3 x 1024 x 3072 = 15,728,640 weights, 31.46 MFLOP forward;
LoRA rank 8 on all seven 8 x 22,528 = 180,224 (0.36 MFLOP); attention 8,192 FLOP per key; the head
151,936 x 1024 = 155,582,464 weights, 311.2 MFLOP. A 2-block pass at context ~130: about 377 MFLOP a
position, 83% of it the head. `Ledger.check_decode` compares the decode count with roofline.py's.

Minimum bytes: the weights read once per decode step and per pass, twice for the update's blocks (forward,
then backward; its head once); the KV cache (decode: each row's, per step; passes: the prompt's, written
and read); one hidden state per position and block written and read; for the update, the activations the
backward needs (every matmul's input, q/k/v and the MLP's gate and up) written and read once.

`replay` times plain mx.matmuls of exactly the ledger's shapes and counts (weights as (out, in), used
transposed as nn.Linear does): the time the phase's matmuls alone take here, the bar a phase can reach.

    scripts/env python bench/phases.py                        # 2 blocks, 8 x 64 tokens, 2 repeats: ~3 min
    scripts/env python bench/phases.py --layers 28 --tokens 180 --prompt-tokens 190 --repeats 1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
from common import Timer, emit, group_parser, no_eos, param_count
from memory_estimate import Tokenizer
from passes import group, trainer_for
from roofline import bandwidth_gbs, decode_rate, exp_ns, matmul_gflops, model_costs

from varro.engine.model.head import HEAD_CHUNK

BENCH = "phases"
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
KV = LINEARS[1:3]
F32 = 4


@dataclass
class Linear:
    din: int
    dout: int
    lora: int  # adapter parameters, r (din + dout); 0 without adapters


def block_linears(model) -> list[list[Linear]]:
    """Each block's seven linears, in LINEARS order, with their LoRA parameters."""
    blocks = []
    for layer in model.layers:
        row = []
        for name in LINEARS:
            m = layer
            for part in name.split("."):
                m = getattr(m, part)
            base = getattr(m, "linear", m)  # LoRALinear wraps the frozen nn.Linear
            lora = m.lora_a.size + m.lora_b.size if hasattr(m, "lora_a") else 0
            row.append(Linear(base.weight.shape[1], base.weight.shape[0], lora))
        blocks.append(row)
    return blocks


@dataclass
class Ledger:
    """The FLOPs, minimum bytes and vocabulary exps of one phase, and its matmuls as (m, k, n, times,
    transposed, weight) for `replay` (`weight` names the weight, shared by its forward and backward)."""

    model: object
    layers: int | None = None  # count as if the model had this many blocks (all alike); None: its own
    flops: float = 0.0
    bytes: float = 0.0
    exps: float = 0.0
    head_flops: float = 0.0  # the part of `flops` in the output head
    matmuls: list[tuple] = field(default_factory=list)

    def __post_init__(self):
        a = self.model.args
        self.blocks = block_linears(self.model)
        params = param_count(self.model)
        if self.layers is not None:  # every block has the same shapes and adapters: scale per block
            params += (self.layers - len(self.blocks)) * param_count(self.model.layers[0])
            self.blocks = [self.blocks[0]] * self.layers
        self.vocab, self.hidden = a.vocab_size, a.hidden_size
        self.attn = 4 * a.num_attention_heads * a.head_dim  # QK and AV, per key a query sees
        self.kv_width = 2 * a.num_key_value_heads * a.head_dim  # keys and values, per position and block
        self.weights = F32 * params

    def matmul(self, m: int, k: int, n: int, times: int = 1, transposed: bool = True, weight=None) -> None:
        self.flops += 2.0 * m * k * n * times
        self.matmuls.append((m, k, n, times, transposed, weight))

    def forward(self, m: int, keys: float, times: int = 1, kv_only_top: bool = False) -> None:
        """`m` positions through the blocks, seeing `keys` keys in all per block; `kv_only_top`: the top
        block only as far as its keys and values (a prompt's pass: nothing reads the rest)."""
        for i, block in enumerate(self.blocks):
            top = kv_only_top and i == len(self.blocks) - 1
            for name, lin in zip(LINEARS, block):
                if top and name not in KV:
                    continue
                self.matmul(m, lin.din, lin.dout, times, weight=(i, name))
                self.flops += 2.0 * m * lin.lora * times
            if not top:
                self.flops += self.attn * keys * times

    def backward(self, m: int, keys: float, times: int = 1, kv_only_top: bool = False) -> None:
        """The gradient through the frozen blocks: dx = dy W for every linear whose input depends on an
        adapter (all but the first block's q/k/v), LoRA's four thin products, attention's backward."""
        for i, block in enumerate(self.blocks):
            top = kv_only_top and i == len(self.blocks) - 1
            for name, lin in zip(LINEARS, block):
                if top and name not in KV:
                    continue
                if not (i == 0 and name in LINEARS[:3]):
                    self.matmul(m, lin.dout, lin.din, times, transposed=False, weight=(i, name))
                self.flops += 4.0 * m * lin.lora * times
            if not top:
                self.flops += 2 * self.attn * keys * times

    def head(self, m: int, sweeps: int = 1, times: int = 1, chunk: int = HEAD_CHUNK) -> None:
        """The output head over the vocabulary in `chunk` rows: the logits, and with sweeps=2 also
        softmax(z) W (the update's gathered E_p[W]); one exp per id and position."""
        before = self.flops
        for lo in range(0, self.vocab, chunk):
            c = min(chunk, self.vocab - lo)
            self.matmul(m, self.hidden, c, times, weight=("head", lo))
            if sweeps == 2:
                self.matmul(m, c, self.hidden, times, transposed=False, weight=("head", lo))
        self.exps += float(m) * self.vocab * times
        self.head_flops += self.flops - before

    def activations(self, positions: float, saved: bool = False) -> None:
        """One hidden state per position and block written and read; with `saved`, the backward's
        activations too: each linear's input, q/k/v, the MLP's gate and up (written, then read)."""
        per = self.hidden
        if saved:
            q, kv, mlp = self.blocks[0][0].dout, self.kv_width, self.blocks[0][4].dout
            per += 2 * self.hidden + q + mlp + (q + kv) + 2 * mlp
        self.bytes += 2.0 * F32 * per * positions * len(self.blocks)

    def check_decode(self, batch: int, context: int) -> float:
        """This ledger's FLOPs per decoded token / bench/roofline.py's `model_costs` (1.0 when they agree)."""
        return (self.flops / batch) / model_costs(self.model, context)[1]


def causal_keys(start: int, n: int) -> float:
    """Keys seen in all by n positions after `start` earlier ones (causal): sum of start + 1 .. start + n."""
    return n * start + n * (n + 1) / 2


def decode_ledger(model, rows: int, context: int, layers: int | None = None) -> Ledger:
    """One batched decode step: `rows` tokens at `context`, the weights read once, each row's KV cache."""
    led = Ledger(model, layers)
    led.forward(rows, rows * context)
    led.head(rows, chunk=led.vocab)  # mlx-lm's head: the whole vocabulary in one product
    led.bytes += led.weights + F32 * rows * context * led.kv_width * len(led.blocks)
    return led


def prompt_forward(led: Ledger, head: int, times: int = 1) -> None:
    led.forward(head, causal_keys(0, head), times, kv_only_top=True)


def pass_ledger(model, rows: int, prompt: int, tokens: int, layers: int | None = None) -> Ledger:
    """Trainer._pass_logprobs over one prompt's rows: the prompt once, the rows through blocks and head."""
    led, head = Ledger(model, layers), prompt - 1
    prompt_forward(led, head)
    led.forward(rows * tokens, rows * causal_keys(head, tokens))
    led.head(rows * tokens)
    led.bytes += led.weights + 2.0 * F32 * head * led.kv_width * len(led.blocks)
    led.activations(head + rows * tokens)
    return led


def update_ledger(model, rows: int, prompt: int, tokens: int, layers: int | None = None) -> Ledger:
    """Trainer._update over one prompt's rows at micro-batch 1 (see the module docstring)."""
    led, head = Ledger(model, layers), prompt - 1
    prompt_forward(led, head, times=2)  # prefix_kv, then again inside the prompt's vjp
    led.backward(head, causal_keys(0, head), kv_only_top=True)
    keys = causal_keys(head, tokens)
    led.forward(tokens, keys, times=rows)
    led.head(tokens, sweeps=2, times=rows)
    led.backward(tokens, keys, times=rows)
    head_bytes = F32 * led.vocab * led.hidden
    led.bytes += 2 * led.weights - head_bytes + 2.0 * F32 * head * led.kv_width * len(led.blocks)
    led.activations(head + rows * tokens, saved=True)
    return led


def replay(led: Ledger) -> float:
    """Seconds of plain float32 mx.matmuls of the ledger's shapes and counts, one eval each; one weight
    array per named weight, stored (out, in) as nn.Linear's."""
    mx.random.seed(1)
    arrays, weights = [], {}
    for m, k, n, times, transposed, name in led.matmuls:
        w = weights.setdefault(name, mx.random.normal((n, k) if transposed else (k, n)))
        arrays.append((mx.random.normal((m, k)), w, times, transposed))
    mx.eval([a for x, w, _, _ in arrays for a in (x, w)])
    with Timer() as t:
        for x, w, times, transposed in arrays:
            for _ in range(times):
                mx.eval(x @ w.T if transposed else x @ w)
    return t.s


def machine() -> dict[str, float]:
    """Bandwidth (GB/s), the better square matmul rate (GFLOP/s) and exp (ns per element), as roofline.py."""
    return {"bandwidth": bandwidth_gbs(),
            "matmul": max(matmul_gflops(1024, 1024, 1024), matmul_gflops(2048, 2048, 2048)),
            "exp": exp_ns()}


def main() -> None:
    ap = group_parser(__doc__, "rows: the decode batch and the pass's and step's rows", 64,
                      "completion tokens per row in the pass and step")
    ap.add_argument("--short", type=int, default=8, help="decode: the short length")
    ap.add_argument("--long", type=int, default=40, help="decode: the long length")
    ap.add_argument("--real-layers", type=int, default=28, help="the blocks to extrapolate to (Qwen3-0.6B: 28)")
    a = ap.parse_args()

    before = machine()
    trainer = trainer_for(a.layers)
    model = trainer.model
    rows = group(a.group, a.prompt_tokens, a.tokens)
    (batch,) = trainer.prepare([rows])  # one minibatch: advantages and the reference pass
    chunks = batch.chunks
    prompt = rows[0].prompt_tokens
    tok = no_eos(Tokenizer())
    context = a.prompt_tokens + (a.short + a.long) // 2
    ledgers = {"decode": decode_ledger(model, a.group, context),
               "pass": pass_ledger(model, a.group, a.prompt_tokens, a.tokens),
               "update": update_ledger(model, a.group, a.prompt_tokens, a.tokens)}

    def timed(fn) -> float:
        with Timer() as t:
            fn()
        return t.s

    phases = {"decode": lambda: a.group / decode_rate(model, tok, [prompt], a.group, a.short, a.long),
              "pass": lambda: timed(lambda: trainer._pass_logprobs(chunks, chunks)),
              "update": lambda: timed(lambda: trainer._update(batch, 0))}
    phases["pass"](), phases["update"]()  # warm-up (decode_rate warms itself)
    walls = {k: [] for k in phases}
    replays = {k: [] for k in phases}
    for _ in range(a.repeats):
        for name, fn in phases.items():
            walls[name].append(fn())
            replays[name].append(replay(ledgers[name]))
    after = machine()
    best = {k: max(before[k], after[k]) if k != "exp" else min(before[k], after[k]) for k in before}
    for when, m in (("before", before), ("after", after)):
        emit(BENCH, f"memory_bandwidth_{when}", m["bandwidth"], "GB/s", "roofline.bandwidth_gbs")
        emit(BENCH, f"matmul_rate_{when}", m["matmul"], "GFLOP/s", "better of 1024^3 and 2048^3, float32")
        emit(BENCH, f"exp_rate_{when}", m["exp"], "ns/element", "float32 mx.exp")
    emit(BENCH, "decode_count_check", ledgers["decode"].check_decode(a.group, context), "x",
         "this ledger's decode FLOPs per token / roofline.model_costs'")
    setup = (f"{a.layers} blocks of Qwen3-0.6B's widths, vocabulary {model.args.vocab_size}, float32, LoRA on "
             f"every block; group {a.group}, prompt {a.prompt_tokens}, {a.tokens} tokens (decode: context "
             f"{context}, one step = {a.group} tokens); best of {a.repeats}")
    table = report(ledgers, walls, replays, best, setup)
    real = {"decode": decode_ledger(model, a.group, context, a.real_layers),
            "pass": pass_ledger(model, a.group, a.prompt_tokens, a.tokens, a.real_layers),
            "update": update_ledger(model, a.group, a.prompt_tokens, a.tokens, a.real_layers)}
    table += extrapolate(ledgers, real, walls, best, a.real_layers)
    print("\n" + "\n".join(table))


def bound_s(led: Ledger, peak: dict[str, float]) -> tuple[float, str]:
    """(seconds, which) of the roofline bound: the larger of FLOPs at the matmul rate and bytes at bandwidth."""
    t_flops, t_bytes = led.flops / (peak["matmul"] * 1e9), led.bytes / (peak["bandwidth"] * 1e9)
    return (t_flops, "matmul rate") if t_flops >= t_bytes else (t_bytes, "bandwidth")


def extrapolate(ledgers: dict[str, Ledger], real: dict[str, Ledger], walls: dict[str, list[float]],
                peak: dict[str, float], layers: int) -> list[str]:
    """Emit and tabulate each phase at `layers` blocks: counted exactly, its time EXTRAPOLATED as this
    run's fraction of the bound (the head's share of the work falls as blocks are added)."""
    table = [f"\nAt {layers} blocks (counted; the time is an extrapolation at this run's fraction of the bound):\n",
             "| phase | GFLOP | min MB | head's share of FLOPs | bound | bound time | vocabulary exp | "
             "time at this run's x bound |", "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, led in real.items():
        measured_bound, _ = bound_s(ledgers[name], peak)
        fraction = measured_bound / min(walls[name])
        t, which = bound_s(led, peak)
        emit(BENCH, f"{name}.real_{layers}_bound_ms", 1e3 * t, "ms", f"{which}-bound, counted at {layers} blocks")
        emit(BENCH, f"{name}.real_{layers}_extrapolated_ms", 1e3 * t / fraction, "ms",
             f"EXTRAPOLATED: the bound / this run's fraction {fraction:.2f}")
        table.append(f"| {name} | {led.flops / 1e9:.3g} | {led.bytes / 1e6:,.0f} | "
                     f"{led.head_flops / led.flops:.0%} (here {ledgers[name].head_flops / ledgers[name].flops:.0%}) | {which} | {1e3 * t:,.0f} ms | "
                     f"{1e3 * led.exps * peak['exp'] * 1e-9:,.0f} ms | {1e3 * t / fraction:,.0f} ms |")
    return table


def report(ledgers: dict[str, Ledger], walls: dict[str, list[float]], replays: dict[str, list[float]],
           peak: dict[str, float], setup: str) -> list[str]:
    """Emit each phase's figures; returns the markdown table."""
    work = {"decode": "one step", "pass": "whole pass", "update": "whole step"}
    table = ["| phase | wall | GFLOP | min MB | GFLOP/s | x matmul rate | GB/s | x bandwidth | bound | "
             "x bound | matmuls alone | vocabulary exp |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, led in ledgers.items():
        wall, mm = min(walls[name]), min(replays[name])
        gflops, gbs = led.flops / wall / 1e9, led.bytes / wall / 1e9
        t_flops, t_bytes = led.flops / (peak["matmul"] * 1e9), led.bytes / (peak["bandwidth"] * 1e9)
        bound = "matmul rate" if t_flops >= t_bytes else "bandwidth"
        t_exp = led.exps * peak["exp"] * 1e-9
        for fig, value, unit in [("wall_ms", 1e3 * wall, "ms"), ("gflop", led.flops / 1e9, "GFLOP"),
                                 ("min_mb", led.bytes / 1e6, "MB"), ("gflops", gflops, "GFLOP/s"),
                                 ("of_matmul_rate", gflops / peak["matmul"], "x"), ("gbs", gbs, "GB/s"),
                                 ("of_bandwidth", gbs / peak["bandwidth"], "x"),
                                 ("of_bound", max(t_flops, t_bytes) / wall, "x"),
                                 ("matmuls_alone_ms", 1e3 * mm, "ms"), ("exp_floor_ms", 1e3 * t_exp, "ms")]:
            emit(BENCH, f"{name}.{fig}", value, unit, f"{work[name]}, {bound}-bound; {setup}" if fig == "wall_ms"
                 else "")
        table.append(f"| {name} ({work[name]}) | {1e3 * wall:,.0f} ms | {led.flops / 1e9:.3g} | "
                     f"{led.bytes / 1e6:,.0f} | {gflops:.3g} | {gflops / peak['matmul']:.2f} | {gbs:.3g} | "
                     f"{gbs / peak['bandwidth']:.2f} | {bound} | {max(t_flops, t_bytes) / wall:.2f} | "
                     f"{1e3 * mm:,.0f} ms | {1e3 * t_exp:,.0f} ms |")
    table.append(f"\nBandwidth {peak['bandwidth']:.1f} GB/s, matmul rate {peak['matmul']:.0f} GFLOP/s, exp "
                 f"{peak['exp']:.1f} ns/element (best of before and after). {setup}.")
    return table


if __name__ == "__main__":
    main()
