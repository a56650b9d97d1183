"""The deploy stage's compression report, as printed and written to compression_report.txt."""
import json

import numpy as np


def report(layers, dense_bytes, dense_disk, formats, quantization, mixed, tflite, deployed,
           saved_disk, sizes=None):
    """The report's lines: the layer sizes before and after shrinking (`sizes`, structured
    pruning), the kept weights per layer, every storage format against the dense float32 bytes
    and where the smallest one's bytes go, trained quantization, LiteRT, and the deployed
    SavedModel."""
    lines = [f"shrunk: layer sizes {sizes['pruned']} -> {sizes['shrunk']}; everything below is "
             f"the shrunk network's, against the unpruned dense model"] if sizes else []
    lines += [f"{'layer':6s} {'kernel':>14s} {'non-zeros':>10s} {'density':>8s}"]
    for l in layers:
        nnz, size = len(l["values"]), int(np.prod(l["shape"]))
        shape = l["spec"].get("kernel_shape", l["shape"])
        lines.append(f"{l['name']:6s} {'x'.join(map(str, shape)):>14s} {nnz:10,d} "
                     f"{nnz / size:8.2%}")
    units = formats[deployed]["units"]
    lines.append("stored without their dead units (nothing reads them, or nothing feeds them: "
                 "deploy/dead_units.py): " + ", ".join(
                     f"{l['name']} {l['shape'][1]} -> {units[l['name']]}" for l in layers))
    lines += [f"dense model: {dense_bytes:,d} bytes (float32 weights + biases); "
              f"SavedModel {dense_disk:,d} bytes on disk",
              f"{'format':20s} {'bytes':>9s} {'compression':>11s} {'file bytes':>10s} "
              f"{'test acc':>9s}"]
    for fmt, r in formats.items():
        lines.append(f"{fmt:20s} {r['bytes']:9,d} {r['compression']:10.2f}x "
                     f"{r['file_bytes']:10,d} {r['test_accuracy']:9.4f}")
    smallest = min(formats, key=lambda f: formats[f]["bytes"])
    lines += where_the_bytes_go(smallest, formats[smallest], layers)
    if quantization:
        q = quantization
        lines.append(f"trained quantization ({q['bits']}-bit codebooks, {q['epochs']} epochs, "
                     f"codes fixed): test accuracy {q['kmeans']['test']:.4f} (k-means) -> "
                     f"{q['trained']['test']:.4f} (trained); validation "
                     f"{q['kmeans']['validation']:.4f} -> {q['trained']['validation']:.4f}: "
                     f"{q['stored']} codebooks stored")
    widths = ", ".join(f"{name} {bits}" for name, bits in mixed["bits"].items())
    lines.append(f"per-layer code widths of shared-mixed-huffman, each the smallest of 2..8 "
                 f"within its share of {mixed['budget']:g} validation accuracy: {widths} bits; "
                 f"validation accuracy {mixed['float']:.4f} (float) -> {mixed['shared']:.4f} "
                 f"(k-means)" + (f" -> {mixed['trained_quantization']['trained']['validation']:.4f}"
                                 f" (trained: {mixed['trained_quantization']['stored']} stored)"
                                 if "trained_quantization" in mixed else ""))
    lines += ["LiteRT (.tflite), run in LiteRT's interpreter on the test set:",
              f"  {'file':18s} {'bytes':>9s} {'vs dense':>9s} {'test acc':>9s} "
              f"{'max |logit diff|':>16s}  weights stored as"]
    for name, r in tflite.items():
        storage = ", ".join(f"{l['storage']} ({l['bytes']:,d} B)" for l in r["layers"])
        lines.append(f"  {name:18s} {r['bytes']:9,d} {r['compression']:8.2f}x "
                     f"{r['test_accuracy']:9.4f} {r['max_logit_difference']:16.1e}  {storage}")
    slow = [name for name, r in tflite.items() if r.get("xnnpack") is False]
    if slow:  # it changes the speed a user gets: said, not only recorded
        lines.append(f"  {', '.join(slow)}: XNNPACK could not prepare it; LiteRT runs it on its "
                     f"reference kernels, slower (benchmarks/bench_deployments.py times it)")
    scale, zero_point = tflite["model_int8.tflite"]["input_quantization"]  # what to feed it
    lines.append(f"  model_int8.tflite reads int8 pixels: round(pixel / {scale:.6g}) + "
                 f"({zero_point}), clipped (deploy.litert.TFLiteNetwork.quantize)")
    float_dense = tflite["dense float32"]["bytes"]
    lines += [f"  model.tflite is {float_dense / tflite['model.tflite']['bytes']:.1f}x and "
              f"model_int8.tflite {float_dense / tflite['model_int8.tflite']['bytes']:.1f}x "
              f"smaller than the dense float32 .tflite",
              f"deployed: {deployed}, SavedModel {saved_disk:,d} bytes on disk "
              f"(dense SavedModel / sparse: {dense_disk / saved_disk:.2f}x)"]
    return lines


def where_the_bytes_go(fmt, stored, layers):
    """The report's lines for format `fmt`'s bytes (`stored`: write_formats' results for it) per
    layer and part, and what is not counted: the names and how each layer runs (its spec),
    which the .npz keeps as text beside the arrays."""
    parts = list(next(iter(stored["parts"].values())))
    lines = [f"where the bytes of {fmt} go:",
             f"  {'layer':6s} " + " ".join(f"{p:>10s}" for p in parts) + f" {'total':>8s}"]
    for name, per_part in stored["parts"].items():
        lines.append(f"  {name:6s} " + " ".join(f"{per_part[p]:10,d}" for p in parts)
                     + f" {sum(per_part.values()):8,d}")
    totals = {p: sum(per_part[p] for per_part in stored["parts"].values()) for p in parts}
    lines.append(f"  {'all':6s} " + " ".join(f"{totals[p]:10,d}" for p in parts)
                 + f" {sum(totals.values()):8,d}")
    text = sum(len(json.dumps(l.get("spec"))) + len(l["name"]) for l in layers)
    lines.append(f"  not counted: each layer's name and how it runs (kernel shape, stride, "
                 f"pooling, activation), {text:,d} bytes as text")
    return lines
