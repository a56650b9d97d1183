"""Storage formats for the pruned weight matrices, NumPy in and NumPy out.

Every format turns one layer (a `coo.to_coo` dict plus "bias") into a dict of NumPy
arrays whose total `nbytes` is the format's size, and back. Formats:
  coo16       float32 values + int16 (row, col) per weight: the original repo's layout (int32
              indices in a layer with a dimension over 32,767, counted as such);
  csr8        compressed rows: int32 row pointers, and per weight an 8-bit gap to the previous
              kept column in its row plus its float32 value. A gap above 255 is bridged by
              padding entries (gap byte 0 = "skip 255 columns, no weight"), as Deep Compression
              pads with zero weights;
  csr8-fp16   csr8 with float16 values (lossy: float16 rounding);
  bitmask     one bit per weight position (packed) + the kept values in row-major order;
  shared-Nbit csr8's index layout, with each value replaced by an N-bit code into a per-layer
              codebook of 2^N centroids (k-means, linear initialisation; lossy: the error is at
              most half the gap between neighbouring centroids, plus float16 rounding: the
              codebook and the biases are stored as float16, half the bytes of float32, which
              matters in a small network), codes bit-packed;
  shared-Nbit-huffman
              shared-Nbit with the gap bytes, the codes and the row lengths (entries per row, in
              place of the int32 row pointers) each Huffman-coded (canonical codes: only the code
              length of every symbol is stored), as Deep Compression's last stage.
Biases are float32 (float16 in shared-*) and shapes int32 in every format; both are counted.
"""
import heapq
import json
import re

import numpy as np

from compression.coo import index_dtype
from utils.files import replacing

GAP_BITS = 8
MAX_GAP = 2 ** GAP_BITS - 1  # a gap byte of 0 is padding: skip MAX_GAP columns


def _rows_cols(layer):
    rows, cols = layer["indices"][:, 0].astype(np.int64), layer["indices"][:, 1].astype(np.int64)
    assert np.all(np.diff(rows * layer["shape"][1] + cols) > 0), "indices must be row-major"
    return rows, cols


def _common(layer, floats=np.float32):
    return {"shape": np.asarray(layer["shape"], np.int32), "bias": layer["bias"].astype(floats)}


# --- coo16 ---------------------------------------------------------------------------------------
def _encode_coo16(layer):
    return {**_common(layer), "values": layer["values"].astype(np.float32),
            "indices": layer["indices"].astype(index_dtype(layer["shape"]))}


def _decode_coo16(arrays):
    return {"values": arrays["values"], "indices": arrays["indices"]}


# --- csr8 (and the index layout shared-Nbit builds on) --------------------------------------------
def _encode_gaps(layer):
    """int32 row pointers into a uint8 gap stream (padding entries included)."""
    rows, cols = _rows_cols(layer)
    n_rows = int(layer["shape"][0])
    prev = np.full(len(cols), -1, np.int64)
    same_row = np.zeros(len(rows), bool)  # (not np.r_[False, ...]: that has length 1 if empty)
    same_row[1:] = rows[1:] == rows[:-1]
    prev[same_row] = cols[:-1][same_row[1:]]
    gaps = cols - prev                                   # >= 1
    pads = (gaps - 1) // MAX_GAP                         # padding entries needed before each weight
    gaps = gaps - pads * MAX_GAP
    # Stream: for each weight, `pads` zero bytes and then its gap.
    counts = pads + 1
    stream = np.zeros(int(counts.sum()), np.uint8)
    stream[np.cumsum(counts) - 1] = gaps
    per_row = np.bincount(rows, weights=counts, minlength=n_rows).astype(np.int64)
    return {"row_ptr": np.r_[0, np.cumsum(per_row)].astype(np.int32), "gaps": stream}


def _decode_gaps(arrays):
    """(row, col) indices (`index_dtype`) from row pointers and the gap stream."""
    stream, row_ptr = arrays["gaps"].astype(np.int64), arrays["row_ptr"].astype(np.int64)
    steps = np.where(stream == 0, MAX_GAP, stream)
    rows = np.repeat(np.arange(len(row_ptr) - 1), np.diff(row_ptr))
    position = np.cumsum(steps)
    row_start = np.r_[0, position][row_ptr[:-1]]       # columns consumed before each row
    cols = position - row_start[rows] - 1
    real = stream != 0
    return np.stack([rows[real], cols[real]], 1).astype(index_dtype(arrays["shape"]))


def _encode_csr8(layer, dtype=np.float32):
    return {**_common(layer), **_encode_gaps(layer), "values": layer["values"].astype(dtype)}


def _decode_csr8(arrays):
    return {"values": arrays["values"].astype(np.float32), "indices": _decode_gaps(arrays)}


# --- bitmask --------------------------------------------------------------------------------------
def _encode_bitmask(layer):
    rows, cols = _rows_cols(layer)
    mask = np.zeros(int(np.prod(layer["shape"])), bool)
    mask[rows * int(layer["shape"][1]) + cols] = True
    return {**_common(layer), "mask": np.packbits(mask),
            "values": layer["values"].astype(np.float32)}


def _decode_bitmask(arrays):
    size = int(np.prod(arrays["shape"]))
    flat = np.flatnonzero(np.unpackbits(arrays["mask"], count=size))
    rows, cols = np.divmod(flat, int(arrays["shape"][1]))
    return {"values": arrays["values"],
            "indices": np.stack([rows, cols], 1).astype(index_dtype(arrays["shape"]))}


# --- shared-Nbit ----------------------------------------------------------------------------------
SHARED_FLOATS = np.float16  # the codebooks and biases of the shared-* formats


def as_stored(floats):
    """float32 `floats` rounded as the shared-* formats store codebooks (SHARED_FLOATS), so that
    a codebook chosen or trained on the validation split is the one the file holds."""
    return np.asarray(floats).astype(SHARED_FLOATS).astype(np.float32)


def kmeans_1d(values, k, iterations=50):
    """Lloyd's k-means of 1-D `values` into `k` centroids, linearly initialised over their range.

    Returns (sorted centroids, rounded `as_stored`; uint8 code of every value). Linear
    initialisation keeps centroids on the rare large weights, which density-based initialisation
    would starve (Han et al. 2016, Deep Compression, section 3.1).
    """
    values = values.astype(np.float64)
    if not len(values):  # a layer pruned away entirely
        return np.zeros(k, np.float32), np.zeros(0, np.uint8)
    centroids = np.linspace(values.min(), values.max(), k)
    for _ in range(iterations):
        codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        sums = np.bincount(codes, weights=values, minlength=k)
        counts = np.bincount(codes, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    return as_stored(centroids), codes.astype(np.uint8)


def pack_bits(codes, bits):
    """Pack small unsigned integers into a byte stream, `bits` bits each (big-endian bit order)."""
    per_code = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(per_code.ravel())


def unpack_bits(packed, bits, count):
    flat = np.unpackbits(packed, count=count * bits).reshape(count, bits)
    return np.packbits(np.pad(flat, ((0, 0), (8 - bits, 0))), axis=1).ravel()


def _encode_shared(layer, bits):
    """A layer carrying its own N-bit "codebook" and "codes" (trained quantization:
    deploy/codebooks.py) is stored with them; any other is shared by k-means."""
    if not 1 <= bits <= 8:
        raise ValueError(f"shared-Nbit needs 1 <= N <= 8 bits, got {bits}")
    if len(layer.get("codebook", ())) == 2 ** bits:
        codebook, codes = layer["codebook"].astype(np.float32), layer["codes"].astype(np.uint8)
    else:
        codebook, codes = kmeans_1d(layer["values"], 2 ** bits)
    return {**_common(layer, SHARED_FLOATS), **_encode_gaps(layer),
            "codebook": codebook.astype(SHARED_FLOATS), "codes": pack_bits(codes, bits),
            "bits": np.array([bits], np.uint8)}


def _decode_shared(arrays):
    indices = _decode_gaps(arrays)
    codes = unpack_bits(arrays["codes"], int(arrays["bits"][0]), len(indices))
    return {"values": arrays["codebook"].astype(np.float32)[codes], "indices": indices}


# --- shared-Nbit-huffman -------------------------------------------------------------------------
def huffman_lengths(symbols):
    """Code length of every symbol 0..max(symbols) in a Huffman code of their frequencies
    (0 for absent symbols; 1 if only one symbol occurs)."""
    counts = np.bincount(symbols)
    heap = [(int(c), [s]) for s, c in enumerate(counts) if c]
    heapq.heapify(heap)
    lengths = np.zeros(len(counts), np.uint8)
    if len(heap) == 1:
        lengths[heap[0][1]] = 1
    while len(heap) > 1:  # merge the two rarest groups: each of their symbols gets one bit longer
        (c1, s1), (c2, s2) = heapq.heappop(heap), heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, s1 + s2))
    return lengths


def _canonical_codes(lengths):
    """{symbol: bit string} of the canonical Huffman code with these lengths."""
    codes, code, previous = {}, 0, 0
    for length, symbol in sorted((int(l), s) for s, l in enumerate(lengths) if l):
        code <<= length - previous
        codes[symbol] = format(code, f"0{length}b")
        code, previous = code + 1, length
    return codes


def huffman_encode(symbols):
    """(code lengths, packed bit stream) of a 1-D array of small non-negative integers."""
    lengths = huffman_lengths(symbols)
    codes = _canonical_codes(lengths)
    bits = "".join(codes[s] for s in symbols.tolist())
    return lengths, np.packbits(np.frombuffer(bits.encode(), np.uint8) - ord("0"))


def huffman_decode(lengths, packed, count):
    """The `count` symbols back from `huffman_encode`'s output."""
    # Why a Python loop: a prefix code must be read bit by bit; ~30k symbols a layer take ms.
    table = {code: symbol for symbol, code in _canonical_codes(lengths).items()}
    out, current = [], ""
    for bit in "".join(map(str, np.unpackbits(packed).tolist())):
        current += bit
        if current in table:
            out.append(table[current])
            current = ""
            if len(out) == count:
                break
    return np.array(out, np.min_scalar_type(max(len(lengths) - 1, 0)))


def _encode_shared_huffman(layer, bits):
    arrays = _encode_shared(layer, bits)
    gaps, codes = arrays.pop("gaps"), unpack_bits(arrays.pop("codes"), bits, len(layer["values"]))
    rows = np.diff(arrays.pop("row_ptr"))
    arrays["gap_lengths"], arrays["gap_stream"] = huffman_encode(gaps)
    arrays["code_lengths"], arrays["code_stream"] = huffman_encode(codes)
    # Row lengths can exceed 255, but their code lengths still fit uint8: a Huffman code of
    # length L needs at least Fibonacci(L + 2) symbols in all, so L < 50 for any layer here.
    arrays["row_lengths"], arrays["row_stream"] = huffman_encode(rows)
    arrays["counts"] = np.array([len(gaps), len(codes), len(rows)], np.int32)
    return arrays


def _decode_shared_huffman(arrays):
    gaps, codes, rows = (huffman_decode(arrays[f"{name}_lengths"], arrays[f"{name}_stream"],
                                        int(count))
                         for name, count in zip(("gap", "code", "row"), arrays["counts"]))
    row_ptr = np.r_[0, np.cumsum(rows, dtype=np.int64)]
    indices = _decode_gaps({"gaps": gaps, "row_ptr": row_ptr, "shape": arrays["shape"]})
    return {"values": arrays["codebook"].astype(np.float32)[codes], "indices": indices}


def _layer_bits(layer):
    """The code width of a layer that carries its own codebook (`deploy/codebooks.choose_bits`:
    each layer's width chosen on the validation split)."""
    if "codebook" not in layer:
        raise ValueError(f"format {MIXED!r} stores each layer with its own codebook; layer "
                         f"{layer.get('name', '?')!r} has none (deploy/codebooks.share_weights)")
    return max(1, int(np.ceil(np.log2(len(layer["codebook"])))))


# --- the registry ---------------------------------------------------------------------------------
FORMATS = ["coo16", "csr8", "csr8-fp16", "bitmask", "shared-4bit", "shared-5bit", "shared-6bit",
           "shared-5bit-huffman"]
MIXED = "shared-mixed-huffman"  # as shared-Nbit-huffman, N each layer's own: needs codebooks


def codec(fmt):
    """(encoder, decoder) of a format name; ValueError naming the valid ones if unknown."""
    if fmt == MIXED:
        return (lambda layer: _encode_shared_huffman(layer, _layer_bits(layer))),  \
            _decode_shared_huffman
    match = re.fullmatch(r"shared-(\d+)bit(-huffman)?", fmt)
    if match and not 1 <= int(match.group(1)) <= 8:
        raise ValueError(f"format {fmt!r}: shared-Nbit needs N in 1..8 (a code is at most one "
                         f"byte), got N={match.group(1)}")
    if match and match.group(2):
        return (lambda layer: _encode_shared_huffman(layer, int(match.group(1))),
                _decode_shared_huffman)
    if match:
        return (lambda layer: _encode_shared(layer, int(match.group(1)))), _decode_shared
    codecs = {"coo16": (_encode_coo16, _decode_coo16), "csr8": (_encode_csr8, _decode_csr8),
              "csr8-fp16": (lambda layer: _encode_csr8(layer, np.float16), _decode_csr8),
              "bitmask": (_encode_bitmask, _decode_bitmask)}
    if fmt not in codecs:
        raise ValueError(f"unknown format {fmt!r}: choose one of {FORMATS + [MIXED]} "
                         f"(shared-Nbit[-huffman]: N=1..8)")
    return codecs[fmt]


def codec_name(fmt):
    """`fmt` if it names a format (`codec` accepts it), else the ValueError saying which do."""
    codec(fmt)
    return fmt


def encode(layers, fmt):
    """Encode every layer; a list of {array name: array} dicts."""
    encoder, _ = codec(fmt)
    return [encoder(layer) for layer in layers]


def decode(encoded, fmt, names, specs=None):
    """Layers (`to_coo` dicts with "name", "bias" and "spec") back from `encode`'s output."""
    _, decoder = codec(fmt)
    return [{"name": name, "shape": arrays["shape"], "bias": arrays["bias"].astype(np.float32),
             "spec": spec,
             **decoder(arrays)}
            for name, spec, arrays in zip(names, specs or [None] * len(names), encoded)]


def nbytes(encoded):
    """Size of an encoded model: the bytes of all its arrays."""
    return sum(a.nbytes for arrays in encoded for a in arrays.values())


# What each array of every format holds, for where the bytes go: the kept weights' positions
# (indices, row pointers, gaps, the bitmask), their values (floats or codes), the codebooks
# (centroids, and the Huffman code lengths that decode a stream), the biases, and the header
# (the layer's shape, the code width, the symbol counts). A new array must be declared here.
PARTS = ("positions", "values", "codebooks", "biases", "header")
ARRAY_PART = {"indices": "positions", "row_ptr": "positions", "gaps": "positions",
              "mask": "positions", "gap_stream": "positions", "row_stream": "positions",
              "values": "values", "codes": "values", "code_stream": "values",
              "codebook": "codebooks", "gap_lengths": "codebooks", "row_lengths": "codebooks",
              "code_lengths": "codebooks", "bias": "biases", "shape": "header",
              "bits": "header", "counts": "header"}


def breakdown(arrays):
    """{part: bytes} of one encoded layer (`encode`'s dicts), every part of PARTS; they sum to
    its `nbytes`."""
    parts = dict.fromkeys(PARTS, 0)
    for key, array in arrays.items():
        parts[ARRAY_PART[key]] += array.nbytes
    return parts


def save(path, layers, fmt):
    """Encode `layers` and write them (uncompressed .npz) atomically; returns the encoded arrays.

    Each layer's name and spec (how it runs: `deploy.sparse_graph.sparse_layers`) are stored
    as text beside the arrays and, like the names, not counted in `nbytes`.
    """
    encoded = encode(layers, fmt)
    with replacing(path) as tmp:
        np.savez(tmp, format=np.array(fmt), names=np.array([l["name"] for l in layers]),
                 specs=np.array([json.dumps(l.get("spec")) for l in layers]),
                 **{f"{i}/{key}": a for i, arrays in enumerate(encoded)
                    for key, a in arrays.items()})
    return encoded


def load(path):
    """(format, layers) from a file written by `save`."""
    with np.load(path) as f:
        fmt, names = str(f["format"]), [str(n) for n in f["names"]]
        specs = [json.loads(str(s)) for s in f["specs"]] if "specs" in f.files else None
        encoded = [{key.split("/", 1)[1]: f[key] for key in f.files if key.startswith(f"{i}/")}
                   for i in range(len(names))]
    return fmt, decode(encoded, fmt, names, specs)
