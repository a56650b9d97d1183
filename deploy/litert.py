"""The deployed network as a LiteRT (TFLite) flatbuffer: what edge devices and low latency run.

With `Optimize.EXPERIMENTAL_SPARSITY`, TensorFlow's converter stores a weight with enough zeros
sparsely (tensorflow/compiler/mlir/lite/transforms/dense_to_sparse.cc): in blocks, 1x4 for float32
and 1x16 for int8 (the layouts of the fully-connected op's sparse kernels), when that keeps most
of its zeros, else element by element ("random sparse") behind a DENSIFY op that hands a dense
kernel the dense matrix. What it did with the MLP (measured): layers pruned in 1x4 blocks ->
1x4 blocks (float32) and 1x16 blocks (int8); unstructured fc1 -> 1x4 blocks with the zeros inside
them, fc2 -> random sparse + DENSIFY; fc3 (17% zeros) dense. So `prune_network.py --block 1x4`
makes the .tflite fast, while any pruned model gets a smaller file. `layer_storage` reads the
flatbuffer back to report what was stored, rather than trusting these rules.

The interpreter is LiteRT's (`ai-edge-litert`), the maintained successor of `tf.lite.Interpreter`.
"""
import os

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from training.evaluate import predict

# Flatbuffer enum values -> names, for the report.
OPS = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
INDEX_VECTORS = {schema.SparseIndexVector.Int32Vector: (schema.Int32Vector, 4),
                 schema.SparseIndexVector.Uint16Vector: (schema.Uint16Vector, 2),
                 schema.SparseIndexVector.Uint8Vector: (schema.Uint8Vector, 1)}
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def convert(model, sparse=True, representative=None):
    """`model` (a Keras model: pixels -> logits) as .tflite bytes: [None, H*W] pixels (float32,
    int8 when quantized) -> float32 logits.

    sparse: store the weights that are sparse enough sparsely (`EXPERIMENTAL_SPARSITY`).
    representative: float32 images; given, the model is quantized to int8 throughout (weights,
      activations and the input, scales calibrated on these images), with float32 logits out.
      Its input is int8 pixels (`TFLiteNetwork.quantize`; for MNIST's, calibrated on [0, 1],
      the raw bytes minus 128): float32 pixels, four bytes each, copied in and then quantized by
      a QUANTIZE op, took 3.1 ms of the shrunk 157-102-102 MLP's 5.1 ms a call at batch 10000,
      and 2.4 of the dense one's 19.8 ms (measured in one process, 7 December).

    LiteRT's block-sparse fully-connected kernels compute wrong outputs when a weight's input
    width is not a multiple of the block's (measured with TF 2.21: a Dense of 157 inputs in
    float32 1x4 blocks is off by 27% of the largest logit, one of 300 inputs in int8 1x16 blocks by
    36%; 156 and 304 are exact). Where the converter chose such blocks, the Dense layers whose
    widths do not fit are converted again reading their input padded with zeros (a PAD op).
    """
    content = _convert(model, sparse, representative)
    width = _misaligned_block(content)
    if width:
        content = _convert(_padded(model, width), sparse, representative)
        if _misaligned_block(content):  # not a Dense layer's: nothing to pad
            raise ValueError(f"the .tflite stores a weight in {width}-wide blocks across an input "
                             f"width that is not a multiple of {width}, which LiteRT's sparse "
                             f"kernels compute wrongly: not converted")
    return content


def _misaligned_block(content):
    """The widest block width of a blocked weight whose input width it does not divide, or 0."""
    blocked = [(int(r["storage"].split("x")[1].split()[0]), r["shape"][-1])  # "1x4 blocks"
               for r in layer_storage(content) if r["storage"].endswith("blocks")]
    return max((width for width, inputs in blocked if inputs % width), default=0)


class _PaddedDense(keras.layers.Dense):
    """A Dense layer that reads its input padded with zeros to a multiple of `multiple` features,
    its kernel padded with zero rows to match: the same outputs, a kernel LiteRT blocks right."""

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def build(self, input_shape):
        width = input_shape[-1]
        super().build((*input_shape[:-1], -(-width // self.multiple) * self.multiple))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: width})

    def call(self, inputs):
        pad = self.kernel.shape[0] - inputs.shape[-1]
        return super().call(keras.ops.pad(inputs, [[0, 0]] * (len(inputs.shape) - 1) + [[0, pad]]))


def _padded(model, multiple):
    """A copy of `model` (Sequential or functional) whose Dense layers of an input width that
    `multiple` does not divide are `_PaddedDense`, with the same weights."""
    pairs = []

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense) and layer.kernel.shape[0] % multiple:
            new = _PaddedDense(multiple, **{**config, "kernel_constraint": None})
        else:
            new = layer.__class__.from_config(config)
        pairs.append((layer, new))
        return new

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer, new in pairs:
        weights = layer.get_weights()
        if isinstance(new, _PaddedDense):
            rows = new.kernel.shape[0] - weights[0].shape[0]
            weights[0] = np.pad(weights[0], [(0, rows), (0, 0)])
        new.set_weights(weights)
    return copy


def _convert(model, sparse, representative):
    """TFLiteConverter's .tflite of `model` (see `convert`)."""
    signature = tf.TensorSpec([None, model.input_shape[-1]], tf.float32, name="pixels")
    logits = tf.function(lambda pixels: model(pixels, training=False))
    # The weights as constants: with variables, int8 calibration fails (READ_VARIABLE).
    frozen = convert_variables_to_constants_v2(logits.get_concrete_function(signature))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if representative is not None:
        converter.optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # One scale per weight matrix, not per output unit: per-unit quantization stores, for the
        # weights and again for the bias, a float32 scale and an int64 zero point per unit (24 KB
        # of the 1x16-pruned MLP's 69 KB int8 file; per-tensor: 44 KB, test accuracy 97.43%
        # against 97.47%). The converter has no public switch for it.
        converter._experimental_disable_per_channel = True
        converter.inference_input_type = tf.int8
    return converter.convert()


def _index_bytes(dim):
    """Bytes of one sparse dimension's segment and index arrays."""
    total = 0
    for kind, table in ((dim.ArraySegmentsType(), dim.ArraySegments()),
                        (dim.ArrayIndicesType(), dim.ArrayIndices())):
        if table is not None and kind in INDEX_VECTORS:
            vector, size = INDEX_VECTORS[kind]
            array = vector()
            array.Init(table.Bytes, table.Pos)
            total += array.ValuesLength() * size
    return total


def layer_storage(content):
    """How each weight of a .tflite model is stored: one dict per op that has a constant weight
    (fully-connected, conv), in graph order, with "op", "shape", "type", "storage" (dense,
    random-sparse, 1x4 / 1x16 blocks, each "+ DENSIFY" when a DENSIFY op rebuilds it dense before
    the op) and "bytes" (values plus sparse indices)."""
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    code = [OPS.get(max(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
                        model.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode()), "CUSTOM")
            for op in ops]
    densified = {op.Outputs(0): op.Inputs(0) for op, name in zip(ops, code) if name == "DENSIFY"}
    rows = []
    for op, name in zip(ops, code):
        if name not in WEIGHT_OPS:
            continue
        index = op.Inputs(1)
        stored = graph.Tensors(densified.get(index, index))
        sparsity = stored.Sparsity()
        values = model.Buffers(stored.Buffer()).DataLength()
        if sparsity is None:
            storage, index_bytes = "dense", 0
        else:
            dims = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
            index_bytes = sum(_index_bytes(d) for d in dims)
            storage = "random-sparse"
            if sparsity.BlockMapLength():  # the block dimensions are the last metadata entries
                block, blocked = [1] * stored.ShapeLength(), sparsity.BlockMapLength()
                for i in range(blocked):
                    block[sparsity.BlockMap(i)] = dims[len(dims) - blocked + i].DenseSize()
                storage = "x".join(map(str, block)) + " blocks"
        if index in densified:
            storage += " + DENSIFY"
        rows.append(dict(op=name, shape=[int(n) for n in graph.Tensors(index).ShapeAsNumpy()],
                         type=TYPES.get(stored.Type(), "?"), storage=storage,
                         bytes=int(values + index_bytes)))
    return rows


class TFLiteNetwork:
    """A .tflite model in LiteRT's interpreter: pixels -> logits (NumPy) at any batch size,
    float pixels quantized for a file whose input is int8 (`convert`).

    xnnpack: let the default XNNPACK delegate take the ops it can (LiteRT's default); False runs
      TFLite's built-in kernels only. The block-sparse models ran equally fast both ways
      (measured). Where XNNPACK cannot prepare a model, it is run without, and `self.xnnpack`
      becomes False.
    threads: interpreter threads (default: every core).
    runtime: "litert", or "tensorflow" for the deprecated `tf.lite.Interpreter` bundled with
      TensorFlow, whose built-in kernels are a different build (the benchmark times both).
    """

    def __init__(self, content, xnnpack=True, threads=None, runtime="litert"):
        self.content, self.xnnpack, self.runtime = content, xnnpack, runtime
        self.threads = threads or len(os.sched_getaffinity(0))
        self._start()

    def _start(self):
        interpreter, resolvers = {
            "litert": (litert.Interpreter, litert.OpResolverType),
            "tensorflow": (tf.lite.Interpreter, tf.lite.experimental.OpResolverType)}[self.runtime]
        self.interpreter = interpreter(
            model_content=self.content, num_threads=self.threads,
            experimental_op_resolver_type=resolvers.AUTO if self.xnnpack else
            resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        pixels = self.interpreter.get_input_details()[0]
        self.input, self.dtype = pixels["index"], pixels["dtype"]
        self.scale, self.zero_point = pixels["quantization"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def quantize(self, pixels):
        """float `pixels` in the file's input type: for an int8 input, round(pixels / scale) + its
        zero point, clipped, as a QUANTIZE op would (ties may round the other way)."""
        pixels = np.asarray(pixels, np.float32)
        if self.dtype == np.float32:
            return pixels
        limits = np.iinfo(self.dtype)
        return np.clip(np.round(pixels / self.scale) + self.zero_point, limits.min,
                       limits.max).astype(self.dtype)

    def _run(self, pixels):
        if len(pixels) != self.batch:  # the interpreter's shapes are fixed until resized
            self.interpreter.resize_tensor_input(self.input, pixels.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input, pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)

    def __call__(self, pixels):
        """Logits of `pixels`: float ones, or already in the file's input type (`quantize`).
        Integers of another type are refused: raw uint8 bytes would be read as values up to 255
        where the network was trained on its scaled pixels."""
        pixels = np.asarray(pixels)
        if pixels.dtype != self.dtype:
            if not np.issubdtype(pixels.dtype, np.floating):
                raise TypeError(f"pixels of type {pixels.dtype}: this .tflite reads "
                                f"{np.dtype(self.dtype).name} pixels; give float ones, scaled as "
                                f"in training, or {np.dtype(self.dtype).name} ones (`quantize`)")
            pixels = self.quantize(pixels)
        try:
            return self._run(pixels)
        except RuntimeError:
            if not self.xnnpack:
                raise
            # XNNPACK (LiteRT 2.3) fails to prepare some models (seen: int8 weights behind a
            # DENSIFY op, which unstructured pruning gives; LeNet-5 in --quick); the built-in
            # kernels run them.
            self.xnnpack = False
            self._start()
            return self._run(pixels)


def export(model, out, x_test, y_test, calibration, dense_logits, tolerance, dense_model=None):
    """Write <out>/model.tflite (float32, sparse weights) and model_int8.tflite (calibrated on
    `calibration` images, int8 pixels in); {file: bytes, input (its pixels' type),
    input_quantization ([scale, zero point] of int8 pixels; [0, 0] for float32), layers, xnnpack,
    test_accuracy, max_logit_difference, compression}, each beside `dense_model` (default: the
    same network) converted with dense weights: a shrunk network is compared with the pruned one
    it came from, at full size.

    Raises ValueError, before anything is written, if the float32 file's logits are not
    `dense_logits` (the Keras model's) within `tolerance`.
    """
    dense_model = dense_model or model
    variants = {"model.tflite": convert(model),
                "dense float32": convert(dense_model, sparse=False),
                "model_int8.tflite": convert(model, representative=calibration),
                "dense int8": convert(dense_model, sparse=False, representative=calibration)}
    results = {}
    for name, content in variants.items():
        network = TFLiteNetwork(content)
        logits = predict(network, x_test)
        results[name] = dict(bytes=len(content), input=np.dtype(network.dtype).name,
                             input_quantization=[float(network.scale), int(network.zero_point)],
                             layers=layer_storage(content),
                             xnnpack=network.xnnpack,  # False: XNNPACK could not run it
                             test_accuracy=float(np.mean(logits.argmax(1) == y_test)),
                             max_logit_difference=float(np.max(np.abs(logits - dense_logits))))
    gap = results["model.tflite"]["max_logit_difference"]
    if gap > tolerance:
        raise ValueError(f"model.tflite disagrees with the Keras model (max |logit difference| "
                         f"{gap:.1e} > {tolerance:.0e}): not saved")
    for name, r in results.items():
        r["compression"] = results["dense int8" if "int8" in name else "dense float32"]["bytes"] \
            / r["bytes"]
    for name in ("model.tflite", "model_int8.tflite"):
        (out / name).write_bytes(variants[name])
    return results
