"""Explicit, keyed, whole-batch randomness.

Every random value is a pure function of ``(image key, stream, element counter)``: a
counter-based generator (the SplitMix64 finaliser of ``key + (counter+1)·φ``, the same
construction as SplitMix64's output) computed with int64 tensor ops for the whole batch
on the images' device. int64 multiplication wraps modulo 2⁶⁴ in torch on every device,
and right shifts are masked to be logical, so the random *bits* are identical on CPU and
GPU, whatever the batch size, order or sharding.

The generator argument ``generator=`` of every random degradation may be

* a :class:`KeyedBatch` — one 64-bit key per image. Sweeps use
  ``KeyedBatch.from_ids(seed, image_ids, condition_id)``: a sampled value then depends only
  on ``(seed, image id, condition, stream)``;
* an ``int`` seed — shorthand for a freshly seeded CPU ``torch.Generator`` (below): one key
  drawn from it, image ``i`` of the batch keyed ``mix(key, i)``; the values are computed on the
  images' device, so ``deg(x, generator=0)`` gives the same values on every device;
* one :class:`torch.Generator` — one 64-bit key is drawn from it per call (so successive
  calls differ, as with a stateful generator), then keyed per image position;
* a sequence of ``B`` :class:`torch.Generator` (legacy: one key drawn from each, a loop
  over the batch) or of ``B`` single-image :class:`KeyedBatch` (concatenated);
* ``None`` — fresh random keys (interactive use only).

Streams. Each call site names its ``stream`` (``"gaussian_noise"``, ``"imagenet_c.fog.plasma.3.square"``),
so two draws in one degradation never share values. A draw without a stream takes the
batch's next *automatic* stream (a per-image call counter, like a generator's state), so
code written for stateful generators — draw, draw again — still gets independent values.

Distributions: float32 uniforms take the top 24 bits of a 32-bit half word (two values a
word, through the words' int32 view), float64 ones the top 53 bits of a word; normals are
Box–Muller on the two halves of a word (a cos and a sin value), computed in the output's
precision (CPU and GPU then agree up to the last-ulp rounding of ``log``/``cos``/``sin``);
:func:`poisson` is
exact: sequential inversion below λ = 10, PTRS rejection above, the exact inverse CDF
(:func:`poisson_quantile`) for the rare leftovers.

Note: these values differ from those of earlier versions (per-image CPU ``torch.Generator``
draws); results stay reproducible, they are just new draws (store schema version 3).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache

import torch

__all__ = [
    "GeneratorLike",
    "KeyedBatch",
    "batch_keys",
    "keyed_seed",
    "keyed_generator",
    "counter_words",
    "poisson_quantile",
    "as_generators",
    "rand",
    "randn",
    "randint",
    "random_bits",
    "poisson",
]

_MASK64 = (1 << 64) - 1


def _i64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    u &= _MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)
_AUTO = _i64(0xD1B54A32D192ED03)  # domain of the automatic (unnamed) streams
_CHILD = _i64(0xAEF17502108EF2D9)  # domain of single-image children


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (a bijection of 64-bit words with full avalanche), int64 in, int64 out."""
    return _mix64_(x.clone())


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """:func:`_mix64` in place (one scratch buffer): ``x ^= x >>> 30; x *= M1; x ^= x >>> 27;
    x *= M2; x ^= x >>> 31``."""
    shifted = torch.empty_like(x)
    for s, m in ((30, _M1), (27, _M2), (31, None)):
        torch.bitwise_right_shift(x, s, out=shifted).bitwise_and_((1 << (64 - s)) - 1)
        x.bitwise_xor_(shifted)
        if m is not None:
            x.mul_(m)
    return x


def _mix64_int(x: int) -> int:
    """:func:`_mix64` on one Python int (same bits)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _i64(x ^ (x >> 31))


def counter_words(stream_keys: torch.Tensor, n: int) -> torch.Tensor:
    """Words ``(K, n)`` int64: row ``i`` is SplitMix64's output sequence from state ``stream_keys[i]``
    (word ``j`` = ``mix(key + (j+1)·0x9E3779B97F4A7C15)``), on the keys' device."""
    counter = torch.arange(1, n + 1, dtype=torch.int64, device=stream_keys.device).mul_(_GOLDEN)
    return _mix64_(counter.view(1, n) + stream_keys.view(-1, 1))


def keyed_seed(*keys: object) -> int:
    """A 63-bit seed from any keys (stable across runs, platforms and Python versions)."""
    text = "\x1f".join(repr(k) if not isinstance(k, str) else k for k in keys)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


@lru_cache(maxsize=4096)
def _stream_id(stream: str) -> int:
    return _i64(keyed_seed("weakspot.stream", stream))


def keyed_generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded from ``keys`` (for CPU-side choices such as permutations)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(keyed_seed(*keys))
    return g


class KeyedBatch:
    """Keys of a batch: one 64-bit key per image, accepted wherever ``generator=`` is.

    Draws are whole-batch tensor ops; image ``i``'s values depend only on ``keys[i]``, the
    stream and the element counter. Indexing:

    * ``kb[i]`` (an int) and iteration give single-image children with their own keys
      (forked from the image's key), for code that loops over per-image generators;
      iterating advances the batch's automatic stream, so two loops get different children;
    * ``kb.select(index)`` (a tensor / list of positions) keeps the same keys: a sub-batch
      whose draws equal those the images would get in the full batch;
    * ``kb.fold(*labels)`` derives new keys (e.g. per step of a composition).

    Example:
        >>> kb = KeyedBatch.from_ids(0, ["a.png", "b.png"], "imagenet_c.fog.sev=3")
        >>> rand((2, 3), kb, stream="demo").shape
        torch.Size([2, 3])
    """

    def __init__(self, keys: torch.Tensor | Sequence[int], calls: torch.Tensor | None = None):
        keys = torch.as_tensor(keys, dtype=torch.int64).reshape(-1).cpu()
        self.keys = keys
        self.calls = (
            torch.zeros_like(keys) if calls is None else calls.to(torch.int64).reshape(-1).cpu().clone()
        )

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_ids(cls, seed: int, image_ids: Sequence[object], condition_id: str) -> KeyedBatch:
        """Keys ``keyed_seed(seed, image_id, condition_id)`` — what a sweep uses."""
        return cls([_i64(keyed_seed(int(seed), str(i), condition_id)) for i in image_ids])

    @classmethod
    def from_seed(cls, seed: int, batch: int) -> KeyedBatch:
        """Keys for an interactive int seed: the first key of ``torch.Generator().manual_seed(seed)``
        (so an int is shorthand for a freshly seeded generator, as before), then image ``i`` of
        the batch gets ``mix(key + (i+1)·φ)``."""
        return cls.from_key(_key_from_torch(torch.Generator().manual_seed(int(seed))), batch)

    @classmethod
    def from_key(cls, key: int, batch: int) -> KeyedBatch:
        """Keys ``mix(key + (i+1)·φ)`` for the batch positions ``i``."""
        return cls(_mix64(_i64(key) + (torch.arange(batch, dtype=torch.int64) + 1) * _GOLDEN))

    @classmethod
    def cat(cls, parts: Sequence[KeyedBatch]) -> KeyedBatch:
        return cls(torch.cat([p.keys for p in parts]), torch.cat([p.calls for p in parts]))

    # -- sequence protocol ----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.keys.numel())

    def __getitem__(self, index):
        if isinstance(index, int):
            i = index % len(self)
            child = _mix64(self.keys[i : i + 1] ^ _mix64(self.calls[i : i + 1] + _CHILD))
            return KeyedBatch(child)
        return self.select(index)

    def __iter__(self):
        children = [self[i] for i in range(len(self))]
        self.calls += 1
        return iter(children)

    def __repr__(self) -> str:
        return f"KeyedBatch({len(self)} keys)"

    def select(self, index) -> KeyedBatch:
        """The sub-batch at ``index`` (positions), with the same keys and stream state."""
        if isinstance(index, slice):
            return KeyedBatch(self.keys[index], self.calls[index])
        idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1).cpu()
        return KeyedBatch(self.keys.index_select(0, idx), self.calls.index_select(0, idx))

    def fold(self, *labels: object) -> KeyedBatch:
        """New keys ``mix(key ^ id(labels))`` (same stream state): an independent family."""
        return KeyedBatch(_mix64(self.keys ^ _i64(keyed_seed("weakspot.fold", *labels))), self.calls)

    # -- drawing ----------------------------------------------------------------------------
    def stream_keys(self, stream: str | None, device=None) -> torch.Tensor:
        """Per-image int64 keys ``(B,)`` of ``stream`` on ``device`` (``None``: the next automatic stream)."""
        if stream is None:
            sk = _mix64(self.keys ^ _mix64(self.calls + _AUTO))
            self.calls += 1
        else:
            sk = _mix64(self.keys ^ _stream_id(str(stream)))
        return sk.to(device)

    def rows_per(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """``(images, elements per image)`` of a draw of ``shape`` from these keys."""
        b = len(self)
        if b == 1 and (len(shape) == 0 or shape[0] != 1):
            return 1, math.prod(shape)
        if len(shape) == 0 or shape[0] != b:
            from weakspot.errors import InvalidParameterError

            raise InvalidParameterError(
                "generator", f"{b} keys", f"one key per image: the draw's batch is {shape[0] if shape else 0}"
            )
        return b, math.prod(shape[1:])

    def bits(
        self, shape: Sequence[int], stream: str | None = None, device=None, halves: bool = False
    ) -> torch.Tensor:
        """Random int64 words of ``shape``: word ``n`` of image ``i`` is ``mix(stream_key[i] + (n+1)·φ)``.

        ``halves``: 32-bit values instead (in int64, ``0 … 2³²−1``) from ``W = ⌈n/2⌉`` words per
        image — half the hashing: elements ``2j`` and ``2j + 1`` are the low and high halves of
        word ``j`` (the words' int32 view on a little-endian device: CPUs and GPUs alike).
        ``shape[0]`` must be the batch size; a single-image batch also accepts any shape
        (all its elements are that image's).
        """
        shape = tuple(int(s) for s in shape)
        rows, per = self.rows_per(shape)
        if not halves:
            return counter_words(self.stream_keys(stream, device).view(rows), per).view(shape)
        words = self.half_words(shape, stream, device)
        halves_ = words.view(torch.int32).to(torch.int64).bitwise_and_(0xFFFFFFFF)
        return halves_[:, :per].contiguous().view(shape)

    def half_words(self, shape: Sequence[int], stream: str | None = None, device=None) -> torch.Tensor:
        """The ``(images, ⌈n/2⌉)`` words whose halves give ``n`` 32-bit values per image (see :meth:`bits`)."""
        rows, per = self.rows_per(tuple(int(s) for s in shape))
        return counter_words(self.stream_keys(stream, device).view(rows), -(-per // 2))


GeneratorLike = int | torch.Generator | KeyedBatch | Sequence[torch.Generator] | Sequence[KeyedBatch] | None


_GENERATOR_KINDS = (
    "None, an int seed, a torch.Generator, KeyedBatch keys, or a list of one torch.Generator "
    "(or single-image KeyedBatch) per image"
)


def _key_from_torch(g: torch.Generator) -> int:
    word = torch.empty((), dtype=torch.int64, device=g.device).random_(generator=g)
    return _mix64_int(int(word))


def batch_keys(generator: GeneratorLike, batch: int) -> KeyedBatch:
    """Normalise any ``generator=`` value to a :class:`KeyedBatch` of ``batch`` keys (see the module docs)."""
    if isinstance(generator, KeyedBatch):
        if len(generator) not in (1, batch):
            from weakspot.errors import InvalidParameterError

            raise InvalidParameterError(
                "generator", f"{len(generator)} keys", f"one key per image, exactly {batch} (the batch size)"
            )
        return generator
    if generator is None:
        return KeyedBatch(torch.randint(-(2**63), 2**63 - 1, (batch,), dtype=torch.int64))
    if isinstance(generator, bool):
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError("generator", generator, _GENERATOR_KINDS)
    if isinstance(generator, int):
        return KeyedBatch.from_seed(generator, batch)
    if isinstance(generator, torch.Generator):
        return KeyedBatch.from_key(_key_from_torch(generator), batch)
    gens = _per_image(generator, batch)
    if isinstance(gens, KeyedBatch):
        return gens
    return KeyedBatch([_key_from_torch(g) for g in gens])


def _per_image(generator: object, batch: int) -> KeyedBatch | list[torch.Generator]:
    """A list of per-image generators, length-checked: single-image :class:`KeyedBatch` keys
    joined into one, else the list of :class:`torch.Generator` (anything else is refused)."""
    from weakspot.errors import InvalidParameterError

    if not isinstance(generator, Sequence) or isinstance(generator, str):
        raise InvalidParameterError("generator", generator, _GENERATOR_KINDS)
    gens: list[object] = list(generator)
    if len(gens) != batch:
        raise InvalidParameterError(
            "generator", f"{len(gens)} generators", f"one generator or exactly {batch} (the batch size)"
        )
    keyed = [g for g in gens if isinstance(g, KeyedBatch)]
    if gens and len(keyed) == len(gens):
        return KeyedBatch.cat(keyed)
    torch_gens = [g for g in gens if isinstance(g, torch.Generator)]
    if len(torch_gens) != len(gens):
        kinds = ", ".join(sorted({type(g).__name__ for g in gens}))
        raise InvalidParameterError("generator", f"a list of {kinds}", _GENERATOR_KINDS)
    return torch_gens


def as_generators(
    generator: GeneratorLike, batch: int
) -> KeyedBatch | list[torch.Generator] | torch.Generator:
    """Normalise ``generator`` once for code that threads it through several draws.

    ``None``/``int``/:class:`torch.Generator` → one :class:`torch.Generator` (stateful use: each
    draw takes one key from it; an int's first draw equals the int passed directly); a list → the list (length-checked); a
    :class:`KeyedBatch` (or a list of single-image ones) → a :class:`KeyedBatch`, which also
    iterates and indexes like a list of per-image generators.
    """
    if generator is None:
        g = torch.Generator(device="cpu")
        g.seed()
        return g
    if isinstance(generator, int) and not isinstance(generator, bool):
        g = torch.Generator(device="cpu")
        g.manual_seed(generator)
        return g
    if isinstance(generator, KeyedBatch):
        return batch_keys(generator, batch)
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool):
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError("generator", generator, _GENERATOR_KINDS)
    return _per_image(generator, batch)


def _bits(shape, generator, device, stream, halves: bool = False) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    return batch_keys(generator, shape[0] if shape else 1).bits(shape, stream, device, halves)


def rand(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    device=None,
    dtype=torch.float32,
    stream: str | None = None,
) -> torch.Tensor:
    """Uniform ``[0, 1)`` samples of ``shape`` (first dim = batch), on ``device``.

    24 random bits per float32 value (the top of a 32-bit half word) and 53 for float64 (a
    whole word). ``stream`` names the call site.
    """
    if dtype == torch.float64:
        return _shr(_bits(shape, generator, device, stream), 11).to(torch.float64).mul_(2.0**-53)
    shape = tuple(int(s) for s in shape)
    keys = batch_keys(generator, shape[0] if shape else 1)
    _rows, per = keys.rows_per(shape)
    halves = keys.half_words(shape, stream, device).view(torch.int32)  # (rows, 2W): low, high, low, …
    top24 = torch.bitwise_right_shift(halves, 8).bitwise_and_(0xFFFFFF)  # the top 24 bits of each half
    return top24.to(torch.float32).mul_(2.0**-24)[:, :per].contiguous().view(shape).to(dtype)


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    device=None,
    dtype=torch.float32,
    stream: str | None = None,
) -> torch.Tensor:
    """Standard normal samples of ``shape`` (first dim = batch): Box–Muller on the two 32-bit
    halves of word ``j``: ``r = √(−2 ln u₁)`` from the high half, ``θ = 2π u₂`` from the low
    half, element ``2j`` is ``r·cos θ`` and ``2j + 1`` is ``r·sin θ``. float64 output: computed
    in float64 with 32-bit ``u₁ ∈ (0, 1)`` (|z| ≤ 6.8); otherwise in float32 (5× faster) with
    ``u₁`` on a 24-bit grid (|z| ≤ 5.9, a tail of probability 4·10⁻⁹ cut); CPU and GPU agree up
    to the last-ulp rounding of ``log``/``cos``/``sin``."""
    shape = tuple(int(s) for s in shape)
    keys = batch_keys(generator, shape[0] if shape else 1)
    rows, per = keys.rows_per(shape)
    halves = keys.half_words(shape, stream, device).view(torch.int32)
    w = halves.shape[1] // 2
    low, high = halves.view(rows, w, 2).unbind(-1)
    if dtype == torch.float64:
        work = torch.float64
        u1 = high.to(work).add_(2.0**31 + 0.5).mul_(2.0**-32)  # the unsigned high half, centred
    else:
        work = torch.float32
        u1 = torch.bitwise_right_shift(high, 8).bitwise_and_(0xFFFFFF).to(work).add_(0.5).mul_(2.0**-24)
    r = u1.log_().mul_(-2.0).sqrt_()
    theta = low.to(work).mul_(2 * math.pi * 2.0**-32)  # the signed low half: θ uniform in [−π, π)
    out = torch.empty((rows, w, 2), dtype=work, device=halves.device)
    torch.mul(torch.cos(theta), r, out=out[..., 0])
    torch.mul(theta.sin_(), r, out=out[..., 1])
    return out.view(rows, 2 * w)[:, :per].contiguous().view(shape).to(dtype)


def random_bits(
    shape: Sequence[int], generator: GeneratorLike = None, device=None, stream: str | None = None
) -> torch.Tensor:
    """int32 words of 31 uniform random bits (bit 31 is 0) of ``shape`` (first dim = batch),
    for callers that cut several small codes from each."""
    return _shr(_bits(shape, generator, device, stream), 33).to(torch.int32)


def randint(
    low: int,
    high: int,
    shape: Sequence[int],
    generator: GeneratorLike = None,
    device=None,
    stream: str | None = None,
) -> torch.Tensor:
    """Integers in ``[low, high)`` of ``shape`` (first dim = batch), int64 (``low + ⌊u·(high−low)⌋``
    with a 53-bit ``u``: bias below ``(high−low)·2⁻⁵³``)."""
    u = rand(shape, generator, device, torch.float64, stream)
    n = int(high) - int(low)
    return (u * n).floor_().to(torch.int64).clamp_(max=n - 1).add_(int(low))


#: :func:`poisson` corrects its Cornish–Fisher start by at most this many counts each way
#: (measured: the start is never further than 3 from the exact quantile, see tests/test_random.py)
POISSON_CORRECTION_STEPS = 6


def poisson_quantile(rate: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The Poisson quantile ``min{k : P(X ≤ k) ≥ u}`` for rates ``rate`` and ``u ∈ (0, 1)`` (float64).

    A Cornish–Fisher start ``λ + z√λ + (z² − 1)/6`` (``z = Φ⁻¹(u)``) is moved by whole counts
    on the exact CDF (``P(X ≤ k) = Q(k + 1, λ)``, the regularised upper incomplete gamma,
    evaluated once, then stepped with the pmf recurrence ``p(k+1) = p(k)·λ/(k+1)``) a fixed
    number of times each way, so the op count does not depend on the data.
    """
    lam = rate.to(torch.float64)
    u = u.to(torch.float64)
    z = math.sqrt(2.0) * torch.erfinv(2 * u - 1)
    k = torch.floor(lam + z * lam.sqrt() + (z * z - 1) / 6).clamp_(min=0)
    pos = lam > 0
    lam_safe = torch.where(pos, lam, torch.ones_like(lam))
    cdf = torch.special.gammaincc(k + 1, lam_safe)  # P(X ≤ k), the one exact CDF evaluation
    pmf = torch.exp(k * torch.log(lam_safe) - lam_safe - torch.lgamma(k + 1))  # P(X = k)
    for _ in range(POISSON_CORRECTION_STEPS):  # up while P(X ≤ k) < u
        up = cdf < u
        k = k + up.to(k.dtype)
        pmf = torch.where(up, pmf * lam_safe / k.clamp(min=1), pmf)
        cdf = torch.where(up, cdf + pmf, cdf)
    for _ in range(POISSON_CORRECTION_STEPS):  # down while P(X ≤ k − 1) ≥ u
        down = (cdf - pmf >= u) & (k > 0)
        cdf = torch.where(down, cdf - pmf, cdf)
        pmf = torch.where(down, pmf * k / lam_safe, pmf)
        k = k - down.to(k.dtype)
    return torch.where(pos, k, torch.zeros_like(k))


#: :func:`poisson` samples rates below this by sequential inversion, above it by PTRS
POISSON_PTRS_MIN_RATE = 10.0
#: sequential inversion runs this many steps (P(X > 48) < 10⁻¹⁵ for λ < 10; the rare
#: larger values are answered exactly by :func:`poisson_quantile`)
POISSON_INVERSION_STEPS = 48
#: PTRS rounds (acceptance ≥ 0.89 a round for λ ≥ 10): the values still rejected after them,
#: about one in 10⁶, are answered exactly by :func:`poisson_quantile`
POISSON_PTRS_ROUNDS = 6


def _words_at(stream_keys: torch.Tensor, flat: torch.Tensor, per: int) -> torch.Tensor:
    """Counter words (:func:`counter_words`) at flat positions ``flat`` of a ``(rows, per)`` draw only."""
    x = (flat % per + 1).mul_(_GOLDEN).add_(stream_keys.index_select(0, flat // per))
    return _mix64_(x)


def _uniform53(words: torch.Tensor) -> torch.Tensor:
    """``(w >>> 11 + ½)·2⁻⁵³`` in (0, 1), float64."""
    return _shr(words, 11).to(torch.float64).add_(0.5).mul_(2.0**-53)


def poisson(rate: torch.Tensor, generator: GeneratorLike = None, stream: str | None = None) -> torch.Tensor:
    """Poisson samples with mean ``rate`` (first dim = batch), same shape/device/dtype as ``rate``.

    Exact samplers, whole-batch, with a fixed number of ops: rates below
    :data:`POISSON_PTRS_MIN_RATE` by sequential inversion (``k = #{j : F(j) < u}`` over
    :data:`POISSON_INVERSION_STEPS` steps of the pmf recurrence), larger rates by Hörmann's
    PTRS transformed rejection (1993; NumPy's algorithm) over :data:`POISSON_PTRS_ROUNDS`
    rounds, each round's uniforms from its own sub-stream at the value's own counter. The
    rare values left over by either are answered by the exact inverse CDF
    (:func:`poisson_quantile`): of the same uniform past the inversion's last step, of a fresh
    one after the last PTRS round. Not differentiable (``rate`` is detached).
    """
    r = rate.detach()
    shape = tuple(r.shape)
    keys = batch_keys(generator, shape[0] if shape else 1)
    rows, per = keys.rows_per(shape)
    sk = keys.stream_keys(stream, r.device).view(rows)
    sub = {
        name: _mix64(sk ^ _i64(keyed_seed("weakspot.poisson", name)))
        for name in ["inversion", "exact", *(f"ptrs.{j}" for j in range(POISSON_PTRS_ROUNDS))]
    }
    lam = r.reshape(-1).to(torch.float64)
    out = torch.zeros_like(lam)

    # small rates: sequential inversion
    small = ((lam > 0) & (lam < POISSON_PTRS_MIN_RATE)).nonzero().view(-1)
    ls = lam.index_select(0, small)
    u = _uniform53(_words_at(sub["inversion"], small, per))
    pmf = torch.exp(-ls)
    cdf = pmf.clone()
    k = torch.zeros_like(ls)
    for j in range(1, POISSON_INVERSION_STEPS + 1):
        k += cdf < u
        pmf.mul_(ls).div_(j)
        cdf.add_(pmf)
    out.index_copy_(0, small, k)
    # past the last step: the exact quantile of the same u (a fresh uniform would not be
    # conditioned on X > the steps)
    tail = (cdf < u).nonzero().view(-1)
    out.index_copy_(
        0, small.index_select(0, tail), poisson_quantile(ls.index_select(0, tail), u.index_select(0, tail))
    )

    # large rates: PTRS
    pending = (lam >= POISSON_PTRS_MIN_RATE).nonzero().view(-1)
    ll = lam.index_select(0, pending)
    loglam = ll.log()
    b = 2.53 * ll.sqrt() + 0.931
    a = 0.02483 * b - 0.059
    log_invalpha = torch.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    for j in range(POISSON_PTRS_ROUNDS):
        w = _words_at(sub[f"ptrs.{j}"], pending, per)
        uu = _shr(w, 32).to(torch.float64).add_(0.5).mul_(2.0**-32).sub_(0.5)  # U in (−½, ½)
        v = (w & 0xFFFFFFFF).to(torch.float64).add_(0.5).mul_(2.0**-32)  # V in (0, 1)
        us = 0.5 - uu.abs()
        kk = torch.floor((2 * a / us + b) * uu + ll + 0.43)
        ok = (us >= 0.07) & (v <= vr)  # the quick acceptance (most values)
        slow = (~ok).nonzero().view(-1)  # the others take the full test
        s_us, s_v, s_k, s_a, s_b = (t.index_select(0, slow) for t in (us, v, kk, a, b))
        s_ll, s_loglam, s_lia = (t.index_select(0, slow) for t in (ll, loglam, log_invalpha))
        reject = (s_k < 0) | ((s_us < 0.013) & (s_v > s_us))
        lhs = s_v.log() + s_lia - torch.log(s_a / (s_us * s_us) + s_b)
        rhs = s_k * s_loglam - s_ll - torch.lgamma(s_k.clamp(min=0) + 1)
        ok.index_copy_(0, slow, ~reject & (lhs <= rhs))
        out.index_copy_(0, pending, kk)  # the rejected ones are overwritten by a later round
        keep = (~ok).nonzero().view(-1)
        pending, ll, loglam, b, a, log_invalpha, vr = (
            t.index_select(0, keep) for t in (pending, ll, loglam, b, a, log_invalpha, vr)
        )
    # rejected in every round: an exact sample from a fresh uniform (an independent draw from
    # the target, so the mixture stays exact)
    exact = poisson_quantile(lam.index_select(0, pending), _uniform53(_words_at(sub["exact"], pending, per)))
    out.index_copy_(0, pending, exact)
    return out.view(shape).to(rate.dtype)
